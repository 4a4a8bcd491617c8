import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { ServiceError } from '../errors.js';
import type { BertArchitecture } from './manifest.js';

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

/**
 * A BERT encoder's tensors by their Hugging Face `BertModel` names (no `bert.` prefix); the
 * pooler and `classifier` only for a sequence classifier's head. Linear weights keep Hugging
 * Face's `[out, in]` layout.
 */
export type BertWeights = Map<string, WeightTensor>;

/**
 * What sits on the encoder: nothing (an embedding model pools `last_hidden_state` itself), or
 * `BertForSequenceClassification`'s pooler (dense + tanh on [CLS]) and a one-logit classifier.
 */
export type BertHead = 'none' | 'classifier';

export function layerPrefix(layer: number): string {
  return `encoder.layer.${layer}`;
}

/** Every tensor a `BertModel` encoder (and `head`) needs, with its shape, in Hugging Face's order. */
export function bertTensorShapes(arch: BertArchitecture, head: BertHead = 'none'): Map<string, number[]> {
  const { hiddenSize: h, intermediateSize: ffn } = arch;
  const shapes = new Map<string, number[]>([
    ['embeddings.word_embeddings.weight', [arch.vocabSize, h]],
    ['embeddings.position_embeddings.weight', [arch.maxPositionEmbeddings, h]],
    ['embeddings.token_type_embeddings.weight', [arch.typeVocabSize, h]],
    ['embeddings.LayerNorm.weight', [h]],
    ['embeddings.LayerNorm.bias', [h]],
  ]);
  for (let layer = 0; layer < arch.numHiddenLayers; layer++) {
    const p = layerPrefix(layer);
    for (const projection of ['query', 'key', 'value']) {
      shapes.set(`${p}.attention.self.${projection}.weight`, [h, h]);
      shapes.set(`${p}.attention.self.${projection}.bias`, [h]);
    }
    shapes.set(`${p}.attention.output.dense.weight`, [h, h]);
    shapes.set(`${p}.attention.output.dense.bias`, [h]);
    shapes.set(`${p}.attention.output.LayerNorm.weight`, [h]);
    shapes.set(`${p}.attention.output.LayerNorm.bias`, [h]);
    shapes.set(`${p}.intermediate.dense.weight`, [ffn, h]);
    shapes.set(`${p}.intermediate.dense.bias`, [ffn]);
    shapes.set(`${p}.output.dense.weight`, [h, ffn]);
    shapes.set(`${p}.output.dense.bias`, [h]);
    shapes.set(`${p}.output.LayerNorm.weight`, [h]);
    shapes.set(`${p}.output.LayerNorm.bias`, [h]);
  }
  if (head === 'classifier') {
    shapes.set('pooler.dense.weight', [h, h]);
    shapes.set('pooler.dense.bias', [h]);
    shapes.set('classifier.weight', [1, h]);
    shapes.set('classifier.bias', [1]);
  }
  return shapes;
}

/** Throws a ServiceError naming every missing tensor, or the first one whose shape is wrong. */
export function checkBertWeights(arch: BertArchitecture, weights: BertWeights, source: string, head: BertHead = 'none'): void {
  const expected = bertTensorShapes(arch, head);
  const missing = [...expected.keys()].filter((name) => !weights.has(name));
  if (missing.length > 0) {
    throw new ServiceError('bad_request', `${source}: missing ${missing.length} BERT tensor(s): ${missing.join(', ')}`, {
      missing,
    });
  }
  for (const [name, shape] of expected) {
    const tensor = weights.get(name)!;
    if (!sameShape(tensor.shape, shape)) {
      throw new ServiceError(
        'bad_request',
        `${source}: tensor ${name} has shape [${tensor.shape.join(', ')}], config.json implies [${shape.join(', ')}]`,
      );
    }
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((count, size) => count * size, 1);
}

/** Standard deviation of Hugging Face's BERT initialisation (`initializer_range`). */
const INITIALIZER_RANGE = 0.02;

/** A Gaussian sampler over a seeded generator: the same seed always gives the same stream. */
export function seededNormal(seed: number): () => number {
  const rng = xoroshiro128plus(seed);
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return value;
    }
    // Box–Muller; 1 - u keeps the logarithm's argument in (0, 1].
    const radius = Math.sqrt(-2 * Math.log(1 - uniformFloat64(rng)));
    const angle = 2 * Math.PI * uniformFloat64(rng);
    spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  };
}

/**
 * Weights initialised as Hugging Face initialises a fresh `BertModel`: N(0, 0.02) for matrices
 * and embeddings, zero biases, LayerNorm scale 1 and shift 0, a zero `[PAD]` embedding row.
 */
export function generateBertWeights(arch: BertArchitecture, seed: number, head: BertHead = 'none'): BertWeights {
  const normal = seededNormal(seed);
  const weights: BertWeights = new Map();
  for (const [name, shape] of bertTensorShapes(arch, head)) {
    const data = new Float32Array(elementCount(shape));
    if (name.endsWith('LayerNorm.weight')) {
      data.fill(1);
    } else if (name.endsWith('.weight')) {
      for (let i = 0; i < data.length; i++) data[i] = INITIALIZER_RANGE * normal();
    }
    weights.set(name, { shape, data });
  }
  weights.get('embeddings.word_embeddings.weight')!.data.fill(0, 0, arch.hiddenSize);
  return weights;
}

/**
 * A generated cross-encoder whose scores spread with the pair's text, as a trained one's do. Under
 * Hugging Face's N(0, 0.02) init, attention barely mixes the other tokens into [CLS], so every
 * pair's logit is the same to a few thousandths and rankings are ties broken by rounding. Here
 * the encoder's Linear matrices are three times wider (std 0.06), the pooler's std is 1/√hidden
 * (its tanh out of saturation) and the classifier's 2/√hidden: logits spread by about a unit. Ten
 * times wider spread them further but made the network chaotic: at the ms-marco-MiniLM shape, int8
 * rounding then kept 28% of fp32's top 3 of 10, against 89% at three times.
 */
export function generateRerankerWeights(arch: BertArchitecture, seed: number): BertWeights {
  const weights = generateBertWeights(arch, seed, 'classifier');
  const scales: Record<string, number> = {
    pooler: 1 / Math.sqrt(arch.hiddenSize) / INITIALIZER_RANGE,
    classifier: 2 / Math.sqrt(arch.hiddenSize) / INITIALIZER_RANGE,
  };
  for (const [name, tensor] of weights) {
    if (!name.endsWith('.weight') || name.includes('LayerNorm') || name.startsWith('embeddings.')) continue;
    const scale = scales[name.split('.')[0]!] ?? 3;
    tensor.data.forEach((value, i, data) => (data[i] = value * scale));
  }
  return weights;
}
