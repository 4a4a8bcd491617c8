/**
 * Latency of `POST /retrieve` while retriever versions are hot-swapped: clients send single-query
 * and 512-query requests in loops over keep-alive sockets; after a quiet phase, a second version
 * is activated and rolled back several times (each through `POST /training/versions/...`), then
 * a quiet phase again. Reported per phase (before / during / after the swaps) and request shape:
 * requests, p50 and p99 latency, non-2xx answers, and answers whose results differ from what the
 * version named in `X-Retriever-Version` returns for those queries (checked for every response).
 * Clients and server share this process (and the machine's cores), as in the test.
 *
 *   node dist/benchmarks/swap-under-load.js [--preset tiny|demo] [--phase-seconds 8] [--swaps 4]
 *     [--single-clients 3] [--batch-clients 1] [--batch-size 512] [--topk 3]
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
import { INITIAL_VERSION, VersionManager } from '../src/versions/version-manager.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../test/support/retriever-fixture.js';
import { LoadClients, planLoad, type LoadSample } from '../test/support/swap-load.js';
import { temporaryDir } from '../test/support/version-fixtures.js';
import { report, type Row } from './bench-report.js';

const TOKEN = 'swap-benchmark';

function percentile(sorted: readonly number[], fraction: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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
    },
  });
  const preset = values.preset!;
  if (!isPresetName(preset) || preset === 'e5-base') throw new Error(`--preset must be tiny or demo, got ${preset}`);
  const phaseMs = Number(values['phase-seconds']) * 1000;
  const swaps = Number(values.swaps);
  const batchSize = Number(values['batch-size']);
  const topk = Number(values.topk);

  console.log(`building two ${preset} versions (seeds 7 and 8) and their indexes over the 1k wiki18 sample...`);
  const first = await buildRetrieverFiles({ preset, seed: 7, corpus: SAMPLE_CORPUS });
  const second = await buildRetrieverFiles({ preset, seed: 8, corpus: SAMPLE_CORPUS });

  const active = new ActiveRetriever();
  const versions = await VersionManager.open({ dataDir: await temporaryDir('benchmark'), active, fp16: false });
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
      { name: `batch-${batchSize}`, size: batchSize, sets: 2 },
    ];
    console.log('computing what each version answers to every request...');
    const plan = await planLoad({ [INITIAL_VERSION]: first, [other]: second }, first.corpusPath, shapes, topk);

    const clients = new LoadClients(running.url, plan);
    clients.start('single', Number(values['single-clients']));
    clients.start(`batch-${batchSize}`, Number(values['batch-clients']));
    console.log(`load running; quiet phase of ${phaseMs / 1000} s...`);
    await sleep(phaseMs);
    const swapsStart = clients.now();
    const swapTimes: { to: string; loadMs: number; releaseMs: number; totalMs: number }[] = [];
    for (let swap = 0; swap < swaps; swap++) {
      const route = swap % 2 === 0 ? `/training/versions/${other}/activate` : '/training/versions/rollback';
      const sent = clients.now();
      const result = (await admin(route)) as { version: { id: string }; loadMs: number; releaseMs: number };
      swapTimes.push({ to: result.version.id, loadMs: result.loadMs, releaseMs: result.releaseMs, totalMs: clients.now() - sent });
      console.log(`swap ${swap + 1}/${swaps}: now serving ${result.version.id}`);
    }
    const swapsEnd = clients.now();
    console.log(`swaps done; quiet phase of ${phaseMs / 1000} s...`);
    await sleep(phaseMs);
    const samples = await clients.stop();

    const phaseOf = (sample: LoadSample): string =>
      sample.sentAt + sample.latencyMs < swapsStart ? 'before' : sample.sentAt > swapsEnd ? 'after' : 'during';
    const rows: Row[] = [];
    const results: Record<string, unknown>[] = [];
    for (const phase of ['before', 'during', 'after']) {
      for (const shape of shapes) {
        const mine = samples.filter((sample) => sample.shape === shape.name && phaseOf(sample) === phase);
        const latencies = mine.map((sample) => sample.latencyMs).sort((a, b) => a - b);
        const entry = {
          phase,
          shape: shape.name,
          requests: mine.length,
          'p50 ms': percentile(latencies, 0.5).toFixed(1),
          'p99 ms': percentile(latencies, 0.99).toFixed(1),
          'max ms': (latencies.at(-1) ?? NaN).toFixed(1),
          'non-2xx': mine.filter((sample) => sample.status < 200 || sample.status > 299).length,
          inconsistent: mine.filter((sample) => sample.status === 200 && !sample.consistent).length,
          versions: [...new Set(mine.map((sample) => sample.version))].sort().join(' '),
        };
        rows.push(entry);
        results.push(entry);
      }
    }
    const failures = samples.filter((sample) => sample.status !== 200 || !sample.consistent);
    await report(`swap-under-load-${preset}`, rows, {
      preset,
      corpusRows: 1000,
      topk,
      phaseSeconds: phaseMs / 1000,
      clients: { single: Number(values['single-clients']), [`batch-${batchSize}`]: Number(values['batch-clients']) },
      swaps: swapTimes,
      swapWindowMs: swapsEnd - swapsStart,
      requests: samples.length,
      failures: failures.length,
      firstFailures: failures.slice(0, 5),
      phases: results,
    });
    console.log(
      `\n${swaps} swaps in ${((swapsEnd - swapsStart) / 1000).toFixed(1)} s (load ${swapTimes.map((swap) => swap.loadMs.toFixed(0)).join('/')} ms, ` +
        `release ${swapTimes.map((swap) => swap.releaseMs.toFixed(0)).join('/')} ms); ${samples.length} requests, ${failures.length} failed or inconsistent`,
    );
    if (failures.length > 0) process.exitCode = 1;
  } finally {
    await running.shutdown('benchmark done');
  }
}

await main();
