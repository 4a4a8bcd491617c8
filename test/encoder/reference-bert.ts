import type { BertArchitecture } from '../../src/encoder/manifest.js';
import type { BertWeights } from '../../src/encoder/weights.js';

/**
 * A plain BERT forward pass, written from the Hugging Face `BertModel` definition without ONNX,
 * in float64 loops: the independent oracle the built graphs are checked against.
 */

/**
 * erf(x) = 2/√π · e^(−x²) · Σₙ 2ⁿ x^(2n+1) / (1·3·5···(2n+1)): every term is positive, so the sum
 * keeps double precision (the alternating Taylor series would cancel away digits for large x).
 * Beyond |x| = 6, 1 − |erf(x)| < 1e-17.
 */
export function erf(x: number): number {
  if (Math.abs(x) >= 6) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

type Matrix = Float64Array[];

function layerNorm(rows: Matrix, gamma: Float32Array, beta: Float32Array, eps: number): Matrix {
  return rows.map((row) => {
    const mean = row.reduce((s, v) => s + v, 0) / row.length;
    const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / row.length;
    const scale = 1 / Math.sqrt(variance + eps);
    return row.map((v, i) => (v - mean) * scale * gamma[i]! + beta[i]!);
  });
}

/** y = x Wᵀ + b with W stored `[out, in]` as PyTorch does. */
function linear(rows: Matrix, weight: Float32Array, bias: Float32Array): Matrix {
  const outFeatures = bias.length;
  return rows.map((row) => {
    const inFeatures = row.length;
    const out = new Float64Array(outFeatures);
    for (let o = 0; o < outFeatures; o++) {
      let sum = bias[o]!;
      for (let i = 0; i < inFeatures; i++) sum += row[i]! * weight[o * inFeatures + i]!;
      out[o] = sum;
    }
    return out;
  });
}

function add(a: Matrix, b: Matrix): Matrix {
  return a.map((row, r) => row.map((v, i) => v + b[r]![i]!));
}

/**
 * `last_hidden_state` of one sequence (no padding: every token attends to every token), as
 * `tokens × hidden` rows.
 */
export function referenceLastHiddenState(
  arch: BertArchitecture,
  weights: BertWeights,
  inputIds: readonly number[],
  tokenTypeIds: readonly number[] = inputIds.map(() => 0),
): Matrix {
  const w = (name: string) => weights.get(name)!.data;
  const h = arch.hiddenSize;
  const heads = arch.numAttentionHeads;
  const headSize = h / heads;
  const eps = arch.layerNormEps;
  const row = (table: Float32Array, index: number) => Float64Array.from(table.subarray(index * h, (index + 1) * h));

  const embedded = inputIds.map((id, position) => {
    const word = row(w('embeddings.word_embeddings.weight'), id);
    const place = row(w('embeddings.position_embeddings.weight'), position);
    const type = row(w('embeddings.token_type_embeddings.weight'), tokenTypeIds[position]!);
    return word.map((v, i) => v + place[i]! + type[i]!);
  });
  let hidden = layerNorm(embedded, w('embeddings.LayerNorm.weight'), w('embeddings.LayerNorm.bias'), eps);

  for (let layer = 0; layer < arch.numHiddenLayers; layer++) {
    const p = `encoder.layer.${layer}`;
    const q = linear(hidden, w(`${p}.attention.self.query.weight`), w(`${p}.attention.self.query.bias`));
    const k = linear(hidden, w(`${p}.attention.self.key.weight`), w(`${p}.attention.self.key.bias`));
    const v = linear(hidden, w(`${p}.attention.self.value.weight`), w(`${p}.attention.self.value.bias`));
    const context = hidden.map(() => new Float64Array(h));
    for (let head = 0; head < heads; head++) {
      const offset = head * headSize;
      for (let i = 0; i < hidden.length; i++) {
        const scores = hidden.map((_, j) => {
          let dot = 0;
          for (let d = 0; d < headSize; d++) dot += q[i]![offset + d]! * k[j]![offset + d]!;
          return dot / Math.sqrt(headSize);
        });
        const max = Math.max(...scores);
        const exps = scores.map((s) => Math.exp(s - max));
        const total = exps.reduce((s, e) => s + e, 0);
        for (let j = 0; j < hidden.length; j++) {
          const weight = exps[j]! / total;
          for (let d = 0; d < headSize; d++) context[i]![offset + d]! += weight * v[j]![offset + d]!;
        }
      }
    }
    const attentionOut = linear(context, w(`${p}.attention.output.dense.weight`), w(`${p}.attention.output.dense.bias`));
    const attended = layerNorm(
      add(attentionOut, hidden),
      w(`${p}.attention.output.LayerNorm.weight`),
      w(`${p}.attention.output.LayerNorm.bias`),
      eps,
    );
    const inner = linear(attended, w(`${p}.intermediate.dense.weight`), w(`${p}.intermediate.dense.bias`)).map((r) =>
      r.map(gelu),
    );
    const out = linear(inner, w(`${p}.output.dense.weight`), w(`${p}.output.dense.bias`));
    hidden = layerNorm(add(out, attended), w(`${p}.output.LayerNorm.weight`), w(`${p}.output.LayerNorm.bias`), eps);
  }
  return hidden;
}

/**
 * `BertForSequenceClassification`'s one logit for one sequence: the pooler (dense + tanh) on the
 * [CLS] row of {@link referenceLastHiddenState}, then the classifier.
 */
export function referenceClassifierLogit(
  arch: BertArchitecture,
  weights: BertWeights,
  inputIds: readonly number[],
  tokenTypeIds: readonly number[],
): number {
  const w = (name: string) => weights.get(name)!.data;
  const cls = referenceLastHiddenState(arch, weights, inputIds, tokenTypeIds)[0]!;
  const pooled = linear([cls], w('pooler.dense.weight'), w('pooler.dense.bias')).map((row) => row.map(Math.tanh));
  return linear(pooled, w('classifier.weight'), w('classifier.bias'))[0]![0]!;
}
