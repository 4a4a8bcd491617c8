/**
 * FAISS Flat search time under thread and OpenBLAS core settings of the faiss host process, each in
 * a child process of its own (OpenBLAS and OpenMP read them once, at load), all in one run, as
 * ratios against the settings the host got before this benchmark (OPENBLAS_NUM_THREADS=1 on
 * ≤ 2 cores, everything else inherited). Each child checks its top-3 against an exact float64
 * ranking, so a core type that computes wrong results shows up as wrong, not as fast. Each search
 * time is the fastest of 3 repetitions and of 3 rounds over all settings.
 * `node dist/benchmarks/faiss-threads.js [--rows 200000] [--dimension 768]`
 */
import { fork, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { seededNormal } from '../src/encoder/weights.js';
import { faissHostEnv } from '../src/index/faiss-host.js';
import { ixfiFileBytes } from '../src/index/ixfi-header.js';
import { IxfiWriter } from '../src/index/ixfi-writer.js';
import { report, seconds, workDir } from './bench-report.js';

const QUERY_COUNTS = [1, 8, 64, 512];
const TOPK = 3;
const CHECKED_QUERIES = 8;
const BLOCK_ROWS = 4096;

interface ChildResult {
  secondsByQueries: Record<number, number>;
  top: { rowIndices: number[]; scores: number[] };
}

/** Gaussian rows, not unit length: distinct scores, so rankings compare exactly. */
function gaussianRows(rows: number, dimension: number, seed: number): Float32Array {
  const normal = seededNormal(seed);
  return Float32Array.from({ length: rows * dimension }, normal);
}

async function generateIndex(file: string, rows: number, dimension: number): Promise<void> {
  const writer = await IxfiWriter.open(file, { dimension, rows, description: { benchmark: 'faiss-threads' }, restart: true });
  for (let done = 0; done < rows; done += BLOCK_ROWS) await writer.append(gaussianRows(Math.min(BLOCK_ROWS, rows - done), dimension, done + 1));
  await writer.finish();
}

/** The exact top-k of the first queries in float64, reading the same rows the index file holds. */
function exactTop(rows: number, dimension: number, queries: Float32Array): { rowIndices: number[]; scores: number[] }[] {
  const best = Array.from({ length: CHECKED_QUERIES }, () => [] as { row: number; score: number }[]);
  for (let done = 0; done < rows; done += BLOCK_ROWS) {
    const block = gaussianRows(Math.min(BLOCK_ROWS, rows - done), dimension, done + 1);
    for (let q = 0; q < CHECKED_QUERIES; q++) {
      for (let r = 0; r < block.length / dimension; r++) {
        let dot = 0;
        for (let i = 0; i < dimension; i++) dot += block[r * dimension + i]! * queries[q * dimension + i]!;
        best[q]!.push({ row: done + r, score: dot });
      }
      best[q] = best[q]!.sort((a, b) => b.score - a.score).slice(0, TOPK);
    }
  }
  return best.map((hits) => ({ rowIndices: hits.map((hit) => hit.row), scores: hits.map((hit) => hit.score) }));
}

/** OpenBLAS's name for the kernels it runs, read from its verbose start-up line. */
function corenameUnder(env: NodeJS.ProcessEnv): string {
  const faissNode = createRequire(import.meta.url).resolve('faiss-node');
  const { stdout, stderr } = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(faissNode)})`], { env: { ...env, OPENBLAS_VERBOSE: '2' }, encoding: 'utf8' });
  const output = stdout + stderr;
  return /Core: (\S+)/.exec(output)?.[1] ?? 'unknown';
}

async function child(file: string, dimension: number): Promise<void> {
  const { IndexFlatIP } = createRequire(import.meta.url)('faiss-node') as typeof import('faiss-node');
  const index = IndexFlatIP.read(file);
  const queries = gaussianRows(Math.max(...QUERY_COUNTS), dimension, 999);
  const secondsByQueries: Record<number, number> = {};
  for (const count of QUERY_COUNTS) {
    const vectors = Array.from(queries.subarray(0, count * dimension));
    index.search(vectors, TOPK);
    const times: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      const start = process.hrtime.bigint();
      index.search(vectors, TOPK);
      times.push(seconds(start));
    }
    // Other work on a shared machine only ever adds time.
    secondsByQueries[count] = Math.min(...times);
  }
  const { labels, distances } = index.search(Array.from(queries.subarray(0, CHECKED_QUERIES * dimension)), TOPK);
  process.send!({ secondsByQueries, top: { rowIndices: labels, scores: distances } } satisfies ChildResult);
}

function runChild(file: string, dimension: number, env: NodeJS.ProcessEnv): Promise<ChildResult & { corename: string }> {
  return new Promise((resolve, reject) => {
    const process = fork(fileURLToPath(import.meta.url), ['--child', file, '--dimension', String(dimension)], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let result: ChildResult | undefined;
    process.on('message', (message: ChildResult) => (result = message));
    process.on('error', reject);
    process.on('exit', (code) => (result ? resolve({ ...result, corename: corenameUnder(env) }) : reject(new Error(`child exited ${code}`))));
  });
}

/** Whether a child's top-3 of the checked queries matches the exact ranking (rows, and scores within float32 rounding). */
function matchesExact(top: ChildResult['top'], exact: ReturnType<typeof exactTop>): boolean {
  return exact.every((expected, q) =>
    expected.rowIndices.every((row, k) => top.rowIndices[q * TOPK + k] === row && Math.abs(top.scores[q * TOPK + k]! - expected.scores[k]!) < 1e-3 * Math.abs(expected.scores[k]!) + 1e-3),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '200000' }, dimension: { type: 'string', default: '768' }, child: { type: 'string' } } });
  const dimension = Number(values.dimension);
  if (values.child) return child(values.child, dimension);
  const rows = Number(values.rows);
  await mkdir(workDir, { recursive: true });
  const file = path.join(workDir, `gaussian-${rows}x${dimension}.index`);
  if ((await stat(file).catch(() => undefined))?.size !== ixfiFileBytes({ dimension, rows })) {
    console.log(`generating ${file} ...`);
    await generateIndex(file, rows, dimension);
  }
  const exact = exactTop(rows, dimension, gaussianRows(CHECKED_QUERIES, dimension, 999));

  const cores = String(availableParallelism());
  // Settings are laid over an environment free of the variables they set, so each names all it changes.
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(OPENBLAS_|OMP_)/.test(name)));
  const today = { ...process.env, ...(process.env.OPENBLAS_NUM_THREADS === undefined && availableParallelism() <= 2 ? { OPENBLAS_NUM_THREADS: '1' } : {}) };
  const settings: { name: string; env: NodeJS.ProcessEnv }[] = [
    { name: 'before: this environment + OPENBLAS_NUM_THREADS=1 on ≤ 2 cores (baseline)', env: today },
    { name: 'faissHostEnv over a clean environment (what the host gets where nothing is set)', env: faissHostEnv(clean) },
    { name: 'libraries\' defaults (no variable set)', env: clean },
    { name: `OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=${cores}, OPENBLAS_CORETYPE=SkylakeX`, env: { ...clean, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: cores, OPENBLAS_CORETYPE: 'SkylakeX' } },
    ...['Prescott', 'Haswell'].map((core) => ({ name: `faissHostEnv with OPENBLAS_CORETYPE=${core}`, env: faissHostEnv({ ...clean, OPENBLAS_CORETYPE: core }) })),
  ];
  // Rounds alternate the order; each cell is the fastest of its rounds: load drifts on a shared box.
  const measured = settings.map((setting) => ({ name: setting.name, corename: '', correct: true, secondsByQueries: {} as Record<number, number> }));
  for (const round of [0, 1, 2]) {
    for (const i of round % 2 === 0 ? settings.keys() : [...settings.keys()].reverse()) {
      const result = await runChild(file, dimension, settings[i]!.env);
      const cell = measured[i]!;
      cell.corename = result.corename;
      cell.correct &&= matchesExact(result.top, exact);
      for (const count of QUERY_COUNTS) cell.secondsByQueries[count] = Math.min(cell.secondsByQueries[count] ?? Infinity, result.secondsByQueries[count]!);
      console.log(`round ${round + 1}: ${settings[i]!.name}`, result.corename, result.secondsByQueries);
    }
  }
  const baseline = measured[0]!.secondsByQueries;
  await report(rows === 200_000 && dimension === 768 ? 'faiss-threads' : `faiss-threads-${rows}x${dimension}`, measured.map((result) => ({
    setting: result.name,
    'OpenBLAS core': result.corename,
    'top-3 exact': result.correct ? 'yes' : 'NO',
    ...Object.fromEntries(QUERY_COUNTS.map((count) => [`${count} q: s (speed-up)`, `${result.secondsByQueries[count]!.toFixed(3)} (${(baseline[count]! / result.secondsByQueries[count]!).toFixed(2)}×)`])),
  })), {
    rows,
    dimension,
    topk: TOPK,
    cores: availableParallelism(),
    inheritedOpenblas: Object.fromEntries(Object.entries(process.env).filter(([name]) => /^(OPENBLAS_|OMP_)/.test(name))),
    settings: measured.map(({ name, corename, correct, secondsByQueries }) => ({ name, corename, correct, secondsByQueries })),
  });
}

await main();
