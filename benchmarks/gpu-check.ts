/**
 * The checks of a CUDA host, as JSON: whether ONNX Runtime's CUDA provider loads; the fp16 graph
 * on CUDA against the fp32 graph on CPU (cosine of each embedding, `e5-base` preset and `demo`
 * models); build-index's rate on CUDA against CPU in the same run; the ONNX search backend on the
 * GPU (fp16, fp16 with exact rescoring, fp32) against faiss-node on CPU over one synthetic index
 * (recall@3 and @100, score differences, 512-query timings); and the time of 1-, 8- and 512-query
 * searches over the largest synthetic fp16 index (up to wiki18's 21,015,324 × 768) that the disk
 * and the time left allow. Run by scripts/gpu-check.sh; on a host without CUDA every "cuda"
 * encoder falls back to CPU and the report says so, with ONNX Runtime's own error; the search
 * steps fail there instead (recorded) unless `--cpu-fallback` lets them search on CPU.
 * The JSON is rewritten after every step, and a step that no longer fits `--budget-s` is recorded
 * as skipped, so a run stopped by its time limit still leaves the figures of what ran.
 * `node dist/benchmarks/gpu-check.js --out gpu-check.json [--device-ids 0] [--quick] [--budget-s 430]
 *   [--build-rows 50000] [--cpu-build-rows 512] [--agree-rows 1000000] [--agree-queries 512]
 *   [--timing-rows 21015324] [--timing-dir DIR] [--cpu-fallback]`
 */
import { mkdir, open, rm, statfs, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CorpusStore } from '../src/corpus/corpus-store.js';
import { makeModel } from '../src/encoder/make-model.js';
import { MultiDeviceEncoder } from '../src/encoder/multi-device-encoder.js';
import { OnnxEncoder } from '../src/encoder/onnx-encoder.js';
import type { PresetName } from '../src/encoder/presets.js';
import { cudaProviderInstalled } from '../src/onnx/execution-provider.js';
import { DEMO_CORPUS_PATH } from '../src/project-files.js';
import type { VectorIndex, VectorSearchResult } from '../src/index/vector-index.js';
import { readFully } from '../src/file-io.js';
import { buildIndex } from '../src/index/build-index.js';
import { IXFI_HEADER_BYTES } from '../src/index/ixfi-header.js';
import { openVectorIndex } from '../src/index/open-index.js';
import type { SearchPrecision } from '../src/index/search-graph.js';
import { median, rowCosines, seconds, workDir as benchmarkWorkDir } from './bench-report.js';
import { writeSyntheticFp16Index } from './synthetic-fp16-index.js';
import { syntheticIndex } from './synthetic-index.js';

const PRESETS: readonly PresetName[] = ['e5-base', 'demo'];
const QUERY_COUNT = 64;
const BATCH_PER_DEVICE = 256;
const SEARCH_DIMENSION = 768;
const WIKI18_ROWS = 21_015_324;
/** Query noise against its row's unit norm: cosine ≈ 1/√(1 + 0.75²) = 0.8, about E5's score of a relevant passage. */
const QUERY_NOISE = 0.75;
/** Distinct rows the fp16 timing index is made of (each block of them sign-flipped its own way). */
const POOL_ROWS = 16_384;
const SHARD_ROWS = 524_288;
const RESCORE = 16;
const TIMING_BATCHES = [1, 8, 512];
/** Seconds each timing cell may take beyond its first calls; at least MIN_CALLS, at most MAX_CALLS run. */
const CELL_BUDGET_S = 3;
const MIN_CALLS = 3;
const MAX_CALLS = 20;
/** What the timing step keeps of its share for loading the index onto the device, searching and cleaning up. */
const TIMING_RESERVE_S = 30;
/** Least time left for each step to start. */
const MIN_STEP_S = { buildIndexE5Base: 30, searchAgreement: 45, searchTiming: 60 } as const;

interface Agreement {
  rows: number;
  minCosine: number;
  meanCosine: number;
}

/** Cosine of each row pair (both sides are unit vectors, but a bad norm must not pass). */
function agreement(a: Float32Array, b: Float32Array, dimension: number): Agreement {
  const { min, mean } = rowCosines(a, b, dimension);
  return { rows: a.length / dimension, minCosine: min, meanCosine: mean };
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

/** `count` rows of an IxFI file from `first` on. */
async function readRows(file: string, first: number, count: number): Promise<Float32Array> {
  const vectors = new Float32Array(count * SEARCH_DIMENSION);
  const index = await open(file, 'r');
  try {
    await readFully(index, new Uint8Array(vectors.buffer), IXFI_HEADER_BYTES + first * SEARCH_DIMENSION * 4);
  } finally {
    await index.close();
  }
  return vectors;
}

/**
 * Queries the way retrieval sees them, near one row and far from the rest: random rows of
 * `pool` plus Gaussian noise (QUERY_NOISE of the row's norm), normalised. Random unit queries
 * would score every row alike, and recall would measure nothing but rounding.
 */
function perturbedRows(pool: Float32Array, count: number): Float32Array {
  const rows = pool.length / SEARCH_DIMENSION;
  const queries = new Float32Array(count * SEARCH_DIMENSION);
  let state = 0x12345678;
  const uniform = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) + 1) / (2 ** 32 + 1);
  };
  const sigma = QUERY_NOISE / Math.sqrt(SEARCH_DIMENSION);
  for (let q = 0; q < count; q++) {
    const query = queries.subarray(q * SEARCH_DIMENSION, (q + 1) * SEARCH_DIMENSION);
    const row = Math.floor(uniform() * rows);
    query.set(pool.subarray(row * SEARCH_DIMENSION, (row + 1) * SEARCH_DIMENSION));
    let norm = 0;
    for (let d = 0; d < SEARCH_DIMENSION; d++) {
      query[d]! += sigma * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
      norm += query[d]! * query[d]!;
    }
    for (let d = 0; d < SEARCH_DIMENSION; d++) query[d]! /= Math.sqrt(norm);
  }
  return queries;
}

/** Recall@k of `found` against exact results, and the largest score difference rank by rank (order statistics move no more than the scores do). */
function searchAgreementWith(found: VectorSearchResult, exact: VectorSearchResult) {
  const k = exact.topk;
  let hits = 0;
  let maxScoreDiff = 0;
  for (let q = 0; q < exact.queries; q++) {
    const truth = new Set(exact.rowIndices.subarray(q * k, (q + 1) * k));
    for (let i = q * k; i < (q + 1) * k; i++) {
      if (truth.has(found.rowIndices[i]!)) hits++;
      maxScoreDiff = Math.max(maxScoreDiff, Math.abs(found.scores[i]! - exact.scores[i]!));
    }
  }
  return { k, recall: hits / (exact.queries * k), maxScoreDiff };
}

/** Median time of searches of `queries` (after one untimed call: page faults, kernel selection). */
async function timeSearch(index: VectorIndex, queries: Float32Array, k: number) {
  await index.nearest(queries, k);
  const times: number[] = [];
  const start = process.hrtime.bigint();
  while (times.length < MAX_CALLS && (times.length < MIN_CALLS || seconds(start) < CELL_BUDGET_S)) {
    const call = process.hrtime.bigint();
    await index.nearest(queries, k);
    times.push(seconds(call) * 1e3);
  }
  const count = queries.length / SEARCH_DIMENSION;
  const medianMs = median(times);
  return { queries: count, k, calls: times.length, medianMs, minMs: Math.min(...times), queriesPerSecond: count / (medianMs / 1e3) };
}

interface SearchSettings {
  deviceIds: readonly number[];
  /** Fail where CUDA cannot load, instead of searching on CPU. */
  strict: boolean;
}

async function openOnGpu(file: string, settings: SearchSettings, precision: SearchPrecision, rescore: number) {
  const fallbackWarnings: string[] = [];
  const start = process.hrtime.bigint();
  const index = await openVectorIndex(file, {}, {
    backend: 'onnx',
    gpu: true,
    deviceIds: settings.deviceIds,
    precision,
    shardRows: SHARD_ROWS,
    rescore,
    strict: settings.strict,
    warn: (message) => fallbackWarnings.push(message),
  });
  return { index, openSeconds: seconds(start), fallbackWarnings };
}

/** Puts a step's figures so far in the report and writes it. */
type Publish = (value: Record<string, unknown>) => Promise<void>;

/**
 * The ONNX backend on the GPU against faiss-node's exact search on CPU, same index, same queries:
 * fp16 as is, fp16 with its best RESCORE candidates rescored in fp32, and fp32.
 */
async function searchAgreement(file: string, rows: number, queryCount: number, settings: SearchSettings, publish: Publish) {
  const queries = perturbedRows(await readRows(file, 0, Math.min(rows, POOL_ROWS)), queryCount);
  const result: Record<string, unknown> = { rows, dimension: SEARCH_DIMENSION, queries: queryCount, queryCosineToItsRow: 1 / Math.sqrt(1 + QUERY_NOISE ** 2) };
  const faiss = await openVectorIndex(file, {}, { backend: 'faiss' });
  const exact: Record<number, VectorSearchResult> = {};
  try {
    exact[3] = await faiss.nearest(queries, 3);
    exact[100] = await faiss.nearest(queries, 100);
    result.faissCpu = { search: await timeSearch(faiss, queries, 3) };
  } finally {
    await faiss.close();
  }
  await publish(result);
  const configurations: Record<string, { precision: SearchPrecision; rescore: number }> = {
    fp16: { precision: 'fp16', rescore: 0 },
    [`fp16Rescore${RESCORE}`]: { precision: 'fp16', rescore: RESCORE },
    fp32: { precision: 'fp32', rescore: 0 },
  };
  const onnx: Record<string, unknown> = {};
  result.onnxGpu = onnx;
  for (const [name, { precision, rescore }] of Object.entries(configurations)) {
    try {
      // The first fp16 open also writes the fp16 copy of the index.
      const { index, openSeconds, fallbackWarnings } = await openOnGpu(file, settings, precision, rescore);
      try {
        onnx[name] = {
          openSeconds,
          placement: index.placement,
          fallbackWarnings,
          at3: searchAgreementWith(await index.nearest(queries, 3), exact[3]!),
          at100: searchAgreementWith(await index.nearest(queries, 100), exact[100]!),
          search: await timeSearch(index, queries, 3),
        };
      } finally {
        await index.close();
      }
    } catch (error) {
      onnx[name] = { failed: (error as Error).message };
    }
    await publish(result);
  }
  return result;
}

/**
 * Where the timing index goes: the first of `dirs` with room for `bytes` and a GiB to spare
 * (tmpfs first: here it took 2.1 GB/s, the disk 0.4), else the one with the most room.
 */
async function timingDir(dirs: readonly string[], bytes: number): Promise<{ dir: string; freeBytes: number }> {
  const free = await Promise.all(
    dirs.map(async (dir) => {
      const stats = await statfs(dir).catch(() => undefined);
      return { dir, freeBytes: stats ? stats.bavail * stats.bsize : -1 };
    }),
  );
  return free.find((candidate) => candidate.freeBytes >= bytes + 2 ** 30) ?? free.reduce((best, candidate) => (candidate.freeBytes > best.freeBytes ? candidate : best));
}

/**
 * Searches of TIMING_BATCHES queries over the largest fp16 index that fits: `targetRows`, as
 * many as the folder's free space holds, and as many as can be written in half of the time left
 * (the other half loads it onto the device and searches). Compared with faiss on CPU by rows
 * scanned per second, since the two indexes differ in size.
 */
async function searchTiming(
  poolFile: string,
  poolRows: number,
  targetRows: number,
  dirs: readonly string[],
  deadlineMs: number,
  settings: SearchSettings,
  faissCpu: { rows: number; queries: number; medianMs: number } | undefined,
  publish: Publish,
) {
  const { dir, freeBytes } = await timingDir(dirs, targetRows * SEARCH_DIMENSION * 2);
  const rowsFittingDisk = Math.max(0, Math.floor((freeBytes - 2 ** 30) / (SEARCH_DIMENSION * 2)));
  const pool = await readRows(poolFile, 0, Math.min(poolRows, POOL_ROWS));
  const writeDeadline = Date.now() + Math.max(5e3, (deadlineMs - Date.now() - TIMING_RESERVE_S * 1e3) / 2);
  const made = await writeSyntheticFp16Index(dir, pool, SEARCH_DIMENSION, Math.min(targetRows, rowsFittingDisk), writeDeadline);
  try {
    const result: Record<string, unknown> = {
      dir,
      freeBytes,
      targetRows,
      rowsFittingDisk,
      rows: made.rows,
      fp16GB: made.bytes / 1e9,
      write: { seconds: made.seconds, gbPerSecond: made.bytes / 1e9 / made.seconds },
    };
    await publish(result);
    if (made.rows === 0) throw new Error('no rows were written in the time left');
    const { index, openSeconds, fallbackWarnings } = await openOnGpu(made.indexPath, settings, 'fp16', 0);
    Object.assign(result, { openSeconds, placement: index.placement, fallbackWarnings });
    await publish(result);
    try {
      const queries = perturbedRows(pool, Math.max(...TIMING_BATCHES));
      const batches: Array<Awaited<ReturnType<typeof timeSearch>> & { rowsScannedPerSecond: number }> = [];
      result.batches = batches;
      for (const count of TIMING_BATCHES) {
        const timing = await timeSearch(index, queries.subarray(0, count * SEARCH_DIMENSION), 3);
        batches.push({ ...timing, rowsScannedPerSecond: made.rows * timing.queriesPerSecond });
        await publish(result);
      }
      if (faissCpu) {
        const faissRate = (faissCpu.rows * faissCpu.queries) / (faissCpu.medianMs / 1e3);
        result.faissCpu = { ...faissCpu, rowsScannedPerSecond: faissRate, largestBatchOverFaissCpu: batches.at(-1)!.rowsScannedPerSecond / faissRate };
      }
      await publish(result);
    } finally {
      await index.close();
    }
    return result;
  } finally {
    await Promise.all([rm(made.indexPath, { force: true }), rm(made.fp16Path, { force: true })]);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: 'gpu-check.json' },
      work: { type: 'string', default: path.join(os.tmpdir(), 'gpu-check') },
      'device-ids': { type: 'string', default: '0' },
      quick: { type: 'boolean', default: false },
      'budget-s': { type: 'string' },
      'build-rows': { type: 'string' },
      'cpu-build-rows': { type: 'string' },
      'agree-rows': { type: 'string' },
      'agree-queries': { type: 'string' },
      'timing-rows': { type: 'string' },
      'timing-dir': { type: 'string' },
      'cpu-fallback': { type: 'boolean', default: false },
    },
  });
  // --quick: the same steps at sizes that take a minute or two on a GPU host.
  const size = (name: keyof typeof values, full: number, quick: number): number => Number(values[name] ?? (values.quick ? quick : full));
  const budgetS = size('budget-s', 430, 240);
  const deadlineMs = Date.now() + budgetS * 1e3;
  const deviceIds = values['device-ids'].split(',').map(Number);
  const search: SearchSettings = { deviceIds, strict: !values['cpu-fallback'] };
  const workDir = values.work;
  await mkdir(workDir, { recursive: true });
  const report: Record<string, unknown> = {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version },
    onnxruntimeNode: (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version,
    cudaProviderInstalled: cudaProviderInstalled(),
    ldLibraryPath: process.env.LD_LIBRARY_PATH ?? null,
    budgetSeconds: budgetS,
  };
  const save = () => writeFile(values.out, JSON.stringify(report, null, 2) + '\n');
  /** Runs a step if at least `MIN_STEP_S[key]` seconds are left; records its figures, its failure, or why it was skipped. */
  const step = async (key: keyof typeof MIN_STEP_S, run: (publish: Publish) => Promise<Record<string, unknown>>): Promise<void> => {
    const leftS = (deadlineMs - Date.now()) / 1e3;
    const publish: Publish = async (value) => {
      report[key] = value;
      await save();
    };
    if (leftS < MIN_STEP_S[key]) {
      await publish({ skipped: `${leftS.toFixed(0)} s of the ${budgetS} s budget left, the step needs at least ${MIN_STEP_S[key]} s` });
    } else {
      try {
        await publish(await run(publish));
      } catch (error) {
        await publish({ ...(report[key] as Record<string, unknown> | undefined), failed: (error as Error).message });
      }
    }
    console.log(key, JSON.stringify(report[key]));
  };
  await save();
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

  await step('buildIndexE5Base', async () => {
    const corpusPath = path.join(workDir, 'build-corpus.jsonl');
    const cpuCorpusPath = path.join(workDir, 'build-corpus-cpu.jsonl');
    await cycledCorpus(corpusPath, size('build-rows', 50_000, 5_000), texts.passages);
    await cycledCorpus(cpuCorpusPath, size('cpu-build-rows', 512, 128), texts.passages);
    const cpu = await buildRate(models['e5-base']!, cpuCorpusPath, workDir, 'cpu', [0]);
    const cuda = await buildRate(models['e5-base']!, corpusPath, workDir, 'cuda', deviceIds);
    return { cuda, cpu, cudaOverCpu: cuda.rowsPerSecond / cpu.rowsPerSecond };
  });

  // One synthetic index (benchmarks/work, kept for later runs) for the agreement and as the timing index's rows.
  const agreeRows = size('agree-rows', 1_000_000, 100_000);
  const agreeFile = () => syntheticIndex(agreeRows, SEARCH_DIMENSION);
  await step('searchAgreement', async (publish) => searchAgreement(await agreeFile(), agreeRows, size('agree-queries', 512, 128), search, publish));

  const faissSearch = (report.searchAgreement as { faissCpu?: { search: { queries: number; medianMs: number } } }).faissCpu?.search;
  const timingDirs = values['timing-dir'] ? [values['timing-dir']] : ['/dev/shm', benchmarkWorkDir];
  await step('searchTiming', async (publish) =>
    searchTiming(await agreeFile(), agreeRows, size('timing-rows', WIKI18_ROWS, 1_000_000), timingDirs, deadlineMs, search, faissSearch && { rows: agreeRows, ...faissSearch }, publish),
  );
}

await main();
