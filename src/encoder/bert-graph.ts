import onnxProto from 'onnx-proto';
import { GraphBuilder, tensorValue, type GraphPrecision } from '../onnx/graph-builder.js';
import { quantizeLinearWeight, type WeightBits } from '../onnx/int8-quantization.js';
import type { BertArchitecture } from './manifest.js';
import { checkBertWeights, layerPrefix, type BertHead, type BertWeights } from './weights.js';

const { DataType } = onnxProto.onnx.TensorProto;

export const GRAPH_INPUTS = ['input_ids', 'attention_mask', 'token_type_ids'] as const;
export const GRAPH_OUTPUTS = { lastHiddenState: 'last_hidden_state', embedding: 'sentence_embedding' } as const;
/** A sequence classifier's raw scores, named as Hugging Face's ONNX exports name them. */
export const CROSS_ENCODER_OUTPUT = 'logits';

/** Masked attention scores get `torch.finfo(dtype).min` added, as Hugging Face's BERT does. */
const MASK_VALUE: Record<GraphPrecision, number> = { fp32: -3.4028234663852886e38, fp16: -65504, int8: -3.4028234663852886e38 };
/** `torch.nn.functional.normalize`'s default eps. */
const NORMALIZE_EPS = 1e-12;
/** sentence-transformers' clamp on the token count of an all-padding row. */
const MIN_TOKEN_COUNT = 1e-9;

/** `[out, in]` (PyTorch Linear) → `[in, out]`, so that `x · W` is one MatMul. */
function transposed(matrix: Float32Array, rows: number, columns: number): Float32Array {
  const result = new Float32Array(matrix.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < columns; c++) result[c * rows + r] = matrix[r * columns + c]!;
  }
  return result;
}

/** A graph under construction with BERT's encoder layers in it, and what its head builds on. */
interface EncoderBody {
  g: GraphBuilder;
  /** The last layer's output, in the graph's precision (fp16 in an fp16 graph). */
  hidden: string;
  /** `x · Wᵀ + b` for the Linear layer named `prefix`, quantized in an int8 graph. */
  linear: (x: string, prefix: string) => string;
}

/**
 * BERT's embeddings and encoder layers, exactly as Hugging Face's `BertModel` computes them, on the
 * inputs `input_ids`, `attention_mask`, `token_type_ids` (int64 `[batch_size, sequence_length]`).
 * `lastHiddenStateName` names the last layer's output where the graph keeps it in float32.
 */
function encoderBody(
  arch: BertArchitecture,
  weights: BertWeights,
  precision: GraphPrecision,
  int8WeightBits: WeightBits,
  lastHiddenStateName?: string,
): EncoderBody {
  const g = new GraphBuilder(precision);
  const h = arch.hiddenSize;
  const headSize = h / arch.numAttentionHeads;
  const weight = (name: string) => g.floats(name, weights.get(name)!.shape, weights.get(name)!.data);
  const weightZeroPoint = precision === 'int8' ? g.int8s('weight_zero_point', [], Int8Array.of(0)) : '';
  const linear = (x: string, prefix: string) => {
    const [outFeatures, inFeatures] = weights.get(`${prefix}.weight`)!.shape as [number, number];
    if (precision === 'int8') {
      // The shape onnxruntime fuses into one MatMulIntegerToFloat kernel: x ≈ s_x·(x_q − z_x) and
      // W ≈ W_q·diag(s_W) make x·W ≈ s_x·s_W ⊙ ((x_q − z_x)·W_q), an exact int32 product rescaled.
      const quantized = quantizeLinearWeight(weights.get(`${prefix}.weight`)!.data, outFeatures, inFeatures, int8WeightBits);
      const wq = g.int8s(`${prefix}.weight.T.int8`, [inFeatures, outFeatures], quantized.values);
      const wScales = g.floats(`${prefix}.weight.scale`, [outFeatures], quantized.scales);
      const [xq, xScale, xZeroPoint] = g.ops('DynamicQuantizeLinear', [x], 3) as [string, string, string];
      const product = g.op('Cast', [g.op('MatMulInteger', [xq, wq, xZeroPoint, weightZeroPoint])], { to: DataType.FLOAT });
      return g.op('Add', [g.op('Mul', [product, g.op('Mul', [xScale, wScales])]), weight(`${prefix}.bias`)]);
    }
    const matrix = transposed(weights.get(`${prefix}.weight`)!.data, outFeatures, inFeatures);
    const w = g.floats(`${prefix}.weight.T`, [inFeatures, outFeatures], matrix);
    return g.op('Add', [g.op('MatMul', [x, w]), weight(`${prefix}.bias`)]);
  };
  const layerNorm = (x: string, prefix: string, output?: string) =>
    g.op(
      'LayerNormalization',
      [x, weight(`${prefix}.weight`), weight(`${prefix}.bias`)],
      { axis: -1, epsilon: { float: arch.layerNormEps } },
      output,
    );

  // Embeddings: positions are rows 0..sequence_length-1 of the position table.
  const sequenceLength = g.op('Shape', ['input_ids'], { start: 1, end: 2 });
  const positions = g.op('Slice', [weight('embeddings.position_embeddings.weight'), g.int64s([0]), sequenceLength, g.int64s([0])]);
  const words = g.op('Gather', [weight('embeddings.word_embeddings.weight'), 'input_ids']);
  const tokenTypes = g.op('Gather', [weight('embeddings.token_type_embeddings.weight'), 'token_type_ids']);
  const embedded = g.op('Add', [g.op('Add', [words, tokenTypes]), positions]);
  let hidden = layerNorm(embedded, 'embeddings.LayerNorm');

  // Additive key mask [batch, 1, 1, sequence]: 0 where attended, the dtype's minimum where padded.
  const maskFloat = g.op('Cast', ['attention_mask'], { to: g.floatType });
  const keyMask = g.op('Unsqueeze', [
    g.op('Mul', [g.op('Sub', [g.scalar(1), maskFloat]), g.scalar(MASK_VALUE[precision])]),
    g.int64s([1, 2]),
  ]);
  const headsShape = g.int64s([0, 0, arch.numAttentionHeads, headSize]);
  const mergedShape = g.int64s([0, 0, h]);
  const scoreScale = g.scalar(Math.sqrt(headSize));
  const sqrt2 = g.scalar(Math.SQRT2);
  const one = g.scalar(1);
  const half = g.scalar(0.5);

  for (let layer = 0; layer < arch.numHiddenLayers; layer++) {
    const p = layerPrefix(layer);
    const heads = (projection: string, perm: number[]) =>
      g.op('Transpose', [g.op('Reshape', [linear(hidden, `${p}.attention.self.${projection}`), headsShape])], { perm });
    const query = heads('query', [0, 2, 1, 3]);
    const keyT = heads('key', [0, 2, 3, 1]);
    const value = heads('value', [0, 2, 1, 3]);
    const scores = g.op('Add', [g.op('Div', [g.op('MatMul', [query, keyT]), scoreScale]), keyMask]);
    const probabilities = g.op('Softmax', [scores], { axis: -1 });
    const context = g.op('Reshape', [
      g.op('Transpose', [g.op('MatMul', [probabilities, value])], { perm: [0, 2, 1, 3] }),
      mergedShape,
    ]);
    const attended = layerNorm(
      g.op('Add', [linear(context, `${p}.attention.output.dense`), hidden]),
      `${p}.attention.output.LayerNorm`,
    );
    // Exact GELU: x · ½ · (1 + erf(x / √2)).
    const inner = linear(attended, `${p}.intermediate.dense`);
    const gelu = g.op('Mul', [
      g.op('Mul', [inner, half]),
      g.op('Add', [g.op('Erf', [g.op('Div', [inner, sqrt2])]), one]),
    ]);
    const last = layer === arch.numHiddenLayers - 1;
    hidden = layerNorm(
      g.op('Add', [linear(gelu, `${p}.output.dense`), attended]),
      `${p}.output.LayerNorm`,
      last && precision !== 'fp16' ? lastHiddenStateName : undefined,
    );
  }
  return { g, hidden, linear };
}

const graphInputs = () => GRAPH_INPUTS.map((name) => tensorValue(name, DataType.INT64, ['batch_size', 'sequence_length']));

/**
 * The graph of a Hugging Face BERT export, on inputs `input_ids`, `attention_mask`,
 * `token_type_ids` (int64 `[batch_size, sequence_length]`); returns the serialised ModelProto.
 * With no head, a feature-extraction export of `BertModel` plus E5's pooling: outputs
 * `last_hidden_state` and `sentence_embedding` (masked mean then L2 normalisation), both float32.
 * With the classifier head, `BertForSequenceClassification` with one label: the same encoder, the
 * pooler (dense + tanh on the [CLS] position), the classifier; output `logits` (float32
 * `[batch_size, 1]`, before any activation).
 */
export function buildBertOnnx(
  arch: BertArchitecture,
  weights: BertWeights,
  precision: GraphPrecision = 'fp32',
  int8WeightBits: WeightBits = 8,
  head: BertHead = 'none',
): Uint8Array {
  checkBertWeights(arch, weights, 'graph builder', head);
  if (head === 'classifier') return classifierGraph(encoderBody(arch, weights, precision, int8WeightBits));
  return embeddingGraph(arch, precision, encoderBody(arch, weights, precision, int8WeightBits, GRAPH_OUTPUTS.lastHiddenState));
}

function embeddingGraph(arch: BertArchitecture, precision: GraphPrecision, body: EncoderBody): Uint8Array {
  const { g } = body;
  let { hidden } = body;
  if (precision === 'fp16') {
    hidden = g.op('Cast', [hidden], { to: DataType.FLOAT }, GRAPH_OUTPUTS.lastHiddenState);
  }

  // Pooling runs in float32 whatever the precision: sums over hundreds of tokens need the mantissa.
  const tokenWeights = g.op('Unsqueeze', [g.op('Cast', ['attention_mask'], { to: DataType.FLOAT }), g.int64s([2])]);
  const sequenceAxis = g.int64s([1]);
  const summed = g.op('ReduceSum', [g.op('Mul', [hidden, tokenWeights]), sequenceAxis], { keepdims: 0 });
  const counts = g.op('ReduceSum', [tokenWeights, sequenceAxis], { keepdims: 0 });
  const mean = g.op('Div', [summed, g.op('Max', [counts, g.scalar(MIN_TOKEN_COUNT, 'float32')])]);
  const norm = g.op('ReduceL2', [mean], { axes: [1], keepdims: 1 });
  g.op('Div', [mean, g.op('Max', [norm, g.scalar(NORMALIZE_EPS, 'float32')])], {}, GRAPH_OUTPUTS.embedding);

  return g.serialize('bert_feature_extraction', graphInputs(), [
    tensorValue(GRAPH_OUTPUTS.lastHiddenState, DataType.FLOAT, ['batch_size', 'sequence_length', arch.hiddenSize]),
    tensorValue(GRAPH_OUTPUTS.embedding, DataType.FLOAT, ['batch_size', arch.hiddenSize]),
  ]);
}

function classifierGraph({ g, hidden, linear }: EncoderBody): Uint8Array {
  const cls = g.op('Squeeze', [g.op('Gather', [hidden, g.int64s([0])], { axis: 1 }), g.int64s([1])]);
  const logits = linear(g.op('Tanh', [linear(cls, 'pooler.dense')]), 'classifier');
  // An fp16 graph computes the head in fp16 too; clients read float32, as from the embedding graph.
  g.op('Cast', [logits], { to: DataType.FLOAT }, CROSS_ENCODER_OUTPUT);
  return g.serialize('bert_sequence_classification', graphInputs(), [tensorValue(CROSS_ENCODER_OUTPUT, DataType.FLOAT, ['batch_size', 1])]);
}
