/**
 * Scaling out on one machine: throughput of `POST /retrieve` through a real nginx
 * (deploy/nginx/retriever.conf) in front of 1, 2 and 3 `serve --replica` processes sharing one
 * writer's data dir, and the fleet-wide swap: the time from the activate call to its answer, which
 * comes once every replica serves the new version. Baselines in the same run: 1 replica for
 * throughput; the writer alone (no replica beating) for the swap.
 *
 * Then the same swaps with every replica's `--search_memory_budget` holding one version but not
 * two, so that each prepares in place of its serving one (replace mode: it turns requests away
 * while it loads and until the flip, and nginx sends them to the others), under 4 clients through
 * nginx without client retries: the swap time, the calls that failed and the latencies against
 * the side-by-side fleet's.
 *
 * Throughput: single-query clients in loops over keep-alive sockets (verl's shape; replicas
 * without a result cache, so each query is encoded and searched) for
 * `--seconds` per step, the steps run in the order 1, 2, 3, 3, 2, 1 and each fleet size's two
 * figures reported with their mean (the machine is shared: the order spreads drift across sizes).
 * Every replica and nginx share this machine's cores with the clients, so on a 2-core box the
 * ratio flattens: more processes, the same CPUs.
 *
 *   node dist/benchmarks/replicas.js [--preset demo|tiny] [--seconds 10] [--clients 32] [--swaps 3]
 */
import { stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readManifest } from '../src/encoder/manifest.js';
import { isPresetName } from '../src/encoder/presets.js';
import type { RetrieverFiles } from '../src/engine/retriever.js';
import { planVectorIndex } from '../src/index/open-index.js';
import { INITIAL_VERSION } from '../src/versions/version-manager.js';
import { startNginx } from '../test/support/nginx.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../test/support/retriever-fixture.js';
import { freePort, spawnServe, type ServeChild } from '../test/support/serve-child.js';
import { LoadClients, planLoad, type LoadPlan, type LoadSample } from '../test/support/swap-load.js';
import { AUTH, temporaryDir, TOKEN } from '../test/support/version-fixtures.js';
import { median, percentile, report, type Row } from './bench-report.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface ThroughputStep {
  replicas: number;
  requests: number;
  failed: number;
  seconds: number;
  perSecond: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      preset: { type: 'string', default: 'demo' },
      seconds: { type: 'string', default: '10' },
      clients: { type: 'string', default: '32' },
      swaps: { type: 'string', default: '3' },
    },
  });
  const preset = values.preset!;
  if (!isPresetName(preset)) throw new Error(`--preset ${preset} is not a model preset`);
  const stepMs = Number(values.seconds) * 1000;
  const clients = Number(values.clients);
  const swaps = Number(values.swaps);
  const loadBefore = os.loadavg();

  const initialFiles = await buildRetrieverFiles({ preset, seed: 7, corpus: SAMPLE_CORPUS });
  const otherFiles = await buildRetrieverFiles({ preset, seed: 8, corpus: SAMPLE_CORPUS });
  const dataDir = await temporaryDir('replicas-bench');
  const writerPort = await freePort();
  const replicaPorts = [await freePort(), await freePort(), await freePort()];
  const writer = spawnServe(
    [
      ...['--retriever_model', initialFiles.modelDir, '--index_path', initialFiles.indexPath, '--corpus_path', initialFiles.corpusPath],
      ...['--data_dir', dataDir, '--training_token', TOKEN],
    ],
    writerPort,
  );
  const children: ServeChild[] = [writer];
  const writerUrl = await writer.ready.then(() => `http://127.0.0.1:${writerPort}`);
  try {
    const training = async (route: string, body?: unknown) => {
      const started = performance.now();
      const answer = await fetch(`${writerUrl}${route}`, {
        method: 'POST',
        headers: { authorization: AUTH, 'content-type': 'application/json' },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      const json = (await answer.json()) as { version: { id: string }; loadMs: number; replicas?: string[] };
      if (answer.status >= 300) throw new Error(`${route}: ${answer.status} ${JSON.stringify(json)}`);
      return { ...json, ms: performance.now() - started };
    };
    const other = (await training('/training/versions', { model_path: otherFiles.modelDir, index_path: otherFiles.indexPath })).version.id;
    const plan = await planLoad({ [INITIAL_VERSION]: initialFiles, [other]: otherFiles }, initialFiles.corpusPath, [{ name: 'single', size: 1, sets: 256 }], 3);

    /** Activate, then roll back, `swaps` times: each call's wall time, from sent to answered. */
    const swapTimes = async (): Promise<SwapTimes> => {
      const times = { ms: [] as number[], writerLoadMs: [] as number[], replicas: [] as number[] };
      for (let round = 0; round < swaps; round++) {
        for (const route of [`/training/versions/${other}/activate`, '/training/versions/rollback']) {
          const swap = await training(route);
          times.ms.push(swap.ms);
          times.writerLoadMs.push(swap.loadMs);
          times.replicas.push(swap.replicas?.length ?? 0);
        }
      }
      return times;
    };
    const alone = await swapTimes();

    // No result cache: every replica would otherwise answer the cycled queries from memory, and this measures serving them.
    for (const port of replicaPorts) children.push(spawnServe(['--replica', '--data_dir', dataDir, '--result_cache_size', '0'], port));
    await Promise.all(children.slice(1).map((child) => child.ready));
    const steps: ThroughputStep[] = [];
    for (const replicas of [1, 2, 3, 3, 2, 1]) steps.push(await throughput(replicaPorts.slice(0, replicas), writerPort, plan, clients, stepMs));

    // The swap with every replica beating, under a light load through nginx (one client).
    const { swaps: fleet, samples: lightSamples } = await swapsUnderLoad(writerPort, replicaPorts, plan, 1, swapTimes);
    const lightFailed = lightSamples.filter((sample) => sample.status !== 200).length;

    // The same swaps with each replica's budget holding one version: every replica replaces, 4 clients, no client retries.
    const sideBySide = await swapsUnderLoad(writerPort, replicaPorts, plan, 4, swapTimes);
    for (const replica of children.splice(1)) {
      replica.child.kill('SIGTERM');
      await replica.exited;
    }
    const budget = await oneVersionBudget(initialFiles);
    for (const port of replicaPorts) children.push(spawnServe(['--replica', '--data_dir', dataDir, '--result_cache_size', '0', '--search_memory_budget', String(budget)], port));
    await Promise.all(children.slice(1).map((child) => child.ready));
    const replacing = await swapsUnderLoad(writerPort, replicaPorts, plan, 4, swapTimes);
    const replaced = children.slice(1).map((child) => child.log.filter((line) => line.msg.startsWith('preparing version ') && line.msg.includes('(replace)')).length);

    const rows: Row[] = [1, 2, 3].map((replicas) => {
      const figures = steps.filter((step) => step.replicas === replicas);
      const mean = figures.reduce((sum, step) => sum + step.perSecond, 0) / figures.length;
      const baseline = steps.filter((step) => step.replicas === 1).reduce((sum, step) => sum + step.perSecond, 0) / 2;
      return {
        measurement: `throughput, ${replicas} replica(s), ${clients} single-query clients`,
        result: `${mean.toFixed(1)} req/s (${figures.map((step) => step.perSecond.toFixed(1)).join(', ')})`,
        'vs 1 replica': `${(mean / baseline).toFixed(2)}×`,
        'non-2xx': figures.reduce((sum, step) => sum + step.failed, 0),
      };
    });
    rows.push(
      {
        measurement: 'activate/rollback call → answered, writer alone (median)',
        result: `${median(alone.ms).toFixed(0)} ms`,
        'vs 1 replica': '—',
        'non-2xx': 0,
      },
      {
        measurement: 'activate/rollback call → every one of 3 replicas switched (median)',
        result: `${median(fleet.ms).toFixed(0)} ms (writer's own load ${median(fleet.writerLoadMs).toFixed(0)} ms)`,
        'vs 1 replica': `${(median(fleet.ms) / median(alone.ms)).toFixed(2)}× the writer alone`,
        'non-2xx': lightFailed,
      },
      ...[
        ['side by side', sideBySide],
        ['in place (replace mode, budget of one version)', replacing],
      ].map(([how, run]) => {
        const { swaps: times, samples } = run as Awaited<ReturnType<typeof swapsUnderLoad>>;
        const latencies = samples.map((sample) => sample.latencyMs);
        return {
          measurement: `3 replicas preparing ${how as string}, 4 clients, no client retries: call → all switched (median); request latency p50/p99/max`,
          result: `${median(times.ms).toFixed(0)} ms; ${percentile(latencies, 0.5).toFixed(0)}/${percentile(latencies, 0.99).toFixed(0)}/${Math.max(...latencies).toFixed(0)} ms of ${samples.length}`,
          'vs 1 replica': `${(median(times.ms) / median(sideBySide.swaps.ms)).toFixed(2)}× side by side`,
          'non-2xx': samples.filter((sample) => sample.status !== 200).length,
        };
      }),
    );
    await report(`replicas-${preset}`, rows, {
      preset,
      corpus: SAMPLE_CORPUS,
      clients,
      stepSeconds: stepMs / 1000,
      throughput: steps,
      swapAloneMs: alone.ms,
      swapFleetMs: fleet.ms,
      swapFleetWriterLoadMs: fleet.writerLoadMs,
      swapFleetReplicasSwitched: fleet.replicas,
      sideBySideUnderLoad: { swapMs: sideBySide.swaps.ms, requests: sideBySide.samples.length, failed: sideBySide.samples.filter((sample) => sample.status !== 200).length },
      replaceUnderLoad: {
        replicaBudgetBytes: budget,
        replacementsLogged: replaced,
        swapMs: replacing.swaps.ms,
        requests: replacing.samples.length,
        failed: replacing.samples.filter((sample) => sample.status !== 200).length,
      },
      loadAverageBefore: loadBefore,
    });
  } finally {
    for (const child of children) {
      child.child.kill('SIGTERM');
      await child.exited;
    }
  }
}

type SwapTimes = { ms: number[]; writerLoadMs: number[]; replicas: number[] };

/** `swap` run through a fresh nginx in front of the writer and `replicaPorts` while `clients` single-query clients send, without retries. */
async function swapsUnderLoad(writerPort: number, replicaPorts: number[], plan: LoadPlan, clients: number, swap: () => Promise<SwapTimes>): Promise<{ swaps: SwapTimes; samples: LoadSample[] }> {
  const nginx = await startNginx({ listen: await freePort(), writer: writerPort, replicas: replicaPorts });
  const load = new LoadClients(nginx.url, plan);
  load.start('single', clients);
  try {
    const swaps = await swap();
    return { swaps, samples: await load.stop() };
  } finally {
    await load.stop();
    await nginx.stop();
  }
}

/** 1.5 times what one version of `files` holds on the CPU (its index to search and its encoder's fp32 graph): one fits, two do not. */
async function oneVersionBudget(files: RetrieverFiles): Promise<number> {
  const { perDevice } = await planVectorIndex(files.indexPath);
  const graph = await stat(path.join(files.modelDir, (await readManifest(files.modelDir)).files.fp32));
  return Math.floor(1.5 * (perDevice.vectorBytes + perDevice.scoreBytes + graph.size));
}

/** Requests answered per second through a fresh nginx in front of `replicaPorts`. */
async function throughput(replicaPorts: number[], writerPort: number, plan: LoadPlan, clients: number, stepMs: number): Promise<ThroughputStep> {
  const nginx = await startNginx({ listen: await freePort(), writer: writerPort, replicas: replicaPorts });
  try {
    const warm = new LoadClients(nginx.url, plan);
    warm.start('single', clients);
    await warm.answered(clients * 4);
    await warm.stop();
    const load = new LoadClients(nginx.url, plan);
    load.start('single', clients);
    await sleep(stepMs);
    const samples = await load.stop();
    const seconds = load.now() / 1000;
    const failed = samples.filter((sample) => sample.status !== 200).length;
    const step = { replicas: replicaPorts.length, requests: samples.length, failed, seconds, perSecond: (samples.length - failed) / seconds };
    console.log(`${step.replicas} replica(s): ${step.perSecond.toFixed(1)} req/s (${samples.length} requests, ${failed} failed)`);
    return step;
  } finally {
    await nginx.stop();
  }
}

await main();
