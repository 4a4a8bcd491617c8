/**
 * Latency of `POST /retrieve` while retriever versions are hot-swapped: clients send single-query
 * and 512-query requests in loops over keep-alive sockets; after a quiet phase, a second version
 * is activated and rolled back several times (each through `POST /training/versions/...`), then
 * a quiet phase again. Reported per phase (before / during / after the swaps) and request shape:
 * requests, p50 and p99 latency, non-2xx answers, and answers whose results differ from what the
 * version named in `X-Retriever-Version` returns for those queries (checked for every response).
 * The whole run is made once per swap mode (`--swap_mode side-by-side`, then `replace`), each on a
 * fresh server over the same files, so the serving gap of the two is measured in one run: the
 * longest stretch of the swap phase in which no request completed, and the server's own
 * `pausedMs` (replace: how long no version searched). Clients and server share this process
 * (and the machine's cores), as in the test.
 *
 *   node dist/benchmarks/swap-under-load.js [--preset tiny|demo] [--phase-seconds 8] [--swaps 4]
 *     [--single-clients 3] [--batch-clients 1] [--batch-size 512] [--topk 3] [--search-dtype fp32|fp16]
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { CONFIG_DEFAULTS } from '../src/config.js';
import { isPresetName } from '../src/encoder/presets.js';
import { ActiveRetriever } from '../src/engine/active-retriever.js';
import { createApp } from '../src/http/app.js';
import { versionRouter } from '../src/http/version-routes.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import type { RetrieverFiles } from '../src/engine/retriever.js';
import type { SwapMode } from '../src/index/search-memory.js';
import { INITIAL_VERSION, VersionManager } from '../src/versions/version-manager.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../test/support/retriever-fixture.js';
import { LoadClients, planLoad, type LoadSample } from '../test/support/swap-load.js';
import { temporaryDir } from '../test/support/version-fixtures.js';
import { percentile, report, type Row } from './bench-report.js';

const TOKEN = 'swap-benchmark';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface RunOptions {
  phaseMs: number;
  swaps: number;
  singleClients: number;
  batchClients: number;
  batchSize: number;
  topk: number;
  precision: 'fp32' | 'fp16';
}

interface SwapTime {
  to: string;
  mode: string;
  loadMs: number;
  releaseMs: number;
  pausedMs?: number;
  totalMs: number;
}

/** The longest time between two completed requests (or a window edge and one) inside [from, to]. */
function longestGap(samples: readonly LoadSample[], from: number, to: number): number {
  const ends = samples.map((sample) => sample.sentAt + sample.latencyMs).filter((end) => end >= from && end <= to);
  const edges = [from, ...ends.sort((a, b) => a - b), to];
  return Math.max(...edges.slice(1).map((end, at) => end - edges[at]!));
}

/** One server with `--swap_mode mode`: a quiet phase, `swaps` activations and rollbacks under load, a quiet phase. */
async function runMode(mode: SwapMode, first: RetrieverFiles, second: RetrieverFiles, run: RunOptions) {
  const active = new ActiveRetriever();
  const index = { precision: run.precision };
  const versions = await VersionManager.open({ dataDir: await temporaryDir('benchmark'), active, fp16: false, index, swapMode: mode });
  await versions.restore(first);
  const config = { ...CONFIG_DEFAULTS, host: '127.0.0.1', port: 0 };
  // Request logs are part of serving; only their destination is discarded.
  const logger = createLogger(config, pino.destination('/dev/null'));
  const app = createApp({ service: active, config, logger, extraRouters: [versionRouter({ versions, token: TOKEN })] });
  const running = await startServer(app, config, logger, {
    handleSignals: false,
    close: async () => {
      await versions.close();
      await active.close();
    },
  });
  const admin = async (route: string, body?: unknown) => {
    const response = await fetch(`${running.url}${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const answer = (await response.json()) as Record<string, unknown>;
    if (!response.ok) throw new Error(`${route} answered ${response.status}: ${JSON.stringify(answer)}`);
    return answer;
  };

  try {
    const registered = (await admin('/training/versions', { model_path: second.modelDir, index_path: second.indexPath })) as {
      version: { id: string };
    };
    const other = registered.version.id;
    const shapes = [
      { name: 'single', size: 1, sets: 64 },
      { name: `batch-${run.batchSize}`, size: run.batchSize, sets: 2 },
    ];
    console.log(`[${mode}] computing what each version answers to every request...`);
    const plan = await planLoad({ [INITIAL_VERSION]: first, [other]: second }, first.corpusPath, shapes, run.topk, index);

    const clients = new LoadClients(running.url, plan);
    clients.start('single', run.singleClients);
    clients.start(`batch-${run.batchSize}`, run.batchClients);
    console.log(`[${mode}] load running; quiet phase of ${run.phaseMs / 1000} s...`);
    await sleep(run.phaseMs);
    const swapsStart = clients.now();
    const swapTimes: SwapTime[] = [];
    for (let swap = 0; swap < run.swaps; swap++) {
      const route = swap % 2 === 0 ? `/training/versions/${other}/activate` : '/training/versions/rollback';
      const sent = clients.now();
      const result = (await admin(route)) as { version: { id: string }; loadMs: number; releaseMs: number; pausedMs?: number; swap: { mode: string } };
      const { loadMs, releaseMs, pausedMs } = result;
      swapTimes.push({ to: result.version.id, mode: result.swap.mode, loadMs, releaseMs, ...(pausedMs !== undefined && { pausedMs }), totalMs: clients.now() - sent });
      console.log(`[${mode}] swap ${swap + 1}/${run.swaps}: now serving ${result.version.id}`);
    }
    const swapsEnd = clients.now();
    console.log(`[${mode}] swaps done; quiet phase of ${run.phaseMs / 1000} s...`);
    await sleep(run.phaseMs);
    const samples = await clients.stop();

    const phaseOf = (sample: LoadSample): string =>
      sample.sentAt + sample.latencyMs < swapsStart ? 'before' : sample.sentAt > swapsEnd ? 'after' : 'during';
    const rows: Row[] = [];
    for (const phase of ['before', 'during', 'after']) {
      for (const shape of shapes) {
        const mine = samples.filter((sample) => sample.shape === shape.name && phaseOf(sample) === phase);
        const latencies = mine.map((sample) => sample.latencyMs).sort((a, b) => a - b);
        rows.push({
          mode,
          phase,
          shape: shape.name,
          requests: mine.length,
          'p50 ms': percentile(latencies, 0.5).toFixed(1),
          'p99 ms': percentile(latencies, 0.99).toFixed(1),
          'max ms': (latencies.at(-1) ?? NaN).toFixed(1),
          'status 503': mine.filter((sample) => sample.status === 503).length,
          'other non-2xx': mine.filter((sample) => sample.status !== 503 && (sample.status < 200 || sample.status > 299)).length,
          inconsistent: mine.filter((sample) => sample.status === 200 && !sample.consistent).length,
          versions: [...new Set(mine.map((sample) => sample.version))].sort().join(' '),
        });
      }
    }
    // A 503 with Retry-After is retried by verl; anything else is a failure.
    const failures = samples.filter((sample) => (sample.status === 200 ? !sample.consistent : !(sample.status === 503 && sample.retryAfter !== undefined)));
    const gapMs = longestGap(samples, swapsStart, swapsEnd);
    const quietGapMs = longestGap(samples, 0, swapsStart);
    console.log(
      `[${mode}] ${run.swaps} swaps in ${((swapsEnd - swapsStart) / 1000).toFixed(1)} s (load ${swapTimes.map((swap) => swap.loadMs.toFixed(0)).join('/')} ms` +
        (mode === 'replace' ? `, paused ${swapTimes.map((swap) => (swap.pausedMs ?? NaN).toFixed(0)).join('/')} ms` : '') +
        `); longest stretch without a completed request: ${gapMs.toFixed(0)} ms during the swaps, ${quietGapMs.toFixed(0)} ms before; ` +
        `${samples.length} requests, ${failures.length} failed or inconsistent`,
    );
    return {
      rows,
      failures: failures.length,
      result: { mode, swaps: swapTimes, swapWindowMs: swapsEnd - swapsStart, longestGapMs: gapMs, quietLongestGapMs: quietGapMs, requests: samples.length, failures: failures.length, firstFailures: failures.slice(0, 5) },
    };
  } finally {
    await running.shutdown('benchmark done');
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      preset: { type: 'string', default: 'tiny' },
      'phase-seconds': { type: 'string', default: '8' },
      swaps: { type: 'string', default: '4' },
      'single-clients': { type: 'string', default: '3' },
      'batch-clients': { type: 'string', default: '1' },
      'batch-size': { type: 'string', default: '512' },
      topk: { type: 'string', default: '3' },
      'search-dtype': { type: 'string', default: 'fp32' },
    },
  });
  const preset = values.preset!;
  if (!isPresetName(preset) || preset === 'e5-base') throw new Error(`--preset must be tiny or demo, got ${preset}`);
  const precision = values['search-dtype'];
  if (precision !== 'fp32' && precision !== 'fp16') throw new Error(`--search-dtype must be fp32 or fp16, got ${precision}`);
  const run: RunOptions = {
    phaseMs: Number(values['phase-seconds']) * 1000,
    swaps: Number(values.swaps),
    singleClients: Number(values['single-clients']),
    batchClients: Number(values['batch-clients']),
    batchSize: Number(values['batch-size']),
    topk: Number(values.topk),
    precision,
  };

  console.log(`building two ${preset} versions (seeds 7 and 8) and their indexes over the 1k wiki18 sample...`);
  const first = await buildRetrieverFiles({ preset, seed: 7, corpus: SAMPLE_CORPUS });
  const second = await buildRetrieverFiles({ preset, seed: 8, corpus: SAMPLE_CORPUS });

  const runs = [];
  for (const mode of ['side-by-side', 'replace'] as const) runs.push(await runMode(mode, first, second, run));
  await report(`swap-under-load-${preset}`, runs.flatMap((one) => one.rows), {
    preset,
    corpusRows: 1000,
    topk: run.topk,
    precision,
    phaseSeconds: run.phaseMs / 1000,
    clients: { single: run.singleClients, [`batch-${run.batchSize}`]: run.batchClients },
    modes: runs.map((one) => one.result),
  });
  if (runs.some((one) => one.failures > 0)) process.exitCode = 1;
}

await main();
