/**
 * FlatIndex load time for a 1M × 768 IxFI file against a raw read of the same file, the process's
 * memory before load, after load and after close, and search time at 8 and 64 queries a call.
 * `node dist/benchmarks/index-load.js [--rows 1000000] [--dimension 768]`
 */
import { mkdir, open, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { openFlatIndex } from '../src/index/flat-index.js';
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

/** Resident memory of the whole process (the faiss worker shares it), in GB, once freed memory is returned. */
async function rssGB(): Promise<number> {
  collectGarbage();
  // Native finalizers of collected wrappers may run a tick later.
  await sleep(500);
  return process.memoryUsage.rss() / GB;
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

  // Start the worker and warm the page cache so both loads read from memory.
  const small = path.join(workDir, 'flat-warmup.index');
  await generateIndex(small, 10, dimension);
  await (await openFlatIndex(small)).close();
  await rawRead(file, size);
  const rawSeconds = await rawRead(file, size);

  const rssBefore = await rssGB();
  const start = process.hrtime.bigint();
  const index = await openFlatIndex(file, { expectDimension: dimension, expectRows: rows });
  const loadSeconds = seconds(start);
  const rssLoaded = await rssGB();
  // FAISS scans the index once per query below 20 queries and uses one BLAS product from 20 on.
  const searchSeconds: Record<string, number> = {};
  for (const queries of [8, 64]) {
    const vectors = new Float32Array(queries * dimension).map((_, i) => Math.sin(i));
    const searchStart = process.hrtime.bigint();
    await index.search(vectors, 3);
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
    rssGB: { beforeLoad: rssBefore, loaded: rssLoaded, afterClose: rssClosed },
    openblasThreads: process.env.OPENBLAS_NUM_THREADS,
  };
  await report('index-load', [
    { measure: 'index file', value: `${rows} × ${dimension} fp32, ${(size / GB).toFixed(2)} GB` },
    { measure: 'raw read into one buffer (baseline, page cache warm)', value: `${baseline.toFixed(2)} s (${results.rawReadGBps.toFixed(2)} GB/s)` },
    { measure: 'FlatIndex.open (header check + IndexFlatIP.read in the worker)', value: `${loadSeconds.toFixed(2)} s (${results.flatIndexLoadGBps.toFixed(2)} GB/s)` },
    { measure: 'load time / raw read time', value: results.loadToRawRatio.toFixed(2) },
    ...Object.entries(searchSeconds).map(([queries, time]) => ({ measure: `search ${queries} queries, top 3`, value: `${time.toFixed(2)} s (${((time / Number(queries)) * 1000).toFixed(0)} ms per query)` })),
    { measure: 'process RSS before load / loaded / after close', value: `${rssBefore.toFixed(2)} / ${rssLoaded.toFixed(2)} / ${rssClosed.toFixed(2)} GB` },
  ], results);
}

await main();
