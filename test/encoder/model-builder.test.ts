import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { f16round } from '@petamoriken/float16';
import ort from 'onnxruntime-node';
import { bertConfigJson, readBertCheckpoint } from '../../src/encoder/hf-checkpoint.js';
import type { BertArchitecture } from '../../src/encoder/manifest.js';
import { buildBertOnnx } from '../../src/encoder/bert-graph.js';
import type { GraphPrecision } from '../../src/onnx/graph-builder.js';
import { PRESETS, presetArchitecture } from '../../src/encoder/presets.js';
import { writeSafetensors, type FloatDtype } from '../../src/encoder/safetensors.js';
import { generateBertWeights, type BertWeights } from '../../src/encoder/weights.js';
import { isServiceError } from '../support/assert-service-error.js';
import { referenceLastHiddenState } from './reference-bert.js';

const arch = presetArchitecture(PRESETS.tiny, 300);
const SEED = 1234;

interface Encoded {
  lastHiddenState: Float32Array;
  embedding: Float32Array;
  dims: readonly number[];
}

/** Runs a graph on right-padded rows of token ids; token types all 0 unless given. */
async function encode(session: ort.InferenceSession, rows: number[][], types?: number[][]): Promise<Encoded> {
  const length = Math.max(...rows.map((r) => r.length));
  const dims = [rows.length, length];
  const ids = new BigInt64Array(rows.length * length);
  const mask = new BigInt64Array(rows.length * length);
  const tokenTypes = new BigInt64Array(rows.length * length);
  rows.forEach((row, r) =>
    row.forEach((id, t) => {
      ids[r * length + t] = BigInt(id);
      mask[r * length + t] = 1n;
      tokenTypes[r * length + t] = BigInt(types?.[r]?.[t] ?? 0);
    }),
  );
  const out = await session.run({
    input_ids: new ort.Tensor('int64', ids, dims),
    attention_mask: new ort.Tensor('int64', mask, dims),
    token_type_ids: new ort.Tensor('int64', tokenTypes, dims),
  });
  return {
    lastHiddenState: out['last_hidden_state']!.data as Float32Array,
    embedding: out['sentence_embedding']!.data as Float32Array,
    dims: out['last_hidden_state']!.dims,
  };
}

function session(a: BertArchitecture, weights: BertWeights, precision: GraphPrecision = 'fp32') {
  return ort.InferenceSession.create(buildBertOnnx(a, weights, precision), { intraOpNumThreads: 1 });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

const SEQUENCES = [
  [101, 7, 42, 299, 13, 102],
  [101, 250, 102],
  [101, 5, 6, 7, 8, 9, 10, 11, 12, 200, 201, 202, 102],
];

describe('BERT model builder (tiny preset, real ONNX Runtime)', function () {
  const weights = generateBertWeights(arch, SEED);
  let fp32: ort.InferenceSession;
  let tmp: string;

  before(async function () {
    fp32 = await session(arch, weights);
    tmp = await mkdtemp(path.join(os.tmpdir(), 'model-builder-'));
  });

  after(async function () {
    await fp32?.release();
    await rm(tmp, { recursive: true, force: true });
  });

  async function checkpointFolder(name: string, dtype: FloatDtype, tensors: BertWeights, config = bertConfigJson(arch)) {
    const dir = path.join(tmp, name);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, dtype, { format: 'pt' });
    return dir;
  }

  describe('seeded generator', function () {
    it('gives the same weights for a seed and different weights for another seed', function () {
      const again = generateBertWeights(arch, SEED);
      const other = generateBertWeights(arch, SEED + 1);
      const name = 'encoder.layer.1.attention.self.key.weight';
      assert.deepEqual(again.get(name)!.data, weights.get(name)!.data);
      assert.notDeepEqual(other.get(name)!.data, weights.get(name)!.data);
    });

    it('initialises like Hugging Face: N(0, 0.02) matrices, zero biases, unit LayerNorm scale, zero [PAD] row', function () {
      const values = weights.get('encoder.layer.0.intermediate.dense.weight')!.data;
      const mean = values.reduce((s, v) => s + v, 0) / values.length;
      const std = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length);
      assert.ok(Math.abs(mean) < 0.002, `mean ${mean}`);
      assert.ok(Math.abs(std - 0.02) < 0.001, `std ${std}`);
      assert.ok(weights.get('encoder.layer.0.output.dense.bias')!.data.every((v) => v === 0));
      assert.ok(weights.get('embeddings.LayerNorm.weight')!.data.every((v) => v === 1));
      assert.ok(weights.get('encoder.layer.1.output.LayerNorm.bias')!.data.every((v) => v === 0));
      const words = weights.get('embeddings.word_embeddings.weight')!.data;
      assert.ok(words.subarray(0, arch.hiddenSize).every((v) => v === 0));
      assert.ok(words.subarray(arch.hiddenSize, 2 * arch.hiddenSize).some((v) => v !== 0));
    });
  });

  describe('graph against an independent TypeScript forward pass', function () {
    it('last_hidden_state matches the reference within 1e-5 for each sequence', async function () {
      for (const ids of SEQUENCES) {
        const out = await encode(fp32, [ids]);
        assert.deepEqual(out.dims, [1, ids.length, arch.hiddenSize]);
        const reference = referenceLastHiddenState(arch, weights, ids).flatMap((row) => [...row]);
        assert.ok(maxAbsDiff(out.lastHiddenState, reference) < 1e-5, `diff ${maxAbsDiff(out.lastHiddenState, reference)}`);
      }
    });

    it('uses token_type_ids: type 1 changes the output and still matches the reference', async function () {
      const ids = SEQUENCES[0]!;
      const types = ids.map((_, i) => (i >= 3 ? 1 : 0));
      const out = await encode(fp32, [ids], [types]);
      const reference = referenceLastHiddenState(arch, weights, ids, types).flatMap((row) => [...row]);
      assert.ok(maxAbsDiff(out.lastHiddenState, reference) < 1e-5);
      const typeZero = await encode(fp32, [ids]);
      assert.ok(maxAbsDiff(out.lastHiddenState, typeZero.lastHiddenState) > 1e-3);
    });

    it('sentence_embedding is the masked mean of last_hidden_state, L2-normalised', async function () {
      const out = await encode(fp32, SEQUENCES);
      const [batch, length, hidden] = out.dims as [number, number, number];
      assert.deepEqual([batch, hidden], [SEQUENCES.length, arch.hiddenSize]);
      SEQUENCES.forEach((ids, r) => {
        const mean = new Float64Array(hidden);
        for (let t = 0; t < ids.length; t++) {
          for (let d = 0; d < hidden; d++) mean[d]! += out.lastHiddenState[(r * length + t) * hidden + d]! / ids.length;
        }
        const norm = Math.hypot(...mean);
        const expected = mean.map((v) => v / norm);
        const actual = out.embedding.subarray(r * hidden, (r + 1) * hidden);
        assert.ok(maxAbsDiff(actual, expected) < 1e-6, `row ${r}: diff ${maxAbsDiff(actual, expected)}`);
        assert.ok(Math.abs(Math.hypot(...actual) - 1) < 1e-6);
      });
    });

    it('a sequence alone and inside a right-padded batch of longer ones embed the same within 1e-5', async function () {
      const short = SEQUENCES[1]!;
      const alone = await encode(fp32, [short]);
      const batch = await encode(fp32, [SEQUENCES[2]!, short, SEQUENCES[0]!]);
      const hidden = arch.hiddenSize;
      const inBatch = batch.embedding.subarray(hidden, 2 * hidden);
      assert.ok(maxAbsDiff(alone.embedding, inBatch) < 1e-5, `diff ${maxAbsDiff(alone.embedding, inBatch)}`);
      const length = batch.dims[1]!;
      const hiddenInBatch = batch.lastHiddenState.subarray(length * hidden, (length + short.length) * hidden);
      assert.ok(maxAbsDiff(alone.lastHiddenState, hiddenInBatch) < 1e-5);
    });

    it('handles sequences up to max_position_embeddings', async function () {
      const ids = Array.from({ length: arch.maxPositionEmbeddings }, (_, i) => (i * 37) % arch.vocabSize);
      const out = await encode(fp32, [ids]);
      assert.deepEqual(out.dims, [1, arch.maxPositionEmbeddings, arch.hiddenSize]);
      assert.ok(out.embedding.every(Number.isFinite));
    });
  });

  describe('Hugging Face checkpoint folders (safetensors written by the test)', function () {
    it('F32 checkpoint gives identical embeddings to the seeded weights it was written from', async function () {
      const dir = await checkpointFolder('f32', 'F32', weights);
      const checkpoint = await readBertCheckpoint(dir);
      assert.deepEqual(checkpoint.architecture, arch);
      assert.equal(checkpoint.weightsDtype, 'F32');
      const fromCheckpoint = await session(checkpoint.architecture, checkpoint.weights);
      const expected = await encode(fp32, SEQUENCES);
      const actual = await encode(fromCheckpoint, SEQUENCES);
      assert.deepEqual(actual.embedding, expected.embedding);
      assert.deepEqual(actual.lastHiddenState, expected.lastHiddenState);
      await fromCheckpoint.release();
    });

    it('"bert."-prefixed names with a pooler read as the canonical weights, the pooler ignored', async function () {
      const prefixed: BertWeights = new Map([...weights].map(([name, t]) => [`bert.${name}`, t]));
      prefixed.set('bert.pooler.dense.weight', { shape: [arch.hiddenSize, arch.hiddenSize], data: new Float32Array(arch.hiddenSize ** 2) });
      prefixed.set('bert.pooler.dense.bias', { shape: [arch.hiddenSize], data: new Float32Array(arch.hiddenSize) });
      const dir = await checkpointFolder('prefixed', 'F32', prefixed);
      const checkpoint = await readBertCheckpoint(dir);
      assert.deepEqual([...checkpoint.weights.keys()].sort(), [...weights.keys()].sort());
      const fromCheckpoint = await session(checkpoint.architecture, checkpoint.weights);
      assert.deepEqual((await encode(fromCheckpoint, SEQUENCES)).embedding, (await encode(fp32, SEQUENCES)).embedding);
      await fromCheckpoint.release();
    });

    it('a checkpoint sharded by model.safetensors.index.json reads as the weights it was split from', async function () {
      const dir = path.join(tmp, 'sharded');
      await mkdir(dir);
      await writeFile(path.join(dir, 'config.json'), JSON.stringify(bertConfigJson(arch)));
      const names = [...weights.keys()];
      const shards = [names.slice(0, 10), names.slice(10)].map((part, i) => ({
        file: `model-0000${i + 1}-of-00002.safetensors`,
        tensors: new Map(part.map((name) => [name, weights.get(name)!])),
      }));
      const weightMap: Record<string, string> = {};
      for (const shard of shards) {
        await writeSafetensors(path.join(dir, shard.file), shard.tensors, 'F32');
        for (const name of shard.tensors.keys()) weightMap[name] = shard.file;
      }
      await writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      const checkpoint = await readBertCheckpoint(dir);
      assert.equal(checkpoint.weights.size, weights.size);
      for (const [name, tensor] of weights) assert.deepEqual(checkpoint.weights.get(name)!.data, tensor.data, name);
    });

    for (const [dtype, tolerance] of [
      ['F16', 2e-3],
      ['BF16', 2e-2],
    ] as const) {
      it(`${dtype} checkpoint reads back the rounded weights exactly and embeds within ${tolerance}`, async function () {
        const dir = await checkpointFolder(dtype.toLowerCase(), dtype, weights);
        const checkpoint = await readBertCheckpoint(dir);
        assert.equal(checkpoint.weightsDtype, dtype);
        const name = 'encoder.layer.0.attention.self.value.weight';
        const original = weights.get(name)!.data;
        const read = checkpoint.weights.get(name)!.data;
        const rounded = dtype === 'F16' ? original.map(f16round) : original.map(bf16Round);
        assert.deepEqual(read, rounded);
        assert.ok(maxAbsDiff(read, original) > 0, 'rounding changed nothing: the dtype was not applied');
        const fromCheckpoint = await session(checkpoint.architecture, checkpoint.weights);
        const diff = maxAbsDiff((await encode(fromCheckpoint, SEQUENCES)).embedding, (await encode(fp32, SEQUENCES)).embedding);
        assert.ok(diff < tolerance, `diff ${diff}`);
        await fromCheckpoint.release();
      });
    }
  });

  describe('fp16 graph (model.fp16.onnx)', function () {
    it('runs on the ONNX Runtime CPU provider and agrees with fp32 within 5e-3', async function () {
      const fp16 = await session(arch, weights, 'fp16');
      assert.equal(fp16.outputNames.length, 2);
      const half = await encode(fp16, SEQUENCES);
      const full = await encode(fp32, SEQUENCES);
      assert.ok(half.embedding instanceof Float32Array);
      const diff = maxAbsDiff(half.embedding, full.embedding);
      assert.ok(diff < 5e-3, `diff ${diff}`);
      assert.ok(diff > 0, 'fp16 graph computed exactly like fp32: weights were not narrowed');
      await fp16.release();
    });

    it('is about half the size of the fp32 graph', function () {
      const ratio = buildBertOnnx(arch, weights, 'fp16').length / buildBertOnnx(arch, weights, 'fp32').length;
      assert.ok(ratio > 0.45 && ratio < 0.6, `ratio ${ratio}`);
    });
  });

  describe('errors', function () {
    it('names every missing tensor', async function () {
      const partial = new Map(weights);
      partial.delete('encoder.layer.1.intermediate.dense.weight');
      partial.delete('embeddings.LayerNorm.bias');
      const dir = await checkpointFolder('missing', 'F32', partial);
      await assert.rejects(
        readBertCheckpoint(dir),
        isServiceError('bad_request', /missing 2 BERT tensor\(s\): embeddings\.LayerNorm\.bias, encoder\.layer\.1\.intermediate\.dense\.weight/),
      );
    });

    it('refuses a tensor whose shape disagrees with config.json', async function () {
      const dir = await checkpointFolder('wide', 'F32', weights, { ...bertConfigJson(arch), intermediate_size: 128 });
      await assert.rejects(
        readBertCheckpoint(dir),
        isServiceError('bad_request', /encoder\.layer\.0\.intermediate\.dense\.weight has shape \[64, 32\].*\[128, 32\]/),
      );
    });

    for (const [field, value, pattern] of [
      ['hidden_act', 'gelu_new', /unsupported model: hidden_act "gelu_new"; only "gelu"/],
      ['hidden_act', 'relu', /hidden_act "relu"/],
      ['model_type', 'roberta', /model_type "roberta"; only "bert"/],
      ['position_embedding_type', 'relative_key', /position_embedding_type "relative_key"/],
      ['num_attention_heads', 5, /hidden_size 32 is not a multiple of num_attention_heads 5/],
      ['num_hidden_layers', 0, /num_hidden_layers must be a positive integer/],
    ] as const) {
      it(`refuses config.json with ${field}: ${JSON.stringify(value)}`, async function () {
        const dir = await checkpointFolder(`config-${field}-${value}`, 'F32', weights, { ...bertConfigJson(arch), [field]: value });
        await assert.rejects(readBertCheckpoint(dir), isServiceError('bad_request', pattern));
      });
    }

    it('reports a folder without config.json or model.safetensors', async function () {
      await assert.rejects(readBertCheckpoint(path.join(tmp, 'nowhere')), isServiceError('not_found', /no config\.json/));
      const dir = path.join(tmp, 'config-only');
      await mkdir(dir);
      await writeFile(path.join(dir, 'config.json'), JSON.stringify(bertConfigJson(arch)));
      await assert.rejects(readBertCheckpoint(dir), isServiceError('not_found', /no model\.safetensors/));
    });

    it('reports a truncated safetensors file', async function () {
      const dir = await checkpointFolder('truncated', 'F32', weights);
      await truncate(path.join(dir, 'model.safetensors'), 1000);
      await assert.rejects(readBertCheckpoint(dir), isServiceError('bad_request', /not a valid safetensors file/));
    });
  });
});

/** The bfloat16 value nearest to `value`, ties to even: whichever neighbour of its truncation is closer. */
function bf16Round(value: number): number {
  const bits = new Uint32Array(1);
  const asFloat = new Float32Array(bits.buffer);
  asFloat[0] = value;
  const truncated = bits[0]! & 0xffff0000;
  bits[0] = truncated;
  const toward0 = asFloat[0]!;
  bits[0] = truncated + 0x10000;
  const away = asFloat[0]!;
  const gap = Math.abs(value - toward0) - Math.abs(away - value);
  if (gap < 0 || (gap === 0 && (truncated & 0x10000) === 0)) return toward0;
  return away;
}
