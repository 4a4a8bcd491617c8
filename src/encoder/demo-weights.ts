import { ServiceError } from '../errors.js';
import type { BertArchitecture } from './manifest.js';
import type { Vocabulary } from './vocabulary.js';
import { generateBertWeights, layerPrefix, seededNormal, type BertWeights } from './weights.js';

/**
 * Weights that make a real BERT graph a lexical matcher: its pooled output is an IDF-weighted
 * bag of word directions, so a query's nearest passages are those sharing its rarer words.
 *
 * Each token's embedding is `a·u + b·s` with a² + b² = 1: `u` a random centred direction in the
 * lexical dims, `s` one fixed zero-mean vector in a reserved block of "sink" dims, both of norm
 * √hidden. Such a vector has mean 0 and variance 1, so every LayerNorm (scale 1, shift 0) passes
 * it through unchanged; with the attention and FFN output projections zero, each layer's
 * residual carries each token straight through. The last LayerNorm scales the sink dims by 0,
 * leaving `a·u` per token; mean pooling and normalisation then give Σ a_w·u_w / ‖…‖. The weight
 * `a` grows with the token's IDF and is 0 for specials, punctuation, single characters, the
 * `query`/`passage` prefixes and words found in most passages, whose embeddings then live in the sink alone.
 */

/** Dims reserved for the sink; an even count so the ±1 pattern has mean zero. */
export const SINK_DIMS = 32;

/** Tokens that every query or every passage carries: they say nothing about a match. */
const PREFIX_WORDS = new Set(['query', 'passage']);

/** Words in at least this share of passages carry no weight. */
const COMMON_SHARE = 0.5;

const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;

/** The lexical weight `a` of each token: a clipped IDF scaled into [0, 1]. */
export function lexicalWeights(vocabulary: Vocabulary): Float64Array {
  const { tokens, documentFrequency, documents } = vocabulary;
  const idf = (df: number) => Math.log((documents + 1) / (df + 1));
  const floor = idf(COMMON_SHARE * documents);
  const ceiling = idf(1);
  return Float64Array.from(tokens, (token, id) => {
    const word = token.startsWith('##') ? token.slice(2) : token;
    const placeholder = token.startsWith('[') && token.endsWith(']');
    // Single characters are what unknown words break into: they say nothing about a match.
    if (placeholder || [...word].length < 2 || PREFIX_WORDS.has(word) || !LETTER_OR_DIGIT.test(word)) return 0;
    const scaled = (idf(documentFrequency[id]!) - floor) / (ceiling - floor);
    return Math.min(1, Math.max(0, scaled));
  });
}

export function demoBertWeights(arch: BertArchitecture, vocabulary: Vocabulary, seed: number): BertWeights {
  const h = arch.hiddenSize;
  const lexicalDims = h - SINK_DIMS;
  if (vocabulary.tokens.length !== arch.vocabSize) {
    throw new ServiceError('internal', `vocabulary has ${vocabulary.tokens.length} tokens, architecture ${arch.vocabSize}`);
  }
  // The attention and FFN inner weights stay random: they run, and their results are zeroed.
  const weights = generateBertWeights(arch, seed);
  const normal = seededNormal(seed + 1);
  const norm = Math.sqrt(h);

  const sink = new Float64Array(SINK_DIMS).map((_, i) => (i % 2 === 0 ? 1 : -1) * Math.sqrt(h / SINK_DIMS));
  const lexical = lexicalWeights(vocabulary);
  const words = weights.get('embeddings.word_embeddings.weight')!.data;
  const direction = new Float64Array(lexicalDims);
  for (let id = 0; id < arch.vocabSize; id++) {
    for (let d = 0; d < lexicalDims; d++) direction[d] = normal();
    const mean = direction.reduce((s, v) => s + v, 0) / lexicalDims;
    const length = Math.sqrt(direction.reduce((s, v) => s + (v - mean) ** 2, 0));
    const a = lexical[id]!;
    const b = Math.sqrt(1 - a * a);
    const row = words.subarray(id * h, (id + 1) * h);
    for (let d = 0; d < lexicalDims; d++) row[d] = (a * norm * (direction[d]! - mean)) / length;
    for (let d = 0; d < SINK_DIMS; d++) row[lexicalDims + d] = b * sink[d]!;
  }

  weights.get('embeddings.position_embeddings.weight')!.data.fill(0);
  weights.get('embeddings.token_type_embeddings.weight')!.data.fill(0);
  for (let layer = 0; layer < arch.numHiddenLayers; layer++) {
    const p = layerPrefix(layer);
    for (const dense of [`${p}.attention.output.dense`, `${p}.output.dense`]) {
      weights.get(`${dense}.weight`)!.data.fill(0);
      weights.get(`${dense}.bias`)!.data.fill(0);
    }
  }
  const lastScale = weights.get(`${layerPrefix(arch.numHiddenLayers - 1)}.output.LayerNorm.weight`)!.data;
  lastScale.fill(0, lexicalDims);
  return weights;
}
