import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { badRequest, ServiceError } from '../errors.js';
import { readRegularFile } from '../file-io.js';
import type { Int8Quantization } from '../onnx/int8-quantization.js';

export const MANIFEST_FILE = 'retriever.json';
export const MANIFEST_FORMAT = 'agentic-retriever/1';

/** The BERT shape of an encoder, named as in a Hugging Face `config.json`. */
export interface BertArchitecture {
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  layerNormEps: number;
  hiddenAct: 'gelu';
}

/**
 * `retriever.json`: everything about a model folder that drives behaviour. Code reads these
 * fields instead of guessing from a model's name.
 */
export interface RetrieverManifest {
  format: typeof MANIFEST_FORMAT;
  name: string;
  dimension: number;
  pooling: 'mean';
  normalize: boolean;
  queryPrefix: string;
  passagePrefix: string;
  maxQueryLength: number;
  maxPassageLength: number;
  /** Agentic-R's composed query; `{question}` and `{query}` are replaced. */
  queryTemplate: string;
  /**
   * ONNX files relative to the folder; `fp16` is present when built with half-precision weights,
   * `int8` when built with quantized linear layers (described by `int8`).
   */
  files: { fp32: string; fp16?: string; int8?: string };
  /** How `files.int8` was quantized; present with it. */
  int8?: Int8Quantization;
  /** Graph output names. */
  outputs: { embedding: string; lastHiddenState: string };
  architecture: BertArchitecture;
  provenance: ModelProvenance;
}

export type ModelProvenance =
  | { source: 'preset'; preset: string; seed: number; vocabularyFrom: string; createdAt: string }
  | { source: 'checkpoint'; checkpointPath: string; weightsDtype: string; createdAt: string };

export const E5_DEFAULTS = {
  pooling: 'mean',
  normalize: true,
  queryPrefix: 'query: ',
  passagePrefix: 'passage: ',
  maxQueryLength: 256,
  // Search-R1's and FlashRAG's index scripts encode passages at max_length 256.
  maxPassageLength: 256,
  queryTemplate: '{question} [SEP] {query}',
  outputs: { embedding: 'sentence_embedding', lastHiddenState: 'last_hidden_state' },
} as const;

export const RERANKER_MANIFEST_FILE = 'reranker.json';
export const RERANKER_MANIFEST_FORMAT = 'agentic-retriever/reranker-1';

/** What sentence-transformers' CrossEncoder applies to a one-label model's logit before answering. */
export type ScoreActivation = 'sigmoid' | 'identity';

/**
 * `reranker.json`: a cross-encoder's model folder (Hugging Face `BertForSequenceClassification`
 * with one label), beside the same ONNX files and tokenizer files as an encoder's. Its own file
 * name, so neither kind of folder is ever served as the other.
 */
export interface RerankerManifest {
  format: typeof RERANKER_MANIFEST_FORMAT;
  name: string;
  /** Tokens of one (query, passage) pair, specials included; longer pairs are cut longest first. */
  maxLength: number;
  activation: ScoreActivation;
  files: RetrieverManifest['files'];
  int8?: Int8Quantization;
  /** Graph output name of the raw score. */
  outputs: { logits: string };
  architecture: BertArchitecture;
  provenance: ModelProvenance;
}

/** The manifest file and format each kind of model folder carries. */
export const MANIFEST_KINDS = {
  retriever: { file: MANIFEST_FILE, format: MANIFEST_FORMAT },
  reranker: { file: RERANKER_MANIFEST_FILE, format: RERANKER_MANIFEST_FORMAT },
} as const;

export type ModelKind = keyof typeof MANIFEST_KINDS;

async function readManifestOf<T extends { format: string }>(modelDir: string, kind: ModelKind): Promise<T> {
  const { file: name, format } = MANIFEST_KINDS[kind];
  const file = path.join(modelDir, name);
  const text = (await readRegularFile(file, 'model manifest', { missing: `no ${name} in model folder ${modelDir}` })).toString('utf8');
  const manifest = JSON.parse(text) as T;
  if (manifest.format !== format) {
    throw new ServiceError('bad_request', `${file}: unsupported manifest format ${String(manifest.format)}`);
  }
  return manifest;
}

export async function readManifest(modelDir: string): Promise<RetrieverManifest> {
  return readManifestOf<RetrieverManifest>(modelDir, 'retriever');
}

export async function readRerankerManifest(modelDir: string): Promise<RerankerManifest> {
  return readManifestOf<RerankerManifest>(modelDir, 'reranker');
}

export async function writeManifest(modelDir: string, manifest: RetrieverManifest | RerankerManifest): Promise<void> {
  const kind: ModelKind = manifest.format === RERANKER_MANIFEST_FORMAT ? 'reranker' : 'retriever';
  await writeFile(path.join(modelDir, MANIFEST_KINDS[kind].file), JSON.stringify(manifest, null, 2) + '\n');
}

/** `manifest` with passages encoded at `maxLength` tokens instead: an index build's own setting. */
export function withMaxPassageLength(manifest: RetrieverManifest, maxLength: number): RetrieverManifest {
  const limit = manifest.architecture.maxPositionEmbeddings;
  if (!Number.isInteger(maxLength) || maxLength < 2 || maxLength > limit) {
    throw badRequest(`max passage length must be an integer from 2 to ${limit} (the model's positions), got ${maxLength}`);
  }
  return { ...manifest, maxPassageLength: maxLength };
}
