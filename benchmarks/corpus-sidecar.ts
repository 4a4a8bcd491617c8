/**
 * Corpus offsets sidecar: build speed against a raw sequential read of the same file, reopen
 * time with a valid sidecar, memory per million rows, and random row fetches.
 * `node dist/benchmarks/corpus-sidecar.js [--gb 1]`
 */
import { execFileSync } from 'node:child_process';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CorpusStore } from '../src/corpus/corpus-store.js';
import { report, seconds, workDir } from './bench-report.js';
import { generateWiki18Like } from './wiki18-like.js';

const MB = 1e6;

async function rawSequentialRead(file: string): Promise<number> {
  const handle = await open(file, 'r');
  const chunk = Buffer.allocUnsafe(16 * 1024 * 1024);
  const start = process.hrtime.bigint();
  try {
    let position = 0;
    for (let bytesRead = 1; bytesRead > 0; position += bytesRead) ({ bytesRead } = await handle.read(chunk, 0, chunk.length, position));
  } finally {
    await handle.close();
  }
  return seconds(start);
}

/** Run in a fresh child so nothing else this script allocated shows up in its RSS. */
async function measureOpenMemory(corpusPath: string): Promise<void> {
  const before = process.memoryUsage();
  const start = process.hrtime.bigint();
  const corpus = await CorpusStore.open(corpusPath);
  const openSeconds = seconds(start);
  const after = process.memoryUsage();
  console.log(JSON.stringify({ rows: corpus.rows, rebuilt: corpus.sidecarRebuilt, openSeconds, rssBytes: after.rss - before.rss, arrayBufferBytes: after.arrayBuffers - before.arrayBuffers }));
  await corpus.close();
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { gb: { type: 'string', default: '1' }, 'measure-open': { type: 'string' } } });
  if (values['measure-open']) return measureOpenMemory(values['measure-open']);

  await mkdir(workDir, { recursive: true });
  const targetBytes = Number(values.gb) * 1e9;
  const corpusPath = path.join(workDir, `wiki18-like-${values.gb}gb.jsonl`);
  const existing = await stat(corpusPath).catch(() => undefined);
  if (!existing || existing.size < targetBytes) {
    console.log(`generating ${corpusPath} ...`);
    await generateWiki18Like(corpusPath, targetBytes);
  }
  const { size } = await stat(corpusPath);
  const sidecarPath = `${corpusPath}.offsets`;

  // The first read warms the page cache, so build and baseline both read from memory.
  await rawSequentialRead(corpusPath);
  const rawSeconds = await rawSequentialRead(corpusPath);
  await rm(sidecarPath, { force: true });
  let start = process.hrtime.bigint();
  const built = await CorpusStore.open(corpusPath);
  const buildSeconds = seconds(start);
  const rows = built.rows;
  await built.close();
  const rawAgainSeconds = await rawSequentialRead(corpusPath);
  const baselineSeconds = Math.min(rawSeconds, rawAgainSeconds);

  const child = JSON.parse(
    execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--measure-open', corpusPath], { encoding: 'utf8' }).trim().split('\n').at(-1)!,
  ) as { rows: number; rebuilt: boolean; openSeconds: number; rssBytes: number; arrayBufferBytes: number };
  if (child.rebuilt) throw new Error('the reopen rebuilt the sidecar');

  const corpus = await CorpusStore.open(corpusPath);
  const fetchBatch = Array.from({ length: 1536 }, (_, i) => Math.floor(((i * 2654435761) % 2 ** 32) / 2 ** 32 * rows));
  await corpus.readRows(fetchBatch);
  const fetchRounds = 20;
  start = process.hrtime.bigint();
  for (let round = 0; round < fetchRounds; round++) await corpus.readRows(fetchBatch.map((row) => (row + round * 7919) % rows));
  const fetchMs = (seconds(start) / fetchRounds) * 1000;
  await corpus.close();

  const perMillion = (bytes: number): number => bytes / (rows / 1e6) / MB;
  const results = {
    corpusBytes: size,
    rows,
    rawReadMBps: size / MB / baselineSeconds,
    sidecarBuildMBps: size / MB / buildSeconds,
    buildToRawRatio: baselineSeconds / buildSeconds,
    sidecarBuildSeconds: buildSeconds,
    reopenWithSidecarSeconds: child.openSeconds,
    reopenExtrapolatedTo21MRowsSeconds: (child.openSeconds * 21_015_324) / rows,
    rssMBPerMillionRows: perMillion(child.rssBytes),
    arrayBufferMBPerMillionRows: perMillion(child.arrayBufferBytes),
    fetch1536RandomRowsMs: fetchMs,
  };
  await report(values.gb === '1' ? 'corpus-sidecar' : `corpus-sidecar-${values.gb}gb`, [
    { measure: 'corpus', value: `${(size / MB).toFixed(0)} MB, ${rows} rows` },
    { measure: 'raw sequential read (baseline, page cache warm)', value: `${results.rawReadMBps.toFixed(0)} MB/s` },
    { measure: 'sidecar build (scan + write)', value: `${results.sidecarBuildMBps.toFixed(0)} MB/s (${buildSeconds.toFixed(2)} s)` },
    { measure: 'build speed / raw read speed', value: results.buildToRawRatio.toFixed(2) },
    { measure: 'reopen with valid sidecar', value: `${(child.openSeconds * 1000).toFixed(0)} ms (≈${results.reopenExtrapolatedTo21MRowsSeconds.toFixed(1)} s at 21M rows)` },
    { measure: 'RSS added per million rows', value: `${results.rssMBPerMillionRows.toFixed(1)} MB (ArrayBuffers ${results.arrayBufferMBPerMillionRows.toFixed(1)} MB; 8 MB ideal)` },
    { measure: 'fetch 1536 random rows (512 queries × top 3)', value: `${fetchMs.toFixed(1)} ms` },
  ], results);
}

await main();
