/**
 * `/documents` id lookup (CorpusIds) against the obvious baseline, a JS `Map<id, row>` of every
 * row, in the same run, on two wiki18-like corpora of the same rows: one whose ids are row numbers
 * (wiki18's, FlashRAG's), one with another id scheme (`doc-<base36>`). Measured: memory held (for
 * CorpusIds its exceptions array, 8 bytes each, exactly; for the Map the heap it adds, after a full
 * GC), the one-time scan and its sidecar, the reopen from the sidecar, and the lookup and fetch of
 * 4096 random ids (the `--max_queries` bound of one request).
 *
 *   node --expose-gc dist/benchmarks/corpus-ids.js [--rows 1000000]
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CorpusIds } from '../src/corpus/corpus-ids.js';
import { CorpusStore } from '../src/corpus/corpus-store.js';
import { report, seconds, workDir, type Row } from './bench-report.js';
import { generateWiki18Like } from './wiki18-like.js';

const MB = 2 ** 20;
const WIKI18_ROWS = 21_015_324;
const LOOKUPS = 4096;
/** The sample's passages average about 660 bytes a line. */
const BYTES_PER_ROW = 660;

function heldBytes(): number {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with node --expose-gc, so the memory held is measured after a full GC');
  collect();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

interface Measured {
  scheme: string;
  rows: number;
  lookupMs: number;
  firstScanSeconds: number;
  heldBytes: number;
  sidecarBytes: number;
  reopenFromSidecarMs: number;
  mapBuildSeconds: number;
  mapHeldBytes: number;
  mapLookupMs: number;
}

async function measure(scheme: string, corpusPath: string, idOf: (row: number) => string): Promise<Measured> {
  const store = await CorpusStore.open(corpusPath);
  const rows = store.rows;
  const asked = Array.from({ length: LOOKUPS }, (_, i) => idOf(Math.floor((((i * 2654435761) % 2 ** 32) / 2 ** 32) * rows)));
  const idsPath = `${corpusPath}.ids`;
  await rm(idsPath, { force: true });

  // CorpusIds: a first lookup, then the one timed (rows come from the page cache either way).
  const lookup = new CorpusIds(store);
  let start = process.hrtime.bigint();
  const found = await lookup.find(asked);
  const firstLookupSeconds = seconds(start);
  if (found.some((row, at) => row?.id !== asked[at])) throw new Error(`${scheme}: a lookup answered the wrong row`);
  start = process.hrtime.bigint();
  await lookup.find(asked);
  const lookupMs = seconds(start) * 1000;
  // An id no row has: answered from the exceptions, which a first miss scans for.
  start = process.hrtime.bigint();
  await lookup.find(['no-such-id']);
  const missSeconds = seconds(start);
  // Exact: all a CorpusIds holds is its BigUint64Array of exceptions.
  const held = (await lookup.exceptionCount()) * 8;
  const sidecarBytes = (await stat(idsPath)).size;

  const reopened = await CorpusStore.open(corpusPath);
  start = process.hrtime.bigint();
  await new CorpusIds(reopened).find(['no-such-id']);
  const reopenFromSidecarMs = seconds(start) * 1000;
  await reopened.close();

  // Baseline: every id in a Map, built from the same sequential read.
  const beforeMap = heldBytes();
  start = process.hrtime.bigint();
  const map = new Map<string, number>();
  let row = 0;
  for await (const { id } of store.rowsInOrder()) map.set(id, row++);
  const mapBuildSeconds = seconds(start);
  const mapHeldBytes = heldBytes() - beforeMap;
  start = process.hrtime.bigint();
  await store.readRows(asked.map((id) => map.get(id)!));
  const mapLookupMs = seconds(start) * 1000;
  await store.close();
  return {
    scheme,
    rows,
    lookupMs,
    // The first scan is whichever lookup first needed the exceptions.
    firstScanSeconds: scheme === 'row numbers' ? missSeconds : firstLookupSeconds,
    heldBytes: held,
    sidecarBytes,
    reopenFromSidecarMs,
    mapBuildSeconds,
    mapHeldBytes,
    mapLookupMs,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' } } });
  const rows = Number(values.rows);
  await mkdir(workDir, { recursive: true });
  const schemes: [string, (row: number) => string][] = [
    ['row numbers', String],
    ['doc-<base36>', (row) => `doc-${row.toString(36)}`],
  ];
  const measured: Measured[] = [];
  for (const [scheme, idOf] of schemes) {
    const corpusPath = path.join(workDir, `corpus-ids-${scheme === 'row numbers' ? 'rows' : 'named'}-${rows}.jsonl`);
    await generateWiki18Like(corpusPath, rows * BYTES_PER_ROW, idOf);
    measured.push(await measure(scheme, corpusPath, idOf));
    await rm(corpusPath, { force: true });
    await rm(`${corpusPath}.offsets`, { force: true });
    await rm(`${corpusPath}.ids`, { force: true });
  }
  const table: Row[] = measured.map((m) => ({
    ids: m.scheme,
    rows: m.rows,
    'held by CorpusIds': `${(m.heldBytes / MB).toFixed(1)} MiB`,
    'held by a Map (baseline)': `${(m.mapHeldBytes / MB).toFixed(1)} MiB`,
    'at 21M rows: CorpusIds / Map': `${((m.heldBytes / m.rows) * WIKI18_ROWS / MB).toFixed(0)} / ${((m.mapHeldBytes / m.rows) * WIKI18_ROWS / MB).toFixed(0)} MiB`,
    'first scan': `${m.firstScanSeconds.toFixed(2)} s (Map build ${m.mapBuildSeconds.toFixed(2)} s)`,
    sidecar: `${(m.sidecarBytes / MB).toFixed(2)} MiB, reopen ${m.reopenFromSidecarMs.toFixed(1)} ms`,
    [`${LOOKUPS} lookups`]: `${m.lookupMs.toFixed(1)} ms (Map ${m.mapLookupMs.toFixed(1)} ms)`,
  }));
  await report('corpus-ids', table, { rows, lookups: LOOKUPS, measured });
}

await main();
