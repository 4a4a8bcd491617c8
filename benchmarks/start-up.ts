/**
 * Start-up of `serve` at wiki18 scale on this host: a real child process over a sparse IxFI file of
 * `rows × 768` (a valid header, zeros that take no disk) and a corpus of as many one-word rows,
 * with the e5-base-shaped generated encoder. Per run: when each `/ready` stage began (corpus
 * offsets sidecar build, encoder, index open, warm-up), time to `/ready` 200 or to the refusal,
 * one query's time, and the process's resident memory split into file-backed and anonymous.
 * Cold runs drop the page cache first where the kernel lets us (`/proc/sys/vm/drop_caches`) and
 * delete the corpus offsets sidecar; warm runs follow at once.
 * `node dist/benchmarks/start-up.js [--rows 1000000,6000000,21015324] [--stream-budget 70gb]`
 *
 * Sparse holes read as zeros without touching the disk, so "cold" here costs page-cache fills,
 * not disk reads: a real index file adds its read at the disk's speed (benchmarks/index-load.ts).
 */
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { writeSparseIndex } from '../test/support/index-fixtures.js';
import { CLI_PATH } from '../test/support/sample-data.js';
import { report, seconds, workDir, type Row } from './bench-report.js';

const DIMENSION = 768;
const GB = 1e9;

/** A corpus of `rows` short rows, written once and kept: the sidecar build scans it. */
async function corpusOf(rows: number): Promise<string> {
  const file = path.join(workDir, `start-up-${rows}.jsonl`);
  if ((await stat(file).catch(() => undefined)) !== undefined) return file;
  const out = await open(`${file}.partial`, 'w');
  const block = 100_000;
  for (let first = 0; first < rows; first += block) {
    let text = '';
    for (let row = first; row < Math.min(rows, first + block); row++) text += `{"id": "${row}", "contents": "row ${row}"}\n`;
    await out.write(text);
  }
  await out.close();
  await rename(`${file}.partial`, file);
  return file;
}

function dropPageCache(): boolean {
  try {
    execFileSync('sync');
    execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function memoryOf(pid: number): Promise<{ rssFileGB: number; rssAnonGB: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kB = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rssFileGB: (kB('RssFile') * 1024) / GB, rssAnonGB: (kB('RssAnon') * 1024) / GB };
}

interface Run {
  rows: number;
  cache: 'cold' | 'warm';
  budget?: string;
  /** Seconds from spawn to the first `/ready` body naming each stage. */
  stages: Record<string, number>;
  readySeconds?: number;
  refusal?: { seconds: number; message: string };
  oneQuerySeconds?: number;
  memory?: { rssFileGB: number; rssAnonGB: number };
}

async function serveOnce(model: string, index: string, corpus: string, rows: number, cache: Run['cache'], budget?: string): Promise<Run> {
  const start = process.hrtime.bigint();
  const child = spawn(process.execPath, [
    CLI_PATH,
    'serve',
    ...['--retriever_model', model, '--index_path', index, '--corpus_path', corpus, '--device', 'cpu'],
    ...['--host', '127.0.0.1', '--port', '0'],
    ...(budget ? ['--search_memory_budget', budget] : []),
  ]);
  child.stderr.resume();
  const run: Run = { rows, cache, ...(budget && { budget }), stages: {} };
  let port: number | undefined;
  const exited = once(child, 'exit');
  let done = false;
  void exited.then(() => (done = true));
  createInterface({ input: child.stdout }).on('line', (text) => {
    const line = JSON.parse(text) as { msg: string; port?: number };
    if (line.port !== undefined) port = line.port;
    if (line.msg.startsWith('the retriever failed to load: ')) run.refusal = { seconds: seconds(start), message: line.msg };
  });
  while (!done) {
    if (port !== undefined) {
      const response = await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined);
      const body = (await response?.json().catch(() => undefined)) as { ready: boolean; stage: string } | undefined;
      if (body && !(body.stage in run.stages)) run.stages[body.stage] = seconds(start);
      if (body?.ready) {
        run.readySeconds = seconds(start);
        run.memory = await memoryOf(child.pid!);
        const queryStart = process.hrtime.bigint();
        await fetch(`http://127.0.0.1:${port}/retrieve`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ queries: ['who wrote hamlet?'], topk: 3 }) });
        run.oneQuerySeconds = seconds(queryStart);
        child.kill('SIGTERM');
        break;
      }
    }
    await sleep(100);
  }
  await exited;
  return run;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '1000000,6000000,21015324' },
      model: { type: 'string', default: path.join(workDir, 'e5-base-startup') },
      'stream-budget': { type: 'string', default: '' },
    },
  });
  await mkdir(workDir, { recursive: true });
  const dropped = dropPageCache();
  const runs: Run[] = [];
  for (const rows of values.rows.split(',').map(Number)) {
    const corpus = await corpusOf(rows);
    const index = path.join(workDir, `start-up-sparse-${rows}x${DIMENSION}.index`);
    await writeSparseIndex(index, { dimension: DIMENSION, rows });
    await rm(`${corpus}.offsets`, { force: true });
    dropPageCache();
    const cold = await serveOnce(values.model, index, corpus, rows, 'cold');
    runs.push(cold, await serveOnce(values.model, index, corpus, rows, 'warm'));
    // Refused for want of memory: what mapping it anyway costs, once, if asked.
    if (cold.refusal && values['stream-budget']) runs.push(await serveOnce(values.model, index, corpus, rows, 'warm', values['stream-budget']));
    await rm(index, { force: true });
  }
  const stageSpan = (run: Run, from: string, to: string) => {
    const [a, b] = [run.stages[from], to === 'ready' ? run.readySeconds : run.stages[to]];
    return a !== undefined && b !== undefined ? (b - a).toFixed(1) : '—';
  };
  const rowsOut: Row[] = runs.map((run) => ({
    rows: run.rows,
    'index file': `${((run.rows * DIMENSION * 4) / GB).toFixed(1)} GB`,
    cache: run.cache + (run.budget ? ` (--search_memory_budget ${run.budget})` : ''),
    'corpus (sidecar build on cold)': stageSpan(run, 'corpus', 'encoder'),
    encoder: stageSpan(run, 'encoder', 'index'),
    'index open': stageSpan(run, 'index', 'warm-up'),
    'warm-up': stageSpan(run, 'warm-up', 'ready'),
    'to /ready': run.readySeconds?.toFixed(1) ?? `refused at ${run.refusal?.seconds.toFixed(1)} s`,
    'one query': run.oneQuerySeconds?.toFixed(2) ?? '—',
    'RssFile / RssAnon GB': run.memory ? `${run.memory.rssFileGB.toFixed(1)} / ${run.memory.rssAnonGB.toFixed(1)}` : '—',
  }));
  await report('start-up', rowsOut, { dimension: DIMENSION, pageCacheDropped: dropped, runs });
}

await main();
