/**
 * A large training ingest and a large training store's start-up, measured for what other requests
 * see: the event loop's longest stall (perf_hooks monitorEventLoopDelay), /health round trips
 * during the work, and resident memory before, at peak and after (after a full GC).
 * `node --expose-gc dist/benchmarks/training-ingest.js [--records 200000]`
 *
 * Each phase runs in its own child process, so peaks do not carry over:
 * - `whole` (the baseline, the old route's algorithm): the body decoded to one string, every line
 *   parsed and validated, then one append of all records and one report serialised at once;
 * - `sliced` (the route now): the same body POSTed to the real training router on a real port;
 * - `load`: the store `sliced` wrote, opened in the background while /health is probed.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, Agent } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import express from 'express';
import { CorpusStore } from '../src/corpus/corpus-store.js';
import { writeFully } from '../src/file-io.js';
import { errorHandler } from '../src/http/errors.js';
import { trainingRouter } from '../src/http/training-routes.js';
import { createLogger } from '../src/log.js';
import { validateRecord } from '../src/training/record.js';
import { LoadingTrainingStore } from '../src/training/store-loading.js';
import { TrainingExampleStore } from '../src/training/store.js';
import { SAMPLE_CORPUS } from '../test/support/sample-data.js';
import { makeRecord, SAMPLE_ROWS } from '../test/support/training-fixtures.js';
import { report, workDir } from './bench-report.js';

const MiB = 2 ** 20;
const HEALTH_PROBE_MS = 20;

interface PhaseResult {
  phase: string;
  seconds: number;
  maxEventLoopDelayMs: number;
  p99EventLoopDelayMs: number;
  healthAnswered: number;
  maxHealthMs: number;
  rssBeforeMiB: number;
  rssPeakMiB: number;
  rssAfterMiB: number;
  /** Of `rssAfterMiB`: Buffers still alive, and V8's heap. */
  arrayBuffersAfterMiB: number;
  heapAfterMiB: number;
  accepted: number;
}

/** Records of about 720 bytes, like the reporter's: a 16-passage record with some history. */
async function writeBody(file: string, records: number): Promise<number> {
  const out = await open(file, 'w');
  let written = 0;
  try {
    for (let start = 0; start < records; start += 10_000) {
      const lines: string[] = [];
      for (let i = start; i < Math.min(records, start + 10_000); i += 1) {
        const history = Array.from({ length: i % 4 }, (_, h) => `earlier search ${h} about topic ${i}`);
        lines.push(JSON.stringify(makeRecord({ query_id: `bench-${i}`, history_queries: history, question: `Question ${i}: which city hosts the cathedral that was rebuilt after the fire?` }, i % 900)));
      }
      const block = Buffer.from(`${lines.join('\n')}\n`);
      await writeFully(out, block, written);
      written += block.length;
    }
  } finally {
    await out.close();
  }
  return written;
}

function rssMiB(): number {
  return process.memoryUsage().rss / MiB;
}

async function rssAfterGc(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  for (let i = 0; i < 3; i += 1) {
    gc();
    await sleep(200);
  }
  return rssMiB();
}

/** /health on `url`, asked every HEALTH_PROBE_MS until stopped: how many answered and the slowest. */
function probeHealth(url: string): () => Promise<{ answered: number; maxMs: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let answered = 0;
  let maxMs = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const start = performance.now();
      await new Promise<void>((resolve, reject) => {
        httpRequest(`${url}/health`, { agent }, (res) => res.resume().on('end', resolve)).on('error', reject).end();
      });
      answered += 1;
      maxMs = Math.max(maxMs, performance.now() - start);
      await sleep(HEALTH_PROBE_MS);
    }
  })();
  return async () => {
    running = false;
    await loop;
    agent.destroy();
    return { answered, maxMs };
  };
}

/** A real app with /health and the training routes, on a real port. */
async function serveTraining(store: () => TrainingExampleStore, corpus: CorpusStore) {
  const app = express();
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.use(trainingRouter({ store, corpus: () => corpus, allowUnauthenticated: true }));
  app.use(errorHandler(createLogger({ logLevel: 'error', logQueries: false })));
  const server = createServer(app).listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function post(url: string, body: Buffer): Promise<{ accepted: number }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/training/examples`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`ingest answered ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 300)}`));
        resolve(JSON.parse(Buffer.concat(chunks).toString()) as { accepted: number });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Runs `work` with the event loop monitored and /health probed on `url` (when given). */
async function measure(phase: string, url: string | undefined, work: () => Promise<number>): Promise<PhaseResult> {
  const rssBeforeMiB = rssMiB();
  const monitor = monitorEventLoopDelay({ resolution: 10 });
  const stopProbe = url ? probeHealth(url) : undefined;
  monitor.enable();
  // The monitor drops its first interval: without a tick first, a stall right away goes unseen.
  await sleep(50);
  const start = performance.now();
  const accepted = await work();
  const seconds = (performance.now() - start) / 1000;
  monitor.disable();
  const health = (await stopProbe?.()) ?? { answered: 0, maxMs: 0 };
  return {
    phase,
    seconds,
    maxEventLoopDelayMs: monitor.max / 1e6,
    p99EventLoopDelayMs: monitor.percentile(99) / 1e6,
    healthAnswered: health.answered,
    maxHealthMs: health.maxMs,
    rssBeforeMiB,
    rssPeakMiB: (process.resourceUsage().maxRSS * 1024) / MiB,
    rssAfterMiB: 0,
    arrayBuffersAfterMiB: 0,
    heapAfterMiB: 0,
    accepted,
  };
}

async function runPhase(phase: string, bodyFile: string, storeDir: string): Promise<PhaseResult> {
  const corpus = await CorpusStore.open(SAMPLE_CORPUS, { sidecarPath: path.join(workDir, 'training-ingest-corpus.offsets') });
  let result: PhaseResult;
  if (phase === 'load') {
    let loading: LoadingTrainingStore | undefined;
    const { server, url } = await serveTraining(() => loading!.current(), corpus);
    result = await measure(phase, url, async () => {
      loading = new LoadingTrainingStore(storeDir);
      return (await loading.loaded).stats().records;
    });
    await loading!.close();
    server.close();
  } else {
    const store = await TrainingExampleStore.open(storeDir);
    let body: Buffer | undefined = await readFile(bodyFile);
    if (phase === 'whole') {
      // The old route's steps, synchronous up to the one append; no server: nothing could answer.
      result = await measure(phase, undefined, async () => {
        const values = body!.toString('utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as unknown);
        const records = values.map((value) => validateRecord(value, SAMPLE_ROWS));
        const outcomes = await store.append(records);
        const results = outcomes.map((status, index) => ({ index, line: index + 1, status }));
        JSON.stringify({ received: values.length, results });
        return outcomes.filter((outcome) => outcome === 'accepted').length;
      });
    } else {
      const { server, url } = await serveTraining(() => store, corpus);
      result = await measure(phase, url, async () => (await post(url, body!)).accepted);
      server.close();
    }
    body = undefined;
    await store.close();
  }
  await corpus.close();
  result.rssAfterMiB = await rssAfterGc();
  const { arrayBuffers, heapTotal } = process.memoryUsage();
  result.arrayBuffersAfterMiB = arrayBuffers / MiB;
  result.heapAfterMiB = heapTotal / MiB;
  return result;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { records: { type: 'string', default: '200000' }, phase: { type: 'string' } } });
  const records = Number(values.records);
  const bodyFile = path.join(workDir, 'training-ingest-body.jsonl');
  const storeDir = (phase: string) => path.join(workDir, `training-ingest-store-${phase}`);
  if (values.phase) {
    process.stdout.write(`${JSON.stringify(await runPhase(values.phase, bodyFile, storeDir(values.phase === 'load' ? 'sliced' : values.phase)))}\n`);
    return;
  }
  await mkdir(workDir, { recursive: true });
  const bytes = await writeBody(bodyFile, records);
  const self = fileURLToPath(import.meta.url);
  const results: PhaseResult[] = [];
  for (const phase of ['whole', 'sliced', 'load']) {
    if (phase !== 'load') await rm(storeDir(phase), { recursive: true, force: true });
    const out = execFileSync(process.execPath, ['--expose-gc', self, '--phase', phase, '--records', String(records)], { encoding: 'utf8', maxBuffer: 16 * MiB });
    results.push(JSON.parse(out.trim().split('\n').pop()!) as PhaseResult);
    console.error(`${phase}: ${JSON.stringify(results.at(-1))}`);
  }
  const [whole, sliced] = results as [PhaseResult, PhaseResult, PhaseResult];
  const round = (n: number) => Math.round(n * 10) / 10;
  await report(
    'training-ingest',
    results.map((r) => ({
      phase: r.phase,
      records: r.accepted,
      's': round(r.seconds),
      'max event-loop delay ms': round(r.maxEventLoopDelayMs),
      'p99 event-loop delay ms': round(r.p99EventLoopDelayMs),
      '/health answered': r.healthAnswered,
      'slowest /health ms': round(r.maxHealthMs),
      'RSS before MiB': Math.round(r.rssBeforeMiB),
      'RSS peak MiB': Math.round(r.rssPeakMiB),
      'RSS after GC MiB': Math.round(r.rssAfterMiB),
    })),
    {
      records,
      bodyMiB: bytes / MiB,
      phases: results,
      ratios: {
        maxEventLoopDelayWholeOverSliced: whole.maxEventLoopDelayMs / sliced.maxEventLoopDelayMs,
        peakRssWholeOverSliced: whole.rssPeakMiB / sliced.rssPeakMiB,
        durationSlicedOverWhole: sliced.seconds / whole.seconds,
      },
    },
  );
  for (const leftover of [storeDir('whole'), storeDir('sliced'), bodyFile]) await rm(leftover, { recursive: true, force: true });
}

await main();
