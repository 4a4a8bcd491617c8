/**
 * merge-index against the least a merge can cost: `cat` of the same part files into one file,
 * synced, in the same run. The merge runs in a child process so its peak RSS is its own, which
 * shows the vectors stream through instead of being held.
 * `node dist/benchmarks/merge-index.js [--gb 1] [--parts 4]`
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pathExists } from '../src/file-io.js';
import { partDescription, partTrailer } from '../src/index/index-part.js';
import { IxfiWriter } from '../src/index/ixfi-writer.js';
import { mergeIndexParts } from '../src/index/merge-index.js';
import { selectedRows } from '../src/index/row-range.js';
import { report, seconds, workDir } from './bench-report.js';

const DIMENSION = 768;
const MB = 1e6;
const ROUNDS = 3;

/** Part `index` of `count` over `corpusRows` rows of random bytes: copying does not look at the values. */
async function writePart(file: string, index: number, count: number, corpusRows: number): Promise<void> {
  const rows = selectedRows({ shard: { index, count } }, corpusRows);
  const description = partDescription({
    rows,
    corpusRows,
    dimension: DIMENSION,
    encoder: { name: 'benchmark', dimension: DIMENSION },
    corpus: { size: corpusRows, mtimeMs: 0, fingerprint: 'benchmark' },
  });
  const writer = await IxfiWriter.open(file, { dimension: DIMENSION, rows: rows.end - rows.start, description, restart: true, trailer: partTrailer(description) });
  const block = new Float32Array(16_384 * DIMENSION);
  for (let done = 0; done < rows.end - rows.start; done += 16_384) {
    const batch = block.subarray(0, Math.min(16_384, rows.end - rows.start - done) * DIMENSION);
    randomFillSync(batch);
    await writer.append(batch);
  }
  await writer.finish();
}

async function measureMerge(outPath: string, partPaths: string[]): Promise<void> {
  const start = process.hrtime.bigint();
  await mergeIndexParts({ partPaths, outPath });
  console.log(JSON.stringify({ seconds: seconds(start), maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
}

/** Into a new file, as the merge writes one: overwriting a cached file costs other work than creating one. */
async function catAndSync(outPath: string, partPaths: string[]): Promise<number> {
  await rm(outPath, { force: true });
  const start = process.hrtime.bigint();
  execFileSync('sh', ['-c', 'out="$1"; shift; cat "$@" > "$out" && sync "$out"', 'sh', outPath, ...partPaths]);
  return seconds(start);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { gb: { type: 'string', default: '1' }, parts: { type: 'string', default: '4' }, 'measure-merge': { type: 'string', multiple: true } } });
  if (values['measure-merge']) {
    const [outPath, ...partPaths] = values['measure-merge'];
    return measureMerge(outPath!, partPaths);
  }
  const count = Number(values.parts);
  const corpusRows = Math.floor((Number(values.gb) * 1e9) / (DIMENSION * 4));
  const dir = path.join(workDir, `merge-index-${values.gb}gb-${count}`);
  await mkdir(dir, { recursive: true });
  const partPaths = Array.from({ length: count }, (_, index) => path.join(dir, `part-${index}-of-${count}`));
  for (const [index, file] of partPaths.entries()) if (!(await pathExists(file))) await writePart(file, index, count, corpusRows);

  const catPath = path.join(dir, 'cat.out');
  const mergedPath = path.join(dir, 'merged_Flat.index');
  // The first pass warms the page cache, so both read the parts from memory; then turns alternate,
  // and the best of each is compared (other work on the shared box only ever slows a turn down).
  await catAndSync(catPath, partPaths);
  const catSeconds: number[] = [];
  const merges: Array<{ seconds: number; maxRssBytes: number }> = [];
  const mergeArgs = [mergedPath, ...partPaths].flatMap((file) => ['--measure-merge', file]);
  for (let round = 0; round < ROUNDS; round++) {
    catSeconds.push(await catAndSync(catPath, partPaths));
    await rm(mergedPath, { force: true });
    merges.push(JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), ...mergeArgs], { encoding: 'utf8' }).trim()));
  }
  const baseline = Math.min(...catSeconds);
  const merge = { seconds: Math.min(...merges.map((m) => m.seconds)), maxRssBytes: Math.max(...merges.map((m) => m.maxRssBytes)) };
  const { size } = await stat(mergedPath);
  await rm(catPath);
  await rm(mergedPath);

  const results = {
    parts: count,
    rows: corpusRows,
    mergedBytes: size,
    catAndSyncSeconds: catSeconds,
    mergeSeconds: merges.map((m) => m.seconds),
    mergeToCatTime: merge.seconds / baseline,
    mergeMBps: size / MB / merge.seconds,
    catMBps: size / MB / baseline,
    mergePeakRssBytes: merge.maxRssBytes,
  };
  await report(`merge-index-${values.gb}gb`, [
    { measure: 'index', value: `${corpusRows} rows × ${DIMENSION} in ${count} parts, ${(size / MB).toFixed(0)} MB` },
    { measure: `cat parts > out && sync (baseline, best of ${ROUNDS})`, value: `${baseline.toFixed(2)} s (${results.catMBps.toFixed(0)} MB/s)` },
    { measure: `merge-index (checks, copy, sync, rename; best of ${ROUNDS})`, value: `${merge.seconds.toFixed(2)} s (${results.mergeMBps.toFixed(0)} MB/s)` },
    { measure: 'merge time / cat time', value: results.mergeToCatTime.toFixed(2) },
    { measure: 'merge process peak RSS (largest of the runs)', value: `${(merge.maxRssBytes / MB).toFixed(0)} MB for ${(size / MB).toFixed(0)} MB of vectors` },
  ], results);
}

await main();
