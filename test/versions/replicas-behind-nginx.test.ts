import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import type { HeartbeatView } from '../../src/versions/heartbeats.js';
import { INITIAL_VERSION } from '../../src/versions/version-manager.js';
import { REGISTRY_FILE } from '../../src/versions/version-registry.js';
import { startNginx, type RunningNginx } from '../support/nginx.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { freePort, spawnServe, type ServeChild } from '../support/serve-child.js';
import { assertNewVersionAfterEachSwap, LoadClients, planLoad, type LoadPlan, type LoadSample, type SwapSeen } from '../support/swap-load.js';
import { AUTH, temporaryDir, TOKEN } from '../support/version-fixtures.js';

/** A short beat keeps the test quick: a killed replica is left out after 3 (450 ms). */
const HEARTBEAT = ['--heartbeat_ms', '150'];
/** Unmerged batches: a merged one pads queries to its batch-mates' lengths, which moves scores in the last bits, and answers are compared bit for bit. */
const UNMERGED = ['--batch_max_queries', '1'];
/** verl's search tool retries 500/502/503/504 and connection errors. */
const VERL_RETRIES = 3;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(probe: () => Promise<T | undefined>): Promise<T> {
  for (;;) {
    const found = await probe().catch(() => undefined);
    if (found !== undefined) return found;
    await sleep(20);
  }
}

describe('one writer and two replicas behind a real nginx (serve child processes, deploy/nginx/retriever.conf)', function () {
  let initialFiles: RetrieverFiles;
  let otherFiles: RetrieverFiles;
  let dataDir: string;
  let ports: { listen: number; writer: number; replicas: number[] };
  let writer: ServeChild;
  const replicas: ServeChild[] = [];
  let nginx: RunningNginx;
  let other: string;
  let plan: LoadPlan;

  const writerArgs = () => [
    ...['--retriever_model', initialFiles.modelDir, '--index_path', initialFiles.indexPath, '--corpus_path', initialFiles.corpusPath],
    ...['--data_dir', dataDir, '--training_token', TOKEN, ...HEARTBEAT],
  ];
  const startReplica = (at: number, flags: string[] = []) => {
    replicas[at] = spawnServe(['--replica', '--data_dir', dataDir, ...HEARTBEAT, ...UNMERGED, ...flags], ports.replicas[at]);
    return replicas[at]!.ready;
  };
  const training = (route: string) => fetch(`${nginx.url}${route}`, { method: 'POST', headers: { authorization: AUTH } });
  /** The fleet as the writer's heartbeat folder shows it, asked through nginx (a replica answers). */
  const fleet = async () => (await (await fetch(`${nginx.url}/replicas`)).json()) as { writer: HeartbeatView | null; replicas: HeartbeatView[] };
  const replicaVersions = async () => Object.fromEntries((await fleet()).replicas.filter((replica) => replica.live).map((replica) => [replica.port, replica.active]));
  const registry = async () => JSON.parse(await readFile(path.join(dataDir, 'versions', REGISTRY_FILE), 'utf8')) as { activeId: string; pending?: { id: string } };

  before(async function () {
    initialFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    otherFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: DEMO_CORPUS });
    dataDir = await temporaryDir('nginx-fleet');
    ports = { listen: await freePort(), writer: await freePort(), replicas: [await freePort(), await freePort()] };
    writer = spawnServe(writerArgs(), ports.writer);
    await writer.ready;
    await Promise.all([startReplica(0), startReplica(1)]);
    nginx = await startNginx(ports);
    // Through nginx: /training/ reaches the writer.
    const registered = await fetch(`${nginx.url}/training/versions`, {
      method: 'POST',
      headers: { authorization: AUTH, 'content-type': 'application/json' },
      body: JSON.stringify({ model_path: otherFiles.modelDir, index_path: otherFiles.indexPath }),
    });
    assert.equal(registered.status, 201);
    other = ((await registered.json()) as { version: { id: string } }).version.id;
    plan = await planLoad(
      { [INITIAL_VERSION]: initialFiles, [other]: otherFiles },
      initialFiles.corpusPath,
      [
        { name: 'single', size: 1, sets: 16 },
        { name: 'batch-32', size: 32, sets: 4 },
      ],
      3,
    );
  });

  after(async function () {
    await nginx?.stop();
    for (const serve of [writer, ...replicas]) {
      serve?.child.kill('SIGTERM');
      await serve?.exited;
    }
    await rm(dataDir, { recursive: true, force: true });
  });

  /** Clients of both shapes through nginx while `during` runs; every sample. */
  async function underLoad(during: (load: LoadClients) => Promise<void>, retries = 0): Promise<LoadSample[]> {
    const load = new LoadClients(nginx.url, plan, { retries });
    load.start('single', 3);
    load.start('batch-32', 1);
    try {
      await load.answered(8);
      await during(load);
      await load.answered(8);
    } finally {
      await load.stop();
    }
    return load.samples;
  }

  it('swaps and rolls back across the fleet under load: no answer but a 200 of the version it names, none from the old version after the flip, every replica on the new one', async function () {
    const replicaRefusal = await fetch(`http://127.0.0.1:${ports.replicas[0]}/training/versions`);
    assert.equal(replicaRefusal.status, 421);
    assert.deepEqual(await replicaRefusal.json(), {
      error: { code: 'misdirected', message: `this server is a read-only replica (--replica): the training routes are served by the writer at http://127.0.0.1:${ports.writer}` },
    });

    const swaps: SwapSeen[] = [];
    const activations: { replicas: string[] }[] = [];
    const samples = await underLoad(async (load) => {
      for (const [route, to] of [[`/training/versions/${other}/activate`, other], ['/training/versions/rollback', INITIAL_VERSION]] as const) {
        const sent = load.now();
        const answer = await training(route);
        assert.equal(answer.status, 200, await answer.clone().text());
        const body = (await answer.json()) as { version: { id: string }; replicas: string[] };
        assert.equal(body.version.id, to);
        activations.push(body);
        swaps.push([to, sent, load.now()]);
        assert.deepEqual(await replicaVersions(), { [ports.replicas[0]!]: to, [ports.replicas[1]!]: to });
        await load.answered(8);
      }
    });

    const replicaNames = ports.replicas.map((port) => `127.0.0.1:${port}`).sort();
    assert.deepEqual(activations.map((activation) => activation.replicas.sort()), [replicaNames, replicaNames]);
    assert.deepEqual(samples.filter((sample) => sample.status !== 200 || !sample.consistent), [], 'every answer is a 200 with the results of the version it names');
    assert.deepEqual(new Set(samples.map((sample) => sample.version)), new Set([INITIAL_VERSION, other]));
    assertNewVersionAfterEachSwap(samples, swaps);
  });

  it('SIGKILL of a replica while it prepares, under load: no client call fails through nginx, the activation completes without it, and it restarts on the active version', async function () {
    const [victim] = replicas;
    const samples = await underLoad(async () => {
      const activation = training(`/training/versions/${other}/activate`);
      await until(async () => ((await fleet()).replicas.find((replica) => replica.port === ports.replicas[0])?.preparing === other ? true : undefined));
      victim!.child.kill('SIGKILL');
      await victim!.exited;
      const answer = await activation;
      assert.equal(answer.status, 200);
      assert.deepEqual(((await answer.json()) as { replicas: string[] }).replicas, [`127.0.0.1:${ports.replicas[1]}`]);
      await startReplica(0);
      assert.deepEqual(await replicaVersions(), { [ports.replicas[0]!]: other, [ports.replicas[1]!]: other });
    }, VERL_RETRIES);

    assert.deepEqual(samples.filter((sample) => sample.status !== 200 || !sample.consistent), [], 'no call failed after verl-style retries');
  });

  it('SIGKILL of the writer mid-activation: every replica serves one version, the old one; the restarted writer withdraws the activation', async function () {
    const before = (await registry()).activeId;
    const after = before === other ? INITIAL_VERSION : other;
    const samples = await underLoad(async () => {
      const activation = training(`/training/versions/${after}/activate`).catch((error: Error) => error);
      await until(async () => ((await registry()).pending?.id === after ? true : undefined));
      writer.child.kill('SIGKILL');
      await writer.exited;
      assert.ok((await activation) instanceof Error || ((await activation) as Response).status === 502, 'the activation call lost its writer');
      // Each replica prepares the version and keeps serving the active one: no flip without the writer.
      await until(async () => ((await fleet()).replicas.every((replica) => replica.prepared === after) ? true : undefined));
      assert.deepEqual(await replicaVersions(), { [ports.replicas[0]!]: before, [ports.replicas[1]!]: before });
    });
    assert.deepEqual(samples.filter((sample) => sample.status !== 200 || sample.version !== before || !sample.consistent), [], 'every answer came from the active version');

    writer = spawnServe(writerArgs(), ports.writer);
    await writer.ready;
    assert.equal((await registry()).pending, undefined);
    assert.ok(writer.log.some((line) => line.msg.startsWith(`the activation of version ${after} was interrupted by a restart before the flip; withdrawn`)));
    await until(async () => ((await fleet()).replicas.every((replica) => replica.live && replica.prepared === undefined) ? true : undefined));
    assert.deepEqual(await replicaVersions(), { [ports.replicas[0]!]: before, [ports.replicas[1]!]: before });
  });

  it('a replica whose --search_memory_budget holds one version swaps in place of its serving one (replace) under load: no client call fails through nginx, no answer but a 200 of the version it names', async function () {
    const [cramped] = replicas;
    cramped!.child.kill('SIGTERM');
    await cramped!.exited;
    // 1.5 MB holds one tiny version (0.5 MB to search, 0.8 MB of encoder weights), not two.
    await startReplica(0, ['--search_memory_budget', '1.5mb']);
    const before = (await registry()).activeId;
    const after = before === other ? INITIAL_VERSION : other;
    const swaps: SwapSeen[] = [];
    const samples = await underLoad(async (load) => {
      const sent = load.now();
      const answer = await training(`/training/versions/${after}/activate`);
      assert.equal(answer.status, 200, await answer.clone().text());
      swaps.push([after, sent, load.now()]);
      assert.deepEqual(((await answer.json()) as { replicas: string[] }).replicas.sort(), ports.replicas.map((port) => `127.0.0.1:${port}`).sort());
      assert.deepEqual(await replicaVersions(), { [ports.replicas[0]!]: after, [ports.replicas[1]!]: after });
    }, VERL_RETRIES);

    assert.deepEqual(samples.filter((sample) => sample.status !== 200 || !sample.consistent), [], 'no call failed after verl-style retries');
    assertNewVersionAfterEachSwap(samples, swaps);
    const log = replicas[0]!.log.map((line) => line.msg);
    assert.ok(log.some((msg) => msg.startsWith(`preparing version ${after} in place of version ${before} (replace): both versions need `)), log.join('\n'));
    const info = (await (await fetch(`http://127.0.0.1:${ports.replicas[0]}/info`)).json()) as { retriever: { version: string; swap: { mode: string } } };
    assert.deepEqual([info.retriever.version, info.retriever.swap.mode], [after, 'replace']);
  });
});
