import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import ort from 'onnxruntime-node';
import {
  chooseWeightBits,
  int8DotProductFlags,
  quantizeLinearWeight,
  weightRange,
  type WeightBits,
} from '../../src/onnx/int8-quantization.js';
import { INT8_MODEL_FILE, makeModel } from '../../src/encoder/make-model.js';
import { readManifest } from '../../src/encoder/manifest.js';
import { buildBertOnnx } from '../../src/encoder/bert-graph.js';
import { OnnxEncoder } from '../../src/encoder/onnx-encoder.js';
import { PRESETS, presetArchitecture } from '../../src/encoder/presets.js';
import { generateBertWeights, layerPrefix } from '../../src/encoder/weights.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import { buildRetrieverFiles, DEMO_CORPUS, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { temporaryDir, writeCheckpoint } from '../support/version-fixtures.js';

const { onnx } = onnxProto;
const BITS: readonly WeightBits[] = [8, 7];

const CPUINFO_VNNI = 'processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\nbugs\t\t:\n';
const CPUINFO_AVX2 = 'processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: avx_vnni_is_not_a_bug_flag\n';

/** Round half to even, as ONNX's DynamicQuantizeLinear rounds. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

/** DynamicQuantizeLinear by its ONNX definition: one uint8 scale and zero point over the whole tensor. */
function dynamicQuantizeLinear(x: Float32Array): { q: Uint8Array; scale: number; zeroPoint: number } {
  let min = 0;
  let max = 0;
  for (const v of x) {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const scale = Math.fround((max - min) / 255);
  const zeroPoint = Math.min(255, Math.max(0, roundHalfEven(-min / scale)));
  const q = Uint8Array.from(x, (v) => Math.min(255, Math.max(0, roundHalfEven(v / scale) + zeroPoint)));
  return { q, scale, zeroPoint };
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    aa += a[i]! ** 2;
    bb += b[i]! ** 2;
  }
  return dot / Math.sqrt(aa * bb);
}

/** Cosine of each row of two row-major `rows × dimension` matrices. */
function rowCosines(a: Float32Array, b: Float32Array, dimension: number): number[] {
  const rows = a.length / dimension;
  return Array.from({ length: rows }, (_, r) =>
    cosine(a.subarray(r * dimension, (r + 1) * dimension), b.subarray(r * dimension, (r + 1) * dimension)),
  );
}

/** Indices of the `k` largest inner products of each query with the passages. */
function topK(queries: Float32Array, passages: Float32Array, dimension: number, k: number): number[][] {
  const passageCount = passages.length / dimension;
  return Array.from({ length: queries.length / dimension }, (_, q) => {
    const query = queries.subarray(q * dimension, (q + 1) * dimension);
    const scores = Array.from({ length: passageCount }, (_, p) => {
      let dot = 0;
      for (let d = 0; d < dimension; d++) dot += query[d]! * passages[p * dimension + d]!;
      return dot;
    });
    return scores
      .map((score, index) => ({ score, index }))
      .sort((x, y) => y.score - x.score)
      .slice(0, k)
      .map((hit) => hit.index);
  });
}

async function encodeWith(modelDir: string, precision: 'fp32' | 'int8', queries: QueryInput[], passages: string[]) {
  const encoder = await OnnxEncoder.load(modelDir, { device: 'cpu', precision, intraOpNumThreads: 1 });
  try {
    assert.equal(encoder.modelFile, precision === 'int8' ? INT8_MODEL_FILE : 'model.onnx');
    return { queries: await encoder.encodeQueries(queries), passages: await encoder.encodePassages(passages) };
  } finally {
    await encoder.close();
  }
}

describe('int8 encoder graph (model.int8.onnx, real ONNX Runtime)', function () {
  describe('weight quantization', function () {
    const [outFeatures, inFeatures] = [6, 5];
    const weight = Float32Array.from({ length: outFeatures * inFeatures }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 3)));
    weight.fill(0, 5 * inFeatures);

    for (const bits of BITS) {
      it(`${bits} bits: symmetric per output column, each column's largest weight at ±${weightRange(bits)}, error within half a step`, function () {
        const range = weightRange(bits);
        const { values, scales } = quantizeLinearWeight(weight, outFeatures, inFeatures, bits);
        assert.equal(values.length, outFeatures * inFeatures);
        assert.equal(scales.length, outFeatures);
        for (let o = 0; o < outFeatures; o++) {
          const row = Array.from({ length: inFeatures }, (_, i) => weight[o * inFeatures + i]!);
          const column = Array.from({ length: inFeatures }, (_, i) => values[i * outFeatures + o]!);
          if (o === 5) {
            assert.equal(scales[o], 0);
            assert.deepEqual(column, [0, 0, 0, 0, 0]);
            continue;
          }
          assert.equal(scales[o], Math.fround(Math.max(...row.map(Math.abs)) / range));
          assert.equal(Math.max(...column.map(Math.abs)), range);
          column.forEach((q, i) => {
            assert.ok(Math.abs(q) <= range);
            assert.ok(Math.abs(q * scales[o]! - row[i]!) <= scales[o]! / 2 + 1e-7, `column ${o} row ${i}`);
          });
        }
      });
    }
  });

  describe('weight bits for the CPU', function () {
    it('finds the VNNI/AMX flags on the flags line only', function () {
      assert.deepEqual(int8DotProductFlags(CPUINFO_VNNI), ['avx512_vnni']);
      assert.deepEqual(int8DotProductFlags(CPUINFO_AVX2), []);
      assert.deepEqual(int8DotProductFlags('flags : amx_int8 avx_vnni\n'), ['avx_vnni', 'amx_int8']);
    });

    it('auto takes 8 bits with VNNI or off x86, 7 on x86 without it or without /proc/cpuinfo; a setting wins', function () {
      assert.deepEqual(chooseWeightBits('auto', { arch: 'x64', cpuinfo: CPUINFO_VNNI }), {
        weightBits: 8,
        reason: 'auto: the CPU has avx512_vnni',
      });
      assert.deepEqual(chooseWeightBits('auto', { arch: 'x64', cpuinfo: CPUINFO_AVX2 }), {
        weightBits: 7,
        reason: 'auto: the CPU has none of avx512_vnni, avx_vnni, amx_int8',
      });
      assert.equal(chooseWeightBits('auto', { arch: 'x64' }).weightBits, 7);
      assert.equal(chooseWeightBits('auto', { arch: 'arm64', cpuinfo: 'flags : asimd\n' }).weightBits, 8);
      assert.deepEqual(chooseWeightBits(8, { arch: 'x64', cpuinfo: CPUINFO_AVX2 }), { weightBits: 8, reason: 'set to 8 bits' });
      assert.deepEqual(chooseWeightBits(7, { arch: 'x64', cpuinfo: CPUINFO_VNNI }), { weightBits: 7, reason: 'set to 7 bits' });
    });
  });

  describe('one linear layer against a TypeScript integer reference (tiny preset)', function () {
    const arch = presetArchitecture(PRESETS.tiny, 300);
    const weights = generateBertWeights(arch, 77);
    const prefix = `${layerPrefix(0)}.attention.self.query`;
    const ids = [101, 7, 42, 299, 13, 102, 101, 250, 8, 9, 10, 102];

    /**
     * Runs the whole int8 graph with the first linear layer's input (the embeddings' LayerNorm)
     * and output (after its bias) exposed as extra graph outputs.
     */
    async function firstLinear(bits: WeightBits) {
      const model = onnx.ModelProto.decode(buildBertOnnx(arch, weights, 'int8', bits));
      const graph = model.graph!;
      const consumer = (value: string, opType: string) => {
        const node = graph.node!.find((n) => n.opType === opType && n.input!.includes(value));
        assert.ok(node, `no ${opType} reads ${value}`);
        return node;
      };
      const quantize = graph.node!.find((n) => n.opType === 'DynamicQuantizeLinear')!;
      const matmul = consumer(quantize.output![0]!, 'MatMulInteger');
      const rescaled = consumer(consumer(matmul.output![0]!, 'Cast').output![0]!, 'Mul');
      const biased = consumer(rescaled.output![0]!, 'Add');
      const input = quantize.input![0]!;
      const output = biased.output![0]!;
      for (const name of [input, output]) {
        graph.output!.push({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT } } });
      }
      const initializer = (name: string) => graph.initializer!.find((t) => t.name === name)!;
      const wq = initializer(matmul.input![1]!);
      assert.equal(wq.dataType, onnx.TensorProto.DataType.INT8);
      const session = await ort.InferenceSession.create(onnx.ModelProto.encode(model).finish(), { intraOpNumThreads: 1 });
      const dims = [2, 6];
      const out = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), dims),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(12).fill(1n), dims),
        token_type_ids: new ort.Tensor('int64', new BigInt64Array(12), dims),
      });
      await session.release();
      const raw = wq.rawData!;
      return {
        x: out[input]!.data as Float32Array,
        y: out[output]!.data as Float32Array,
        wq: new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength),
      };
    }

    for (const bits of BITS) {
      it(`${bits} bits: DynamicQuantizeLinear + MatMulInteger + rescale + bias equals the integer reference`, async function () {
        const h = arch.hiddenSize;
        const { x, y, wq } = await firstLinear(bits);
        assert.equal(x.length, 12 * h);
        assert.equal(y.length, 12 * h);
        const weight = weights.get(`${prefix}.weight`)!.data;
        const bias = weights.get(`${prefix}.bias`)!.data;
        const expected = quantizeLinearWeight(weight, h, h, bits);
        assert.deepEqual(wq, expected.values, 'the graph holds the weights quantized per output column');
        assert.equal(Math.max(...Array.from(wq, Math.abs)), weightRange(bits));

        const { q, scale, zeroPoint } = dynamicQuantizeLinear(x);
        let referenceError = 0;
        let quantizationError = 0;
        let largest = 0;
        for (let row = 0; row < 12; row++) {
          for (let o = 0; o < h; o++) {
            let accumulator = 0;
            let exact = 0;
            for (let i = 0; i < h; i++) {
              accumulator += (q[row * h + i]! - zeroPoint) * wq[i * h + o]!;
              exact += x[row * h + i]! * weight[o * h + i]!;
            }
            const reference = accumulator * Math.fround(scale * expected.scales[o]!) + bias[o]!;
            const actual = y[row * h + o]!;
            referenceError = Math.max(referenceError, Math.abs(actual - reference));
            quantizationError = Math.max(quantizationError, Math.abs(actual - (exact + bias[o]!)));
            largest = Math.max(largest, Math.abs(actual));
          }
        }
        assert.ok(largest > 0.1, `outputs too small to compare: ${largest}`);
        assert.ok(referenceError < 1e-6 * largest, `int8 graph vs integer reference: ${referenceError} (largest ${largest})`);
        // The comparison tells quantized from float arithmetic: float weights miss by far more.
        assert.ok(quantizationError > 100 * referenceError, `fp32 ${quantizationError} vs reference ${referenceError}`);
      });
    }
  });

  describe('agreement with the fp32 graph', function () {
    const queries: QueryInput[] = [
      { query: 'who wrote hamlet' },
      { query: 'longest river in africa' },
      { question: 'When did the Roman Empire fall?', query: 'fall of rome date' },
      { query: 'photosynthesis chlorophyll light energy plants' },
    ];

    // The demo's layers add nothing to the residual stream (their output projections are zero,
    // see demo-weights.ts), so quantizing them must leave its embeddings as they were.
    for (const [preset, exact] of [['tiny', false], ['demo', true]] as const) {
      const bound = exact ? 'equal to' : 'within cosine 0.999 of';
      it(`${preset} preset: every query and passage embedding ${bound} fp32, at 8 and 7 bits`, async function () {
        this.timeout(120_000);
        const { modelDir } = await buildRetrieverFiles({ preset, seed: 7, corpus: DEMO_CORPUS });
        const passages = (await readFile(DEMO_CORPUS, 'utf8'))
          .trim()
          .split('\n')
          .slice(0, 40)
          .map((line) => (JSON.parse(line) as { contents: string }).contents);
        const dir = await temporaryDir(`int8-${preset}`);
        const reference = await encodeWith(modelDir, 'fp32', queries, passages);
        const { dimension } = await readManifest(modelDir);
        for (const bits of BITS) {
          const outDir = path.join(dir, `${bits}`);
          await makeModel({ outDir, preset, seed: 7, vocabularyCorpus: DEMO_CORPUS, int8: bits });
          const manifest = await readManifest(outDir);
          assert.equal(manifest.files.int8, INT8_MODEL_FILE);
          assert.equal(manifest.int8?.weightBits, bits);
          const int8 = await encodeWith(outDir, 'int8', queries, passages);
          const cosines = [
            ...rowCosines(reference.queries, int8.queries, dimension),
            ...rowCosines(reference.passages, int8.passages, dimension),
          ];
          assert.equal(cosines.length, queries.length + passages.length);
          const worst = Math.min(...cosines);
          if (exact) {
            assert.deepEqual(int8.queries, reference.queries);
            assert.deepEqual(int8.passages, reference.passages);
            continue;
          }
          assert.ok(worst >= 0.999, `${preset} ${bits} bits: worst cosine ${worst}`);
          assert.notDeepEqual(int8.passages, reference.passages, 'int8 embeddings equal fp32: the weights were not quantized');
        }
      });
    }
  });

  describe('retrieval on the wiki18 sample (random 384-wide, 2-layer BERT via checkpoint conversion)', function () {
    it('fp32 and int8 top-10 over 300 passages overlap by at least 9 of 10 on average, at 8 and 7 bits', async function () {
      this.timeout(300_000);
      const { modelDir: likeDir } = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
      const dir = await temporaryDir('int8-overlap');
      const checkpoint = await writeCheckpoint(path.join(dir, 'checkpoint'), likeDir, 31, {
        hiddenSize: 384,
        numHiddenLayers: 2,
        numAttentionHeads: 6,
        intermediateSize: 1536,
      });
      const rows = (await readFile(SAMPLE_CORPUS, 'utf8'))
        .trim()
        .split('\n')
        .slice(0, 300)
        .map((line) => (JSON.parse(line) as { contents: string }).contents);
      // A question about every tenth passage's subject, naming its title and a few of its words.
      const queries = rows
        .filter((_, i) => i % 10 === 0)
        .map((contents) => {
          const [title, ...text] = contents.split('\n');
          const words = text.join(' ').match(/[A-Za-z]{4,}/g) ?? [];
          return { query: `${title!.replaceAll('"', '')} ${words.slice(3, 7).join(' ')}` };
        });
      const fp32Dir = path.join(dir, 'fp32');
      await makeModel({ outDir: fp32Dir, checkpointDir: checkpoint });
      const reference = await encodeWith(fp32Dir, 'fp32', queries, rows);
      const referenceTop = topK(reference.queries, reference.passages, 384, 10);
      const overlaps: Record<number, number> = {};
      for (const bits of BITS) {
        const outDir = path.join(dir, `int8-${bits}`);
        await makeModel({ outDir, checkpointDir: checkpoint, int8: bits });
        const int8 = await encodeWith(outDir, 'int8', queries, rows);
        const top = topK(int8.queries, int8.passages, 384, 10);
        const shared = top.map((hits, q) => hits.filter((hit) => referenceTop[q]!.includes(hit)).length);
        overlaps[bits] = shared.reduce((sum, n) => sum + n, 0) / shared.length;
        assert.ok(overlaps[bits]! >= 9, `${bits} bits: mean top-10 overlap ${overlaps[bits]} (${shared.join(' ')})`);
      }
      // Recorded for the README's fidelity note.
      console.log(`      mean top-10 overlap with fp32 over ${queries.length} queries: ${JSON.stringify(overlaps)}`);
    });
  });
});
