/**
 * Query-encoding throughput of the e5-base-shaped model on this machine's CPU:
 * (1) one raw `session.run` over all queries as a single unsorted padded batch (the baseline),
 * (2) OnnxEncoder batching in input order, (3) OnnxEncoder batching by token length at a few
 * batch sizes, cut where runs cost least and, for comparison, into the fewest full runs; each at
 * intraOpNumThreads 1 and 2, reported as queries/s and as ratios against (1).
 * Wall time is what a client waits; CPU time is the work done, and stays comparable when other
 * processes share the cores.
 *
 * With `--int8`, instead: the same queries through the server's default encoder (length batches
 * of 32 rows) with model.onnx, model.int8.onnx at 8-bit weights and at 7-bit weights, in
 * alternating rounds, reported as ratios against fp32 with each graph's cosine to fp32.
 *
 *   node dist/benchmarks/encoder-throughput.js [--queries 512] [--repeats 1]
 *   node dist/benchmarks/encoder-throughput.js --int8 [--queries 256] [--repeats 2] [--threads 1]
 */
import { access, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { CONFIG_DEFAULTS } from '../src/config.js';
import { composeQueryText, type QueryInput } from '../src/encoder/embedding-encoder.js';
import { int8DotProductFlags, type WeightBits } from '../src/onnx/int8-quantization.js';
import { makeModel } from '../src/encoder/make-model.js';
import { MANIFEST_FILE, readManifest, type RetrieverManifest } from '../src/encoder/manifest.js';
import { batchesByLength, batchesInInputOrder, DEFAULT_BATCH_LIMITS, type BatchLimits } from '../src/encoder/length-batches.js';
import { bertFeeds, OnnxEncoder, type EncoderOptions } from '../src/encoder/onnx-encoder.js';
import { createEncoderSession } from '../src/encoder/session.js';
import { padBatch, WordPieceTokenizer } from '../src/encoder/tokenizer.js';
import { benchmarksDir, report, rowCosines, seconds, workDir, type Row } from './bench-report.js';

const SAMPLE_CORPUS = path.resolve(benchmarksDir, '..', '..', 'shared', 'data', 'wiki18-sample-1k.jsonl');
const MODEL_DIR = path.join(workDir, 'e5-base');
const SEED = 20251121;
const WARM_UP_QUERIES = 8;

const QUESTION_OPENINGS = [
  'who was', 'when did', 'what is the name of', 'where is', 'which', 'how many', 'in what year did',
  'what was the role of', 'who founded', 'what country is',
];

/** The e5-base preset model, built once and kept under benchmarks/work/ (with an int8 graph of `int8` bits if given). */
async function e5BaseModel(modelDir = MODEL_DIR, int8?: WeightBits): Promise<RetrieverManifest> {
  try {
    await access(path.join(modelDir, MANIFEST_FILE));
    const manifest = await readManifest(modelDir);
    if (int8 === undefined || manifest.int8?.weightBits === int8) return manifest;
  } catch {
    // Not built yet.
  }
  console.log(`building the e5-base preset model in ${modelDir} (once)...`);
  return makeModel({ outDir: modelDir, preset: 'e5-base', seed: 1, vocabularyCorpus: SAMPLE_CORPUS, int8, overwrite: true });
}

/**
 * Search-R1-like rollout queries: a question about a passage's subject plus a shorter sub-query
 * naming it, with lengths varied as an agent's are. Deterministic for a given count.
 */
async function searchR1Queries(count: number): Promise<QueryInput[]> {
  const passages = (await readFile(SAMPLE_CORPUS, 'utf8'))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => (JSON.parse(line) as { contents: string }).contents);
  const rng = xoroshiro128plus(SEED);
  const pick = <T>(items: readonly T[]): T => items[uniformInt(rng, 0, items.length - 1)]!;
  return Array.from({ length: count }, () => {
    const contents = pick(passages);
    const newline = contents.indexOf('\n');
    const title = contents.slice(0, newline).replaceAll('"', '');
    const words = contents.slice(newline + 1).match(/[A-Za-z]{3,}/g) ?? [];
    const phrase = (length: number) => {
      const start = uniformInt(rng, 0, Math.max(0, words.length - length));
      return words.slice(start, start + length).join(' ');
    };
    const question = `${pick(QUESTION_OPENINGS)} ${title} ${phrase(uniformInt(rng, 2, 12))}?`;
    return { question, query: `${title} ${phrase(uniformInt(rng, 1, 7))}` };
  });
}

interface Timing {
  /** Wall-clock seconds: what a client waits. */
  wall: number;
  /** CPU seconds of this process: the work done, less disturbed by other processes on the cores. */
  cpu: number;
}

/** Best of `repeats` timed calls of `work`, after `warmUp` (a small call that lets ORT allocate and optimise). */
async function bestTiming(repeats: number, warmUp: () => Promise<unknown>, work: () => Promise<unknown>): Promise<Timing> {
  await warmUp();
  let best: Timing = { wall: Infinity, cpu: Infinity };
  for (let i = 0; i < repeats; i++) {
    const start = process.hrtime.bigint();
    const cpuStart = process.cpuUsage();
    await work();
    const cpuUsed = process.cpuUsage(cpuStart);
    const timing = { wall: seconds(start), cpu: (cpuUsed.user + cpuUsed.system) / 1e6 };
    if (timing.wall < best.wall) best = timing;
  }
  return best;
}

/** (1): every query in one batch padded to the longest, `session.run` alone (tokenized beforehand). */
async function rawSessionTiming(
  manifest: RetrieverManifest,
  tokenSequences: number[][],
  padTokenId: number,
  intraOpNumThreads: number,
  repeats: number,
): Promise<Timing> {
  const { session } = await createEncoderSession(MODEL_DIR, manifest, { intraOpNumThreads, interOpNumThreads: 1 });
  try {
    const feeds = (sequences: number[][]) => bertFeeds(padBatch(sequences, padTokenId), session.inputNames);
    const all = feeds(tokenSequences);
    const few = feeds(tokenSequences.slice(0, WARM_UP_QUERIES));
    return await bestTiming(
      repeats,
      () => session.run(few, [manifest.outputs.embedding]),
      () => session.run(all, [manifest.outputs.embedding]),
    );
  } finally {
    await session.release();
  }
}

/** One way of batching the encoder: the limits it batches under and whether it sorts by length. */
interface BatchingMode {
  label: string;
  lengthBatching: boolean;
  limits: BatchLimits;
}

async function encoderTiming(
  queries: readonly QueryInput[],
  mode: BatchingMode,
  intraOpNumThreads: number,
  repeats: number,
): Promise<Timing> {
  return (await timedEncoder(MODEL_DIR, queries, { lengthBatching: mode.lengthBatching, batchLimits: mode.limits, intraOpNumThreads }, repeats)).timing;
}

/** Best-of-`repeats` encoding of `queries` by an encoder loaded with `options`, and the embeddings. */
async function timedEncoder(
  modelDir: string,
  queries: readonly QueryInput[],
  options: EncoderOptions,
  repeats: number,
): Promise<{ timing: Timing; embeddings: Float32Array }> {
  // A missing int8 graph must fail the run, not quietly measure fp32 twice.
  const refuse = (message: string) => {
    throw new Error(message);
  };
  const encoder = await OnnxEncoder.load(modelDir, { ...options, interOpNumThreads: 1, warn: refuse });
  try {
    let embeddings: Float32Array = new Float32Array();
    const timing = await bestTiming(
      repeats,
      () => encoder.encodeQueries(queries.slice(0, WARM_UP_QUERIES)),
      async () => {
        embeddings = await encoder.encodeQueries(queries);
      },
    );
    return { timing, embeddings };
  } finally {
    await encoder.close();
  }
}

/**
 * fp32 against the int8 graph at 8 and 7 weight bits, rounds alternating so that load changes
 * on the shared box hit every graph alike; each graph's best round counts.
 */
async function int8Comparison(queryCount: number, repeats: number, threads: number): Promise<void> {
  const graphs = [
    { label: 'fp32 (model.onnx)', modelDir: MODEL_DIR, precision: 'fp32' as const },
    { label: 'int8, 8-bit weights (model.int8.onnx)', modelDir: MODEL_DIR, precision: 'int8' as const, bits: 8 as const },
    { label: 'int8, 7-bit weights (model.int8.onnx)', modelDir: path.join(workDir, 'e5-base-int8-7'), precision: 'int8' as const, bits: 7 as const },
  ];
  // One seed, so every folder holds the same weights.
  const manifest = await e5BaseModel(MODEL_DIR, 8);
  await e5BaseModel(graphs[2]!.modelDir, 7);
  const queries = await searchR1Queries(queryCount);
  const loadBefore = os.loadavg();
  const best = new Map<string, { timing: Timing; embeddings: Float32Array }>();
  for (let round = 0; round < repeats; round++) {
    for (const graph of graphs) {
      const options = { precision: graph.precision, intraOpNumThreads: threads, batchLimits: { maxBatchSize: CONFIG_DEFAULTS.encoderBatchRows } };
      const measured = await timedEncoder(graph.modelDir, queries, options, 1);
      const previous = best.get(graph.label);
      if (!previous || measured.timing.wall < previous.timing.wall) best.set(graph.label, measured);
    }
  }
  const reference = best.get(graphs[0]!.label)!;
  const rows: Row[] = [];
  const measurements = graphs.map((graph) => {
    const { timing, embeddings } = best.get(graph.label)!;
    const cosine = rowCosines(reference.embeddings, embeddings, manifest.dimension);
    const measurement = {
      graph: graph.label,
      wallSeconds: timing.wall,
      cpuSeconds: timing.cpu,
      queriesPerSecond: queryCount / timing.wall,
      queriesPerCpuSecond: queryCount / timing.cpu,
      speedupVsFp32: reference.timing.wall / timing.wall,
      cpuSpeedupVsFp32: reference.timing.cpu / timing.cpu,
      cosineToFp32: cosine,
    };
    rows.push({
      graph: graph.label,
      'wall s': timing.wall.toFixed(2),
      'queries/s': measurement.queriesPerSecond.toFixed(1),
      'vs fp32': `${measurement.speedupVsFp32.toFixed(2)}x`,
      'queries/CPU-s': measurement.queriesPerCpuSecond.toFixed(1),
      'CPU vs fp32': `${measurement.cpuSpeedupVsFp32.toFixed(2)}x`,
      'cosine to fp32, min / mean': `${cosine.min.toFixed(5)} / ${cosine.mean.toFixed(6)}`,
    });
    return measurement;
  });
  await report('encoder-throughput-int8', rows, {
    loadAverage: { before: loadBefore, after: os.loadavg() },
    model: { preset: 'e5-base', weights: 'generated (seed 1), not trained', dimension: manifest.dimension },
    cpuInt8Flags: int8DotProductFlags(await readFile('/proc/cpuinfo', 'utf8').catch(() => '')),
    queries: queryCount,
    rounds: repeats,
    intraOpNumThreads: threads,
    maxBatchSize: CONFIG_DEFAULTS.encoderBatchRows,
    measurements,
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      queries: { type: 'string' },
      repeats: { type: 'string' },
      int8: { type: 'boolean', default: false },
      threads: { type: 'string', default: '1' },
    },
  });
  if (values.int8) {
    await int8Comparison(Number(values.queries ?? 256), Number(values.repeats ?? 2), Number(values.threads));
    return;
  }
  const queryCount = Number(values.queries ?? 512);
  const repeats = Number(values.repeats ?? 1);
  const manifest = await e5BaseModel();
  const queries = await searchR1Queries(queryCount);
  const tokenizer = await WordPieceTokenizer.load(MODEL_DIR);
  const tokenSequences = await tokenizer.tokenIdsOf(
    queries.map((input) => composeQueryText(input, manifest)),
    manifest.maxQueryLength,
  );
  const lengths = tokenSequences.map((ids) => ids.length).sort((a, b) => a - b);
  const tokenStats = {
    min: lengths[0],
    median: lengths[Math.floor(lengths.length / 2)],
    mean: Number((lengths.reduce((sum, n) => sum + n, 0) / lengths.length).toFixed(1)),
    max: lengths.at(-1),
  };
  console.log(`${queryCount} queries, tokens per query ${JSON.stringify(tokenStats)}, best of ${repeats}`);

  const tokenLengths = tokenSequences.map((ids) => ids.length);
  const paddedTokens = (batches: number[][]) =>
    batches.reduce((sum, batch) => sum + batch.length * Math.max(...batch.map((index) => tokenLengths[index]!)), 0);
  const plan = (mode: BatchingMode) => (mode.lengthBatching ? batchesByLength : batchesInInputOrder)(tokenLengths, mode.limits);
  const modes: BatchingMode[] = [
    ...[DEFAULT_BATCH_LIMITS.maxBatchSize, 128].map((maxBatchSize) => ({
      label: `(2) encoder, batches in input order, max ${maxBatchSize} rows`,
      lengthBatching: false,
      limits: { ...DEFAULT_BATCH_LIMITS, maxBatchSize },
    })),
    ...[32, 64, 128].map((maxBatchSize) => ({
      label: `(3) encoder, batches by token length, max ${maxBatchSize} rows`,
      lengthBatching: true,
      limits: { ...DEFAULT_BATCH_LIMITS, maxBatchSize },
    })),
    {
      // A run never holds more than maxBatchTokens, so at this price no cut pays for itself
      // beyond those the limits force: full batches, as a GPU would want.
      label: `(3) encoder, batches by token length, max ${DEFAULT_BATCH_LIMITS.maxBatchSize} rows, fewest runs`,
      lengthBatching: true,
      limits: { ...DEFAULT_BATCH_LIMITS, runCostTokens: DEFAULT_BATCH_LIMITS.maxBatchTokens },
    },
  ];
  const loadBefore = os.loadavg();
  const rows: Row[] = [];
  const measurements = [];
  for (const threads of [1, 2]) {
    const raw = await rawSessionTiming(manifest, tokenSequences, tokenizer.padTokenId, threads, repeats);
    const timed: Array<[string, Timing, number]> = [
      ['(1) raw session.run, one unsorted padded batch', raw, paddedTokens([tokenLengths.map((_, index) => index)])],
    ];
    for (const mode of modes) {
      timed.push([mode.label, await encoderTiming(queries, mode, threads, repeats), paddedTokens(plan(mode))]);
    }
    for (const [mode, timing, tokens] of timed) {
      const measurement = {
        intraOpNumThreads: threads,
        mode,
        paddedTokens: tokens,
        wallSeconds: timing.wall,
        cpuSeconds: timing.cpu,
        queriesPerSecond: queryCount / timing.wall,
        queriesPerCpuSecond: queryCount / timing.cpu,
        ratioToRaw: raw.wall / timing.wall,
        cpuRatioToRaw: raw.cpu / timing.cpu,
      };
      measurements.push(measurement);
      rows.push({
        intraOpNumThreads: threads,
        mode,
        'padded tokens': tokens,
        'wall s': timing.wall.toFixed(2),
        'queries/s': measurement.queriesPerSecond.toFixed(1),
        'vs (1)': `${measurement.ratioToRaw.toFixed(2)}x`,
        'CPU s': timing.cpu.toFixed(2),
        'queries/CPU-s': measurement.queriesPerCpuSecond.toFixed(1),
        'CPU vs (1)': `${measurement.cpuRatioToRaw.toFixed(2)}x`,
      });
    }
  }
  await report('encoder-throughput', rows, {
    // Other processes share these cores; a high load average makes every number here slower.
    loadAverage: { before: loadBefore, after: os.loadavg() },
    model: { preset: 'e5-base', dimension: manifest.dimension, layers: manifest.architecture.numHiddenLayers },
    queries: queryCount,
    repeats,
    tokensPerQuery: tokenStats,
    realTokens: tokenLengths.reduce((sum, n) => sum + n, 0),
    batchLimits: DEFAULT_BATCH_LIMITS,
    measurements,
  });
}

await main();
