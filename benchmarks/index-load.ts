/**
 * FaissIndex load time for a 1M × 768 IxFI file against a raw read of the same file, the process's
 * memory before load, after load and after close, and search time at 8 and 64 queries a call.
 * `node dist/benchmarks/index-load.js [--rows 1000000] [--dimension 768]`
 */
import { mkdir, open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FaissIndex } from '../src/index/faiss-index.js';
import { ixfiFileBytes } from '../src/index/ixfi-header.js';
import { IxfiWriter } from '../src/index/ixfi-writer.js';
import { report, seconds, workDir } from './bench-report.js';

const GB = 1e9;
// The raw-read baseline allocates as much as the index; collect it before measuring memory.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;
const BLOCK_ROWS = 4096;

/** Load time does not depend on the values, so one block of pseudo-random unit-ish vectors is repeated. */
async function generateIndex(file: string, rows: number, dimension: number): Promise<void> {
  const block = new Float32Array(BLOCK_ROWS * dimension);
  let state = 12345;
  for (let i = 0; i < block.length; i++) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    block[i] = (state / 2 ** 31 - 0.5) / Math.sqrt(dimension / 12);
  }
  const writer = await IxfiWriter.open(file, { dimension, rows, description: { benchmark: 'index-load' }, restart: true });
  for (let done = 0; done < rows; done += BLOCK_ROWS) await writer.append(block.subarray(0, Math.min(BLOCK_ROWS, rows - done) * dimension));
  await writer.finish();
}

/** Reads the whole file into one allocation, as FAISS does, without parsing anything. */
async function rawRead(file: string, size: number): Promise<number> {
  const start = process.hrtime.bigint();
  const handle = await open(file, 'r');
  const buffer = Buffer.allocUnsafe(size);
  try {
    for (let position = 0; position < size; ) {
      const { bytesRead } = await handle.read(buffer, position, Math.min(size - position, 1 << 30), position);
      position += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return seconds(start);
}

/** Resident memory of this process and its children (each index lives in a faiss host process), in GB. */
async function rssGB(): Promise<number> {
  collectGarbage();
  await sleep(500);
  let kB = 0;
  for (const entry of await readdir('/proc')) {
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const parent = Number(/PPid:\s+(\d+)/.exec(status)?.[1]);
    if (Number(entry) === process.pid || parent === process.pid) kB += Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  }
  return kB / 1e6;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, dimension: { type: 'string', default: '768' } } });
  const rows = Number(values.rows);
  const dimension = Number(values.dimension);
  await mkdir(workDir, { recursive: true });
  const file = path.join(workDir, `flat-${rows}x${dimension}.index`);
  const size = ixfiFileBytes({ dimension, rows });
  if ((await stat(file).catch(() => undefined))?.size !== size) {
    console.log(`generating ${file} ...`);
    await generateIndex(file, rows, dimension);
  }

  // Warm the page cache so both loads read from memory.
  const small = path.join(workDir, 'flat-warmup.index');
  await generateIndex(small, 10, dimension);
  await rawRead(file, size);
  const rawSeconds = await rawRead(file, size);

  const rssBefore = await rssGB();
  // Searches on an index already serving must go on while the next one loads (hot swap).
  const active = await FaissIndex.open(small);
  const probe = new Float32Array(dimension).fill(1 / Math.sqrt(dimension));
  let loading = true;
  let worstSearchMsDuringLoad = 0;
  let searchesDuringLoad = 0;
  const start = process.hrtime.bigint();
  const opening = FaissIndex.open(file, { expectDimension: dimension, expectRows: rows }).finally(() => (loading = false));
  while (loading) {
    const searchStart = process.hrtime.bigint();
    await active.nearest(probe, 3);
    worstSearchMsDuringLoad = Math.max(worstSearchMsDuringLoad, seconds(searchStart) * 1000);
    searchesDuringLoad++;
    await sleep(20);
  }
  const index = await opening;
  const loadSeconds = seconds(start);
  await active.close();
  const rssLoaded = await rssGB();
  // FAISS scans the index once per query below 20 queries and uses one BLAS product from 20 on.
  const searchSeconds: Record<string, number> = {};
  for (const queries of [8, 64]) {
    const vectors = new Float32Array(queries * dimension).map((_, i) => Math.sin(i));
    const searchStart = process.hrtime.bigint();
    await index.nearest(vectors, 3);
    searchSeconds[queries] = seconds(searchStart);
  }
  await index.close();
  const rssClosed = await rssGB();
  const rawAgainSeconds = await rawRead(file, size);
  const baseline = Math.min(rawSeconds, rawAgainSeconds);

  const results = {
    rows,
    dimension,
    fileBytes: size,
    rawReadSeconds: baseline,
    rawReadGBps: size / GB / baseline,
    flatIndexLoadSeconds: loadSeconds,
    flatIndexLoadGBps: size / GB / loadSeconds,
    loadToRawRatio: loadSeconds / baseline,
    searchTop3Seconds: searchSeconds,
    searchesOnActiveIndexDuringLoad: searchesDuringLoad,
    worstSearchMsDuringLoad,
    rssGB: { beforeLoad: rssBefore, loaded: rssLoaded, afterClose: rssClosed },
    openblasThreads: process.env.OPENBLAS_NUM_THREADS,
  };
  await report(rows === 1_000_000 && dimension === 768 ? 'index-load' : `index-load-${rows}x${dimension}`, [
    { measure: 'index file', value: `${rows} × ${dimension} fp32, ${(size / GB).toFixed(2)} GB` },
    { measure: 'raw read into one buffer (baseline, page cache warm)', value: `${baseline.toFixed(2)} s (${results.rawReadGBps.toFixed(2)} GB/s)` },
    { measure: 'FaissIndex.open (header check, host process start, IndexFlatIP.read)', value: `${loadSeconds.toFixed(2)} s (${results.flatIndexLoadGBps.toFixed(2)} GB/s)` },
    { measure: 'load time / raw read time', value: results.loadToRawRatio.toFixed(2) },
    { measure: 'searches on an already loaded index during that load', value: `${searchesDuringLoad}, worst ${worstSearchMsDuringLoad.toFixed(0)} ms` },
    ...Object.entries(searchSeconds).map(([queries, time]) => ({ measure: `search ${queries} queries, top 3`, value: `${time.toFixed(2)} s (${((time / Number(queries)) * 1000).toFixed(0)} ms per query)` })),
    { measure: 'RSS of this process + faiss hosts: before load / loaded / after close', value: `${rssBefore.toFixed(2)} / ${rssLoaded.toFixed(2)} / ${rssClosed.toFixed(2)} GB` },
  ], results);
}

await main();
