/**
 * The checks of a CUDA host, as JSON: whether ONNX Runtime's CUDA provider loads; the fp16 graph
 * on CUDA against the fp32 graph on CPU (cosine of each embedding, `e5-base` preset and `demo`
 * models); build-index's rate on CUDA against CPU in the same run; the ONNX search backend on the
 * GPU (fp16, fp16 with exact rescoring, fp32) against faiss-node on CPU over one synthetic index
 * (recall@3 and @100, score differences, 512-query timings); and the time of 1-, 8- and 512-query
 * searches over the largest synthetic fp16 index (up to wiki18's 21,015,324 × 768) that the disk
 * and the time left allow; then hot swaps of two versions over that index, as `--swap_mode auto`
 * plans them and forced to replace (gpu-swap.ts). Run by scripts/gpu-check.sh; on a host without CUDA every "cuda"
 * encoder falls back to CPU and the report says so, with ONNX Runtime's own error; the search
 * steps fail there instead (recorded) unless `--cpu-fallback` lets them search on CPU.
 * Each step runs in its own slice of `--budget-s` (time-slices.ts) and stops its work at the
 * slice's end, recording what it did as partial; one that cannot start is recorded as skipped, one
 * that does not stop as cut. The JSON is rewritten (whole, by rename) whenever a step has new
 * figures, so a run stopped by its time limit still leaves the figures of what ran.
 * `node dist/benchmarks/gpu-check.js --out gpu-check.json [--device-ids 0] [--quick] [--budget-s 430]
 *   [--build-rows 50000] [--cpu-build-rows 512] [--agree-rows 1000000] [--agree-queries 512]
 *   [--timing-rows 21015324] [--timing-dir DIR] [--cpu-fallback] [--cuda-libraries FILE]`
 * (`--cuda-libraries`: scripts/cuda-libraries.sh's record of where the CUDA libraries were found.)
 */
import { mkdir, open, readFile, rename, rm, statfs, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CorpusStore } from '../src/corpus/corpus-store.js';
import type { EmbeddingEncoder } from '../src/encoder/embedding-encoder.js';
import { makeModel } from '../src/encoder/make-model.js';
import { MultiDeviceEncoder } from '../src/encoder/multi-device-encoder.js';
import type { PresetName } from '../src/encoder/presets.js';
import { WorkerEncoder } from '../src/encoder/worker-encoder.js';
import { cudaProviderInstalled } from '../src/onnx/execution-provider.js';
import { DEMO_CORPUS_PATH } from '../src/project-files.js';
import type { VectorIndex, VectorSearchResult } from '../src/index/vector-index.js';
import { readFully } from '../src/file-io.js';
import { buildIndex, untilAborted } from '../src/index/build-index.js';
import { IXFI_HEADER_BYTES } from '../src/index/ixfi-header.js';
import { partialPaths } from '../src/index/ixfi-writer.js';
import { openVectorIndex } from '../src/index/open-index.js';
import type { SearchPrecision } from '../src/index/search-graph.js';
import { median, rowCosines, seconds, workDir as benchmarkWorkDir } from './bench-report.js';
import { swapAtScale } from './gpu-swap.js';
import { writeSyntheticFp16Index, type SyntheticFp16Index } from './synthetic-fp16-index.js';
import { syntheticIndex } from './synthetic-index.js';
import { TimeSlices, type Figures, type Publish, type Slice } from './time-slices.js';

const PRESETS: readonly PresetName[] = ['e5-base', 'demo'];
const QUERY_COUNT = 64;
/**
 * Rows each encoder agreement chunk starts with (they measure the pace) and grows to: the
 * encoder's own rows per run, so the provider's pace is the one the service sees.
 */
const FIRST_CHUNK_ROWS = 8;
const CHUNK_ROWS = 32;
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
/** What the timing step keeps of its slice for loading the index onto the device, searching and cleaning up. */
const TIMING_RESERVE_S = 30;
/** The steps in the order they run, each with the least time it needs to start. */
const STEPS = [
  { name: 'fp16CudaVsFp32Cpu.e5-base', minimumS: 30 },
  { name: 'fp16CudaVsFp32Cpu.demo', minimumS: 10 },
  { name: 'buildIndexE5Base', minimumS: 30 },
  { name: 'searchAgreement', minimumS: 45 },
  { name: 'searchTiming', minimumS: 60 },
  { name: 'swapAtScale', minimumS: 45 },
] as const;
/** Libraries of the CUDA provider (and the provider itself), by file name, cuDNN's parts included. */
const CUDA_LIBRARY = /^lib(cuda|cudart|cublas|cublasLt|curand|cudnn\w*|cufft|nvrtc|nvJitLink|onnxruntime_providers_cuda)[._]/;

/** One promise of `make`, made on the first call; a failure nobody waits for any more is not an unhandled one. */
function shared<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => {
    if (!made) {
      made = make();
      made.catch(() => undefined);
    }
    return made;
  };
}

/**
 * The CUDA libraries this process has mapped (encoder worker threads share its maps): what the
 * provider loaded, wherever the loader found it. Empty where /proc is missing.
 */
async function mappedCudaLibraries(): Promise<string[]> {
  const maps = await readFile('/proc/self/maps', 'utf8').catch(() => '');
  const files = maps.split('\n').flatMap((line) => {
    const file = /\s(\/\S.*)$/.exec(line)?.[1];
    return file && CUDA_LIBRARY.test(path.basename(file)) ? [file] : [];
  });
  return [...new Set(files)].sort();
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

/**
 * Cosines of each row's embedding on the provider against CPU, both encoders given `items` a chunk
 * at a time: the first FIRST_CHUNK_ROWS, then as many rows (up to CHUNK_ROWS) as the pace so far
 * fits before `untilMs`; stops where none would, or at the slice's end (the chunk in flight is
 * dropped). `providerSeconds`: the provider's encoding time of the rows done.
 */
async function agreeInChunks<T>(
  items: readonly T[],
  encode: (encoder: EmbeddingEncoder, chunk: readonly T[]) => Promise<Float32Array>,
  encoders: { provider: EmbeddingEncoder; cpu: EmbeddingEncoder },
  slice: Slice,
  untilMs: number,
) {
  const { dimension } = encoders.cpu.manifest;
  let rows = 0;
  let minCosine = Infinity;
  let cosineSum = 0;
  let providerSeconds = 0;
  let secondsPerRow: number | undefined;
  while (rows < items.length) {
    const size = secondsPerRow === undefined ? FIRST_CHUNK_ROWS : Math.min(CHUNK_ROWS, Math.floor((untilMs - Date.now()) / 1e3 / secondsPerRow));
    if (size < 1 || slice.signal.aborted) break;
    const chunk = items.slice(rows, rows + size);
    const start = process.hrtime.bigint();
    let onProvider: Float32Array;
    let onCpu: Float32Array;
    try {
      onProvider = await untilAborted(encode(encoders.provider, chunk), slice.signal);
      providerSeconds += seconds(start);
      onCpu = await untilAborted(encode(encoders.cpu, chunk), slice.signal);
    } catch (error) {
      if (slice.signal.aborted) break;
      throw error;
    }
    secondsPerRow = seconds(start) / chunk.length;
    const { min, mean } = rowCosines(onProvider, onCpu, dimension);
    minCosine = Math.min(minCosine, min);
    cosineSum += mean * chunk.length;
    rows += chunk.length;
  }
  return { rows, of: items.length, minCosine: rows > 0 ? minCosine : null, meanCosine: rows > 0 ? cosineSum / rows : null, providerSeconds };
}

/**
 * The fp16 graph on the CUDA provider against the fp32 graph on CPU, on the demo corpus's
 * queries, then its passages, as far as the slice allows. Both encoders run in worker threads, so
 * the slice's timers fire while they compute.
 */
async function compareDevices(model: Promise<string>, deviceId: number, texts: Awaited<ReturnType<typeof demoTexts>>, slice: Slice, publish: Publish) {
  const start = process.hrtime.bigint();
  const modelDir = await untilAborted(model, slice.signal);
  const figures: Figures = { makeModelSeconds: seconds(start) };
  await publish(figures);
  const fallbackWarnings: string[] = [];
  const cpu = await WorkerEncoder.load(modelDir, { device: 'cpu' });
  const cuda = await WorkerEncoder.load(modelDir, { device: 'cuda', deviceId, warn: (message) => fallbackWarnings.push(message) }).catch(async (error: unknown) => {
    await cpu.close();
    throw error;
  });
  try {
    Object.assign(figures, { provider: cuda.provider, fallbackWarnings, loadedLibraries: await mappedCudaLibraries() });
    const warmUp = process.hrtime.bigint();
    await untilAborted(cuda.encodePassages(texts.passages.slice(0, FIRST_CHUNK_ROWS)), slice.signal);
    figures.warmUpSeconds = seconds(warmUp);
    await publish(figures);
    const encoders = { provider: cuda, cpu };
    // Queries in at most a third of what is left: passages (long inputs, and the pace) matter more.
    const queriesUntilMs = Date.now() + (slice.endMs - Date.now()) / 3;
    const queries = await agreeInChunks(texts.queries, (encoder, chunk) => encoder.encodeQueries(chunk), encoders, slice, queriesUntilMs);
    figures.queries = queries;
    await publish(figures);
    const { providerSeconds, ...passages } = await agreeInChunks(texts.passages, (encoder, chunk) => encoder.encodePassages(chunk), encoders, slice, slice.endMs);
    Object.assign(figures, { passages, passagesPerSecondOnProvider: passages.rows > 0 ? passages.rows / providerSeconds : null });
    if (queries.rows < queries.of || passages.rows < passages.of) {
      figures.partial = `the slice ended after ${queries.rows} of ${queries.of} queries and ${passages.rows} of ${passages.of} passages`;
    }
    return figures;
  } finally {
    // The chunk in flight when the slice ended is not waited for.
    if (slice.signal.aborted) {
      cpu.abandon();
      cuda.abandon();
    }
    await Promise.allSettled([cpu.close(), cuda.close()]);
  }
}

/** A corpus of `rows` lines cycling the demo corpus: build rate depends on lengths, not on meaning. */
async function cycledCorpus(file: string, rows: number, passages: readonly string[]): Promise<void> {
  const lines = Array.from({ length: rows }, (_, i) => JSON.stringify({ id: String(i), contents: passages[i % passages.length] }));
  await writeFile(file, lines.join('\n') + '\n');
}

/**
 * build-index's rate on `device`: rows written over the seconds until the last batch was written.
 * Stops when `signal` aborts, with the rate of the batches written by then. On CPU (asked for, or
 * fallen back to) batches are the encoder's runs, CHUNK_ROWS: larger ones are no faster there, and
 * the one abandoned at the end is still computed, beside whatever runs next.
 */
async function buildRate(modelDir: string, corpusPath: string, workDir: string, device: 'cuda' | 'cpu', deviceIds: readonly number[], signal: AbortSignal) {
  // Loading the encoder takes seconds: not after the time is up.
  signal.throwIfAborted();
  const fallbackWarnings: string[] = [];
  const encoder = await MultiDeviceEncoder.load(modelDir, deviceIds, { device, warn: (message) => fallbackWarnings.push(message) });
  const corpus = await CorpusStore.open(corpusPath, { sidecarPath: `${corpusPath}.${device}.offsets` });
  const outPath = path.join(workDir, `build-${device}.index`);
  const of = corpus.rows;
  let rows = 0;
  let elapsed = 0;
  const start = process.hrtime.bigint();
  try {
    await buildIndex({
      corpus,
      encoder,
      outPath,
      batchSize: (encoder.provider === 'cuda' ? BATCH_PER_DEVICE : CHUNK_ROWS) * deviceIds.length,
      restart: true,
      signal,
      onProgress: (done) => {
        rows = done;
        elapsed = seconds(start);
      },
    });
  } catch (error) {
    if (!signal.aborted) throw error;
    // The batch in flight is not waited for.
    encoder.abandon();
  } finally {
    await Promise.allSettled([encoder.close(), corpus.close()]);
    const partial = partialPaths(outPath);
    await Promise.all([outPath, partial.vectors, partial.description].map((file) => rm(file, { force: true })));
  }
  return {
    provider: encoder.provider,
    deviceIds,
    rows,
    of,
    seconds: elapsed,
    rowsPerSecond: rows > 0 ? rows / elapsed : null,
    fallbackWarnings,
    ...(rows < of && { partial: `stopped after ${rows} of ${of} rows` }),
  };
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

/**
 * Median time of searches of `queries` (after one untimed call: page faults, kernel selection):
 * MIN_CALLS, then more up to CELL_BUDGET_S and MAX_CALLS, fewer (at least one) where the slice ends.
 */
async function timeSearch(index: VectorIndex, queries: Float32Array, k: number, slice: Slice) {
  await index.nearest(queries, k);
  const times: number[] = [];
  const start = process.hrtime.bigint();
  do {
    const call = process.hrtime.bigint();
    await index.nearest(queries, k);
    times.push(seconds(call) * 1e3);
  } while (times.length < MAX_CALLS && slice.leftS() > 0 && (times.length < MIN_CALLS || seconds(start) < CELL_BUDGET_S));
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

/**
 * The ONNX backend on the GPU against faiss-node's exact search on CPU, same index, same queries:
 * fp16 as is, fp16 with its best RESCORE candidates rescored in fp32, and fp32.
 */
async function searchAgreement(indexFile: Promise<string>, rows: number, queryCount: number, settings: SearchSettings, slice: Slice, publish: Publish) {
  const file = await untilAborted(indexFile, slice.signal);
  const queries = perturbedRows(await readRows(file, 0, Math.min(rows, POOL_ROWS)), queryCount);
  const result: Figures = { rows, dimension: SEARCH_DIMENSION, queries: queryCount, queryCosineToItsRow: 1 / Math.sqrt(1 + QUERY_NOISE ** 2) };
  const faiss = await openVectorIndex(file, {}, { backend: 'faiss' });
  const exact: Record<number, VectorSearchResult> = {};
  try {
    exact[3] = await faiss.nearest(queries, 3);
    exact[100] = await faiss.nearest(queries, 100);
    result.faissCpu = { search: await timeSearch(faiss, queries, 3, slice) };
  } finally {
    await faiss.close();
  }
  await publish(result);
  const configurations: Record<string, { precision: SearchPrecision; rescore: number }> = {
    fp16: { precision: 'fp16', rescore: 0 },
    [`fp16Rescore${RESCORE}`]: { precision: 'fp16', rescore: RESCORE },
    fp32: { precision: 'fp32', rescore: 0 },
  };
  const onnx: Figures = {};
  result.onnxGpu = onnx;
  const notRun: string[] = [];
  for (const [name, { precision, rescore }] of Object.entries(configurations)) {
    if (slice.leftS() <= 0) {
      notRun.push(name);
      onnx[name] = { skipped: 'the slice had ended' };
      continue;
    }
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
          search: await timeSearch(index, queries, 3, slice),
        };
      } finally {
        await index.close();
      }
    } catch (error) {
      onnx[name] = { failed: (error as Error).message };
    }
    await publish(result);
  }
  if (notRun.length > 0) result.partial = `the slice ended before ${notRun.join(', ')}`;
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
 * many as the folder's free space holds, and as many as can be written in half of the slice
 * (the other half loads it onto the device and searches). Compared with faiss on CPU by rows
 * scanned per second, since the two indexes differ in size. The index is handed to `keep` as soon
 * as it is written, for the swap step; the caller deletes it.
 */
async function searchTiming(
  poolFile: Promise<string>,
  poolRows: number,
  targetRows: number,
  dirs: readonly string[],
  settings: SearchSettings,
  faissCpu: { rows: number; queries: number; medianMs: number } | undefined,
  keep: (made: SyntheticFp16Index) => void,
  slice: Slice,
  publish: Publish,
) {
  const { dir, freeBytes } = await timingDir(dirs, targetRows * SEARCH_DIMENSION * 2);
  const rowsFittingDisk = Math.max(0, Math.floor((freeBytes - 2 ** 30) / (SEARCH_DIMENSION * 2)));
  const pool = await readRows(await untilAborted(poolFile, slice.signal), 0, Math.min(poolRows, POOL_ROWS));
  const writeDeadline = Date.now() + Math.max(5e3, (slice.endMs - Date.now() - TIMING_RESERVE_S * 1e3) / 2);
  const made = await writeSyntheticFp16Index(dir, pool, SEARCH_DIMENSION, Math.min(targetRows, rowsFittingDisk), writeDeadline);
  keep(made);
  const result: Figures = {
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
      // A cell is at least two searches (one untimed); at the last batch's pace per query, a larger one may not fit.
      const last = batches.at(-1);
      const cellS = last ? (2 * count * last.medianMs) / last.queries / 1e3 : 0;
      if (slice.leftS() <= cellS) {
        result.partial = `the slice left too little time for the ${TIMING_BATCHES.slice(batches.length).join(', ')}-query batches`;
        break;
      }
      const timing = await timeSearch(index, queries.subarray(0, count * SEARCH_DIMENSION), 3, slice);
      batches.push({ ...timing, rowsScannedPerSecond: made.rows * timing.queriesPerSecond });
      await publish(result);
    }
    if (faissCpu && batches.length > 0) {
      const faissRate = (faissCpu.rows * faissCpu.queries) / (faissCpu.medianMs / 1e3);
      result.faissCpu = { ...faissCpu, rowsScannedPerSecond: faissRate, largestBatchOverFaissCpu: batches.at(-1)!.rowsScannedPerSecond / faissRate };
    }
    await publish(result);
  } finally {
    await index.close();
  }
  return result;
}

/** What scripts/cuda-libraries.sh recorded, or why it cannot be read. */
async function cudaLibrariesRecord(file: string | undefined): Promise<unknown> {
  if (!file) return null;
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch (error) {
    return { unreadable: (error as Error).message };
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
      'cuda-libraries': { type: 'string' },
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
    cudaLibraries: await cudaLibrariesRecord(values['cuda-libraries']),
    budgetSeconds: budgetS,
  };
  // One write at a time, each whole (written beside, then renamed): the run may be killed mid-write.
  let saving = Promise.resolve();
  const save = (): Promise<void> => {
    const write = async (): Promise<void> => {
      await writeFile(`${values.out}.tmp`, JSON.stringify(report, null, 2) + '\n');
      await rename(`${values.out}.tmp`, values.out);
    };
    saving = saving.then(write, write);
    return saving;
  };
  /** `name` is a path in the report: `fp16CudaVsFp32Cpu.demo` is report.fp16CudaVsFp32Cpu.demo. */
  const record = async (name: string, value: unknown): Promise<void> => {
    const keys = name.split('.');
    let place = report;
    for (const key of keys.slice(0, -1)) place = (place[key] ??= {}) as Record<string, unknown>;
    place[keys.at(-1)!] = value;
    await save();
  };
  const steps = new TimeSlices(deadlineMs, STEPS, record);
  await save();
  const texts = await demoTexts();

  // Each model is made once, by the first step that needs it; a step cut while it is being made
  // leaves it to the next one.
  const models = new Map(
    PRESETS.map((preset) => {
      const outDir = path.join(workDir, preset);
      return [preset, shared(() => makeModel({ outDir, preset, seed: 1, vocabularyCorpus: DEMO_CORPUS_PATH, fp16: true, overwrite: true }).then(() => outDir))];
    }),
  );
  for (const preset of PRESETS) {
    await steps.run(`fp16CudaVsFp32Cpu.${preset}`, (slice, publish) => compareDevices(models.get(preset)!(), deviceIds[0]!, texts, slice, publish));
  }

  await steps.run('buildIndexE5Base', async (slice, publish) => {
    const modelDir = await untilAborted(models.get('e5-base')!(), slice.signal);
    const corpusPath = path.join(workDir, 'build-corpus.jsonl');
    const cpuCorpusPath = path.join(workDir, 'build-corpus-cpu.jsonl');
    await cycledCorpus(corpusPath, size('build-rows', 50_000, 5_000), texts.passages);
    await cycledCorpus(cpuCorpusPath, size('cpu-build-rows', 512, 128), texts.passages);
    // CPU, the baseline (a steady pace, so fewer rows do), in a third of what is left; then CUDA,
    // the figure this step is for, in the rest, so a CPU batch abandoned at its end runs beside a GPU build.
    const cpu = await buildRate(modelDir, cpuCorpusPath, workDir, 'cpu', [0], slice.until(Date.now() + (slice.endMs - Date.now()) / 3));
    await publish({ cpu });
    const cuda = await buildRate(modelDir, corpusPath, workDir, 'cuda', deviceIds, slice.signal);
    const partial = Object.entries({ CPU: cpu, CUDA: cuda }).flatMap(([name, build]) => (build.partial ? [`${name} build ${build.partial}`] : []));
    return {
      cuda,
      cpu,
      cudaOverCpu: cuda.rowsPerSecond && cpu.rowsPerSecond ? cuda.rowsPerSecond / cpu.rowsPerSecond : null,
      ...(partial.length > 0 && { partial: partial.join('; ') }),
    };
  });

  // One synthetic index (benchmarks/work, kept for later runs) for the agreement and as the timing index's rows.
  const agreeRows = size('agree-rows', 1_000_000, 100_000);
  const agreeFile = shared(() => syntheticIndex(agreeRows, SEARCH_DIMENSION));
  await steps.run('searchAgreement', (slice, publish) => searchAgreement(agreeFile(), agreeRows, size('agree-queries', 512, 128), search, slice, publish));

  const faissSearch = (report.searchAgreement as { faissCpu?: { search: { queries: number; medianMs: number } } }).faissCpu?.search;
  const timingDirs = values['timing-dir'] ? [values['timing-dir']] : ['/dev/shm', benchmarkWorkDir];
  // The largest index the timing step wrote, kept for the swap step; without one, the swap step swaps over the agreement index.
  let largest: SyntheticFp16Index | undefined;
  try {
    await steps.run('searchTiming', (slice, publish) =>
      searchTiming(
        agreeFile(),
        agreeRows,
        size('timing-rows', WIKI18_ROWS, 1_000_000),
        timingDirs,
        search,
        faissSearch && { rows: agreeRows, ...faissSearch },
        (made) => (largest = made),
        slice,
        publish,
      ),
    );
    const swapIndex = largest && largest.rows > 0 ? Promise.resolve(largest) : agreeFile().then((indexPath) => ({ indexPath, rows: agreeRows }));
    await steps.run('swapAtScale', (slice, publish) =>
      swapAtScale(swapIndex, models.get('e5-base')!(), { ...search, shardRows: SHARD_ROWS, workDir }, slice, publish),
    );
  } finally {
    if (largest) await Promise.all([rm(largest.indexPath, { force: true }), rm(largest.fp16Path, { force: true })]);
  }
  await saving;
}

// A step cut by its slice's guard is left running; should it fail later, nobody waits for it, and
// Node's default (end the process) would lose the steps after it.
process.on('unhandledRejection', (error) => console.error('a step left running failed:', error));
// Work left running by a cut step must not keep the process (and the device call) alive.
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
