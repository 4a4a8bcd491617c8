/**
 * The checks of a CUDA host, as JSON: whether ONNX Runtime's CUDA provider loads; the fp16 graph
 * on CUDA against the fp32 graph on CPU (cosine of each embedding, `e5-base` preset and `demo`
 * models); and build-index's rate on CUDA against CPU in the same run. Run by
 * scripts/gpu-check.sh; on a host without CUDA every "cuda" encoder falls back to CPU and the
 * report says so, with ONNX Runtime's own error.
 * `node dist/benchmarks/gpu-check.js --out gpu-check.json [--device-ids 0] [--build-rows 50000] [--cpu-build-rows 512]`
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CorpusStore } from '../src/corpus/corpus-store.js';
import { makeModel } from '../src/encoder/make-model.js';
import { MultiDeviceEncoder } from '../src/encoder/multi-device-encoder.js';
import { OnnxEncoder } from '../src/encoder/onnx-encoder.js';
import type { PresetName } from '../src/encoder/presets.js';
import { cudaProviderInstalled } from '../src/encoder/session.js';
import { DEMO_CORPUS_PATH } from '../src/http/project-files.js';
import { buildIndex } from '../src/index/build-index.js';
import { seconds } from './bench-report.js';

const PRESETS: readonly PresetName[] = ['e5-base', 'demo'];
const QUERY_COUNT = 64;
const BATCH_PER_DEVICE = 256;

interface Agreement {
  rows: number;
  minCosine: number;
  meanCosine: number;
}

/** Cosine of each row pair; both sides are unit vectors, but divide anyway so a bad norm cannot pass. */
function agreement(a: Float32Array, b: Float32Array, dimension: number): Agreement {
  const cosines: number[] = [];
  for (let offset = 0; offset < a.length; offset += dimension) {
    let dot = 0;
    let normA = 0;
    let normB = 0;
    for (let i = offset; i < offset + dimension; i++) {
      dot += a[i]! * b[i]!;
      normA += a[i]! * a[i]!;
      normB += b[i]! * b[i]!;
    }
    cosines.push(dot / Math.sqrt(normA * normB));
  }
  return { rows: cosines.length, minCosine: Math.min(...cosines), meanCosine: cosines.reduce((sum, c) => sum + c, 0) / cosines.length };
}

/** Corpus passages and, as queries, their title lines (what an agent might ask about them). */
async function demoTexts(): Promise<{ passages: string[]; queries: { query: string }[] }> {
  const corpus = await CorpusStore.open(DEMO_CORPUS_PATH, { sidecarPath: path.join(os.tmpdir(), `gpu-check-${process.pid}.offsets`) });
  try {
    const passages: string[] = [];
    for await (const contents of corpus.passages()) passages.push(contents);
    return { passages, queries: passages.slice(0, QUERY_COUNT).map((contents) => ({ query: contents.split('\n')[0]!.replaceAll('"', '') })) };
  } finally {
    await corpus.close();
  }
}

async function compareDevices(modelDir: string, deviceId: number, texts: Awaited<ReturnType<typeof demoTexts>>) {
  const warnings: string[] = [];
  const cpu = await OnnxEncoder.load(modelDir, { device: 'cpu' });
  const cuda = await OnnxEncoder.load(modelDir, { device: 'cuda', deviceId, warn: (message) => warnings.push(message) });
  try {
    const { dimension } = cpu.manifest;
    await cuda.encodePassages(texts.passages.slice(0, 8));
    const start = process.hrtime.bigint();
    const cudaPassages = await cuda.encodePassages(texts.passages);
    const cudaPassageSeconds = seconds(start);
    return {
      provider: cuda.provider,
      fallbackWarnings: warnings,
      passages: agreement(cudaPassages, await cpu.encodePassages(texts.passages), dimension),
      queries: agreement(await cuda.encodeQueries(texts.queries), await cpu.encodeQueries(texts.queries), dimension),
      passagesPerSecondOnProvider: texts.passages.length / cudaPassageSeconds,
    };
  } finally {
    await Promise.allSettled([cpu.close(), cuda.close()]);
  }
}

/** A corpus of `rows` lines cycling the demo corpus: build rate depends on lengths, not on meaning. */
async function cycledCorpus(file: string, rows: number, passages: readonly string[]): Promise<void> {
  const lines = Array.from({ length: rows }, (_, i) => JSON.stringify({ id: String(i), contents: passages[i % passages.length] }));
  await writeFile(file, lines.join('\n') + '\n');
}

async function buildRate(modelDir: string, corpusPath: string, workDir: string, device: 'cuda' | 'cpu', deviceIds: readonly number[]) {
  const warnings: string[] = [];
  const encoder = await MultiDeviceEncoder.load(modelDir, deviceIds, { device, warn: (message) => warnings.push(message) });
  const corpus = await CorpusStore.open(corpusPath, { sidecarPath: `${corpusPath}.${device}.offsets` });
  try {
    const outPath = path.join(workDir, `build-${device}.index`);
    const start = process.hrtime.bigint();
    const result = await buildIndex({ corpus, encoder, outPath, batchSize: BATCH_PER_DEVICE * deviceIds.length, restart: true });
    const elapsed = seconds(start);
    await rm(outPath);
    return { provider: encoder.provider, deviceIds, rows: result.rows, seconds: elapsed, rowsPerSecond: result.rows / elapsed, fallbackWarnings: warnings };
  } finally {
    await Promise.allSettled([encoder.close(), corpus.close()]);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: 'gpu-check.json' },
      work: { type: 'string', default: path.join(os.tmpdir(), 'gpu-check') },
      'device-ids': { type: 'string', default: '0' },
      'build-rows': { type: 'string', default: '50000' },
      'cpu-build-rows': { type: 'string', default: '512' },
    },
  });
  const deviceIds = values['device-ids'].split(',').map(Number);
  const workDir = values.work;
  await mkdir(workDir, { recursive: true });
  const report: Record<string, unknown> = {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version },
    onnxruntimeNode: (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version,
    cudaProviderInstalled: cudaProviderInstalled(),
    ldLibraryPath: process.env.LD_LIBRARY_PATH ?? null,
  };
  const save = () => writeFile(values.out, JSON.stringify(report, null, 2) + '\n');
  const texts = await demoTexts();

  const models: Record<string, string> = {};
  const agreementByModel: Record<string, unknown> = {};
  for (const preset of PRESETS) {
    const start = process.hrtime.bigint();
    models[preset] = path.join(workDir, preset);
    await makeModel({ outDir: models[preset], preset, seed: 1, vocabularyCorpus: DEMO_CORPUS_PATH, fp16: true, overwrite: true });
    const made = seconds(start);
    agreementByModel[preset] = { makeModelSeconds: made, ...(await compareDevices(models[preset], deviceIds[0]!, texts)) };
    report.fp16CudaVsFp32Cpu = agreementByModel;
    await save();
    console.log(preset, JSON.stringify(agreementByModel[preset]));
  }

  const corpusPath = path.join(workDir, 'build-corpus.jsonl');
  const cpuCorpusPath = path.join(workDir, 'build-corpus-cpu.jsonl');
  await cycledCorpus(corpusPath, Number(values['build-rows']), texts.passages);
  await cycledCorpus(cpuCorpusPath, Number(values['cpu-build-rows']), texts.passages);
  const cpu = await buildRate(models['e5-base']!, cpuCorpusPath, workDir, 'cpu', [0]);
  const cuda = await buildRate(models['e5-base']!, corpusPath, workDir, 'cuda', deviceIds);
  report.buildIndexE5Base = { cuda, cpu, cudaOverCpu: cuda.rowsPerSecond / cpu.rowsPerSecond };
  await save();
  console.log('build-index', JSON.stringify(report.buildIndexE5Base));
}

await main();
