import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { CONFIG_DEFAULTS, parseServeArgs } from '../../src/config.js';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import type { Readiness } from '../../src/engine/types.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { ServiceError } from '../../src/errors.js';
import { createApp } from '../../src/http/app.js';
import { replicaTrainingRefusal } from '../../src/http/fleet-routes.js';
import { createLogger } from '../../src/log.js';
import { versionRouter } from '../../src/http/version-routes.js';
import { HEARTBEAT_FOLDER, HeartbeatBeacon, HeartbeatBoard } from '../../src/versions/heartbeats.js';
import { ReplicaFollower } from '../../src/versions/replica-follower.js';
import { INITIAL_VERSION, VersionManager } from '../../src/versions/version-manager.js';
import { REGISTRY_FILE, VersionRegistry } from '../../src/versions/version-registry.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { AUTH, temporaryDir, TOKEN } from '../support/version-fixtures.js';

/** Beats every 200 ms: a replica that misses 3 (600 ms, ample on a busy 2-core host) is left out. */
const BEAT_MS = 200;

interface LogLine {
  message: string;
  level: string;
}

/** One writer (a VersionManager with the fleet on) and its replicas, in this process, on real retrievers. */
class Fleet {
  readonly log: LogLine[] = [];
  /** Runs on each line as it is logged, inside the logging call. */
  onLog?: (line: LogLine) => void;
  readonly replicas: { name: string; active: ActiveRetriever; follower: ReplicaFollower }[] = [];
  readonly writerActive = new ActiveRetriever();
  readonly board: HeartbeatBoard;
  versions!: VersionManager;
  writerBeacon?: HeartbeatBeacon;

  constructor(readonly dataDir: string) {
    this.board = new HeartbeatBoard(dataDir, BEAT_MS);
  }

  async startWriter(files: RetrieverFiles, prepareTimeoutMs = 30_000): Promise<void> {
    // As serve does: replacing replicas watch that the writer still beats.
    this.writerBeacon = new HeartbeatBeacon(this.board, () => ({ role: 'writer', name: 'writer', host: '127.0.0.1', port: 7999, pid: process.pid, ready: true }), () => undefined);
    await this.writerBeacon.beat();
    this.versions = await VersionManager.open({
      dataDir: this.dataDir,
      active: this.writerActive,
      fp16: false,
      fleet: { board: this.board, prepareTimeoutMs },
      log: (message, _fields, level = 'info') => this.log.push({ message, level }),
    });
    await this.versions.restore(files);
  }

  async startReplica(name: string, memoryBudgetBytes = 0): Promise<void> {
    const active = new ActiveRetriever();
    const follower = await ReplicaFollower.start({
      dataDir: this.dataDir,
      active,
      board: this.board,
      name,
      host: '127.0.0.1',
      port: 8000 + this.replicas.length,
      index: { memoryBudgetBytes },
      log: (message, _fields, level = 'info') => {
        const line = { message: `${name}: ${message}`, level };
        this.log.push(line);
        this.onLog?.(line);
      },
    });
    this.replicas.push({ name, active, follower });
  }

  serving(): Record<string, string | undefined> {
    return Object.fromEntries([['writer', this.writerActive.current?.version], ...this.replicas.map(({ name, active }) => [name, active.current?.version])]);
  }

  async close(): Promise<void> {
    for (const { follower, active } of this.replicas) {
      await follower.close();
      await active.close();
    }
    await this.versions?.close();
    await this.writerActive.close();
    await this.writerBeacon?.stop();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** 1.5 MB holds a tiny version (0.5 MB to search, 0.8 MB of encoder weights) but not two, nor the wide one. */
const ONE_TINY_VERSION_BUDGET = 1.5 * 1024 * 1024;

const HAMLET = [{ query: 'hamlet' }];

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe('replicas of one writer (in process: real retrievers, heartbeats and registry in a temp data dir)', function () {
  let initialFiles: RetrieverFiles;
  let otherFiles: RetrieverFiles;
  /** Wider vectors: its index needs about 1.2 MB to search where the tiny ones need 0.5 MB. */
  let wideFiles: RetrieverFiles;
  let fleet: Fleet;

  before(async function () {
    initialFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    otherFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: DEMO_CORPUS });
    wideFiles = await buildRetrieverFiles({ preset: 'demo', seed: 9, corpus: DEMO_CORPUS });
  });

  beforeEach(async function () {
    fleet = new Fleet(await temporaryDir('fleet'));
  });

  afterEach(async function () {
    await fleet.close();
  });

  async function register(files: RetrieverFiles): Promise<string> {
    const registration = await fleet.versions.register({ modelPath: files.modelDir, indexPath: files.indexPath });
    return registration.version.id;
  }

  /**
   * A writer and one replica whose budget holds one version ('cramped'), with what `registerMore`
   * registers; then the writer's version manager is closed (its heartbeat goes on) and the test
   * drives the registry by hand.
   */
  async function crampedByHand<T>(registerMore: () => Promise<T>) {
    await fleet.startWriter(initialFiles);
    await fleet.startReplica('cramped', ONE_TINY_VERSION_BUDGET);
    const more = await registerMore();
    await fleet.versions.close();
    const registry = await VersionRegistry.open(path.join(fleet.dataDir, 'versions'));
    const heartbeat = async () => (await fleet.board.read()).servers.find((server) => server.name === 'cramped')!;
    return { cramped: fleet.replicas[0]!, registry, heartbeat, ...more };
  }

  /** A version that registers and plans (its manifest and graph file are there), then does not load: its manifest, changed since, names another dimension. */
  async function registerBroken(): Promise<string> {
    const broken = path.join(fleet.dataDir, 'broken-model');
    await cp(otherFiles.modelDir, broken, { recursive: true });
    const id = await register({ ...otherFiles, modelDir: broken });
    const manifestFile = path.join(broken, 'retriever.json');
    const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
    await writeFile(manifestFile, JSON.stringify({ ...manifest, dimension: manifest.dimension + 1 }));
    return id;
  }

  it('a replica on a data dir without a registry is refused, naming the file and the writer it needs', async function () {
    const error = await ReplicaFollower.start({ dataDir: fleet.dataDir, active: new ActiveRetriever(), board: fleet.board, name: 'lonely', host: '127.0.0.1', port: 1 }).catch((caught: unknown) => caught);
    assert.ok(error instanceof ServiceError);
    assert.equal(error.code, 'not_found');
    assert.equal(error.message, `no version registry at ${path.join(fleet.dataDir, 'versions', REGISTRY_FILE)}: a replica serves what a writer (serve with the training routes on this data dir) has registered; start the writer first`);
    assert.deepEqual((await fleet.board.read()).servers, [], 'it left no heartbeat behind');
  });

  it('activates and rolls back in two phases: every replica prepares, then all switch; the registry is written by the writer alone', async function () {
    await fleet.startWriter(initialFiles);
    await fleet.startReplica('replica-a');
    await fleet.startReplica('replica-b');
    assert.deepEqual(fleet.serving(), { writer: INITIAL_VERSION, 'replica-a': INITIAL_VERSION, 'replica-b': INITIAL_VERSION });
    const other = await register(otherFiles);

    const activation = await fleet.versions.activate(other);
    assert.deepEqual(activation.replicas?.sort(), ['replica-a', 'replica-b'], 'both serve it when the activation answers');
    assert.deepEqual(fleet.serving(), { writer: other, 'replica-a': other, 'replica-b': other });
    const asked = fleet.log.filter((line) => line.message.startsWith('asking 2 replica(s) to prepare'));
    assert.deepEqual(asked.map((line) => line.message), [`asking 2 replica(s) to prepare version ${other}: replica-a, replica-b`]);
    assert.ok(fleet.log.some((line) => line.message === `replica-a: version ${other} prepared for the writer's activate`));

    const rollback = await fleet.versions.rollback();
    assert.equal(rollback.version.id, INITIAL_VERSION);
    assert.deepEqual(rollback.replicas?.sort(), ['replica-a', 'replica-b']);
    assert.deepEqual(fleet.serving(), { writer: INITIAL_VERSION, 'replica-a': INITIAL_VERSION, 'replica-b': INITIAL_VERSION });
    const registry = JSON.parse(await readFile(path.join(fleet.dataDir, 'versions', REGISTRY_FILE), 'utf8')) as { activeId: string; pending?: unknown };
    assert.equal(registry.activeId, INITIAL_VERSION);
    assert.equal(registry.pending, undefined, 'no activation is left pending');
  });

  it('a replica that cannot prepare fails the activation with its name and reason; the old version stays active everywhere', async function () {
    await fleet.startWriter(initialFiles);
    await fleet.startReplica('roomy');
    await fleet.startReplica('cramped', ONE_TINY_VERSION_BUDGET);
    const wide = await register(wideFiles);

    const error = await fleet.versions.activate(wide).catch((caught: unknown) => caught);
    assert.ok(error instanceof ServiceError);
    assert.equal(error.code, 'conflict');
    assert.match(error.message, new RegExp(`^replica cramped could not prepare version ${wide}: index .+ needs .+ over the search memory budget|^replica cramped could not prepare version ${wide}: .*budget`));
    assert.match(error.message, new RegExp(`; version ${INITIAL_VERSION} stays active on every server$`));
    // The withdrawal reaches the replica that prepared it (or was still preparing it): it drops the version and serves on.
    await until(() => fleet.log.some((line) => line.message === `roomy: activation of version ${wide} withdrawn; dropping what was prepared for it`));
    await until(async () => (await fleet.board.read()).servers.find((server) => server.name === 'roomy')?.prepared === undefined);
    assert.deepEqual(fleet.serving(), { writer: INITIAL_VERSION, roomy: INITIAL_VERSION, cramped: INITIAL_VERSION });
    assert.equal(fleet.versions.list().active, INITIAL_VERSION);
    assert.equal(fleet.versions.version(wide).state, 'ready', 'the version itself is fine: it stays activatable');
  });

  it('a replica whose budget holds one version but not two prepares in place of its serving one (replace) while another prepares beside it: a request meanwhile waits and is answered by the new version after the flip', async function () {
    await fleet.startWriter(initialFiles);
    await fleet.startReplica('roomy');
    await fleet.startReplica('cramped', ONE_TINY_VERSION_BUDGET);
    const cramped = fleet.replicas[1]!;
    const other = await register(otherFiles);
    let waiting: Promise<string> | undefined;
    let readiness: Readiness | undefined;
    fleet.onLog = ({ message }) => {
      // Loaded in place of the serving version, not yet reported: the writer cannot have flipped.
      if (!message.startsWith('cramped: ') || !message.endsWith('which serves nothing until the flip')) return;
      waiting = cramped.active.retrieve(HAMLET, 1).then((result) => result.version);
      readiness = cramped.active.readiness();
    };

    const activation = await fleet.versions.activate(other);
    assert.deepEqual(activation.replicas?.sort(), ['cramped', 'roomy']);
    assert.deepEqual(fleet.serving(), { writer: other, roomy: other, cramped: other });
    assert.ok(waiting, fleet.log.map((line) => line.message).join('\n'));
    assert.equal(await waiting, other, 'held through the replacement, answered by the version that followed it');
    assert.deepEqual([readiness?.ready, readiness?.stage], [true, 'replacing'], 'taking requests, to answer them once a version serves');
    const planned = fleet.log.find((line) => line.message.startsWith(`cramped: preparing version ${other} in place of version ${INITIAL_VERSION} (replace): both versions need `));
    assert.ok(planned, fleet.log.map((line) => line.message).join('\n'));
    assert.match(planned.message, /over the search memory budget/);
    assert.ok(fleet.log.some((line) => line.message === `roomy: version ${other} prepared for the writer's activate`), 'roomy, without a budget, prepared side by side');
    assert.equal(cramped.active.info()?.swap?.mode, 'replace');
    assert.equal(cramped.active.info()?.replacing, undefined);
    assert.equal(activation.swap?.mode, 'side-by-side', 'the writer, without a budget, still swaps side by side');
  });

  it('a replica replacing for an activation holds requests for the next version: the replaced one, loaded again, after a withdrawal; the new one after the flip (the registry driven by hand)', async function () {
    const { cramped, registry, heartbeat, other } = await crampedByHand(() => register(otherFiles).then((id) => ({ other: id })));

    await registry.markPending(other, 'activate');
    await until(async () => (await heartbeat()).prepared === other);
    const preparedBeat = await heartbeat();
    assert.deepEqual([preparedBeat.swap, preparedBeat.active], ['replace', INITIAL_VERSION]);
    assert.equal(cramped.active.info()?.replacing, true);
    assert.equal(cramped.active.readiness().stage, 'replacing');
    const heldThroughWithdrawal = cramped.active.retrieve(HAMLET, 1);
    await registry.clearPending();
    assert.equal((await heldThroughWithdrawal).version, INITIAL_VERSION);
    await until(() => fleet.log.some((line) => line.message === `cramped: activation of version ${other} withdrawn; version ${INITIAL_VERSION} was reloaded and serves again`));
    await until(async () => (await heartbeat()).swap === undefined);
    assert.equal((await heartbeat()).prepared, undefined);
    assert.equal(cramped.active.current?.version, INITIAL_VERSION);

    await registry.markPending(other, 'activate');
    await until(async () => (await heartbeat()).prepared === other);
    const heldThroughFlip = cramped.active.retrieve(HAMLET, 1);
    await registry.markActive(other, 'activate');
    assert.equal((await heldThroughFlip).version, other);
    await until(async () => (await heartbeat()).active === other);
    assert.equal(cramped.active.current?.version, other);
  });

  it('a replica replacing for an activation whose writer stops beating before the flip loads its old version again, serves, and does not prepare that activation again (the registry driven by hand)', async function () {
    const { cramped, registry, heartbeat, other } = await crampedByHand(() => register(otherFiles).then((id) => ({ other: id })));

    await registry.markPending(other, 'activate');
    const since = registry.pending!.since;
    await until(async () => (await heartbeat()).prepared === other);
    const held = cramped.active.retrieve(HAMLET, 1);
    // Killed: its last heartbeat stays and goes stale, as a SIGKILLed writer's does (written first, so a writer's file is there throughout).
    await fleet.board.beat({ role: 'writer', name: 'killed-writer', host: '127.0.0.1', port: 7998, pid: 1, ready: true });
    await fleet.writerBeacon!.stop();
    assert.equal((await held).version, INITIAL_VERSION, 'held through the replacement, answered by the version loaded again');
    const withdrawn = fleet.log.find((line) => line.message.startsWith('cramped: the writer stopped beating (last at '));
    assert.ok(withdrawn, fleet.log.map((line) => line.message).join('\n'));
    assert.match(withdrawn.message, new RegExp(`before the flip to version ${other}; version ${INITIAL_VERSION} was reloaded and serves again$`));
    assert.equal(withdrawn.level, 'warn');
    await until(async () => (await heartbeat()).swap === undefined);
    const { failed, prepared, active } = await heartbeat();
    assert.deepEqual([failed?.version, failed?.since, prepared, active], [other, since, undefined, INITIAL_VERSION]);
    // The registry still names the activation pending; polls go on without preparing it again.
    await new Promise((resolve) => setTimeout(resolve, 5 * BEAT_MS));
    assert.equal(fleet.log.filter((line) => line.message.startsWith(`cramped: preparing version ${other} in place`)).length, 1);
    assert.equal(cramped.active.current?.version, INITIAL_VERSION);
  });

  it('a replica whose replacement fails to load reports why and serves its replaced version again (the registry driven by hand)', async function () {
    const { cramped, registry, id } = await crampedByHand(() => registerBroken().then((broken) => ({ id: broken })));

    await registry.markPending(id, 'activate');
    const since = registry.pending!.since;
    await until(async () => (await fleet.board.read()).servers.find((server) => server.name === 'cramped')?.failed !== undefined);
    const { failed, prepared, swap } = (await fleet.board.read()).servers.find((server) => server.name === 'cramped')!;
    assert.equal(failed!.version, id);
    assert.equal(failed!.since, since);
    assert.match(failed!.reason, new RegExp(`dimension.*; version ${INITIAL_VERSION} was reloaded and serves$`));
    assert.equal(prepared, undefined);
    assert.equal(swap, undefined);
    assert.ok(fleet.log.some((line) => line.message.startsWith(`cramped: preparing version ${id} in place of version ${INITIAL_VERSION} (replace)`)));
    assert.equal((await cramped.active.retrieve(HAMLET, 1)).version, INITIAL_VERSION);
  });

  it('a replica told to serve a version it did not prepare replaces in place when two do not fit; one that fails to load leaves the old version serving and is not tried again until the registry names another (the registry driven by hand)', async function () {
    const { cramped, registry, other, brokenId } = await crampedByHand(async () => ({ other: await register(otherFiles), brokenId: await registerBroken() }));
    const failures = () => fleet.log.filter((line) => line.message.startsWith(`cramped: following the version registry failed: version ${brokenId}, active in the registry, did not load`));

    // No pending activation: the flip is the first the replica hears of the version.
    await registry.markActive(brokenId, 'activate');
    await until(() => failures().length === 1);
    assert.match(failures()[0]!.message, new RegExp(`dimension.*; version ${INITIAL_VERSION} was reloaded and serves, and ${brokenId} is not tried again until the registry names another version active$`));
    assert.equal(failures()[0]!.level, 'error');
    assert.equal((await cramped.active.retrieve(HAMLET, 1)).version, INITIAL_VERSION);
    // Polls go on (every beat) without trying it again: each try would pause serving.
    await new Promise((resolve) => setTimeout(resolve, 4 * BEAT_MS));
    assert.equal(failures().length, 1);
    assert.equal(fleet.log.filter((line) => line.message.startsWith(`cramped: switching to version ${brokenId} in place of version ${INITIAL_VERSION} (replace)`)).length, 1);

    await registry.markActive(other, 'activate');
    await until(() => cramped.active.current?.version === other);
    assert.ok(fleet.log.some((line) => line.message.startsWith(`cramped: switching to version ${other} in place of version ${INITIAL_VERSION} (replace): both versions need `)));
    assert.equal(cramped.active.info()?.swap?.mode, 'replace');
    assert.equal((await cramped.active.retrieve(HAMLET, 1)).version, other);
  });

  it('ignores corrupt and stale heartbeat files with a warning, and does not wait for a replica that stopped beating', async function () {
    await fleet.startWriter(initialFiles);
    await fleet.startReplica('alive');
    const folder = path.join(fleet.dataDir, HEARTBEAT_FOLDER);
    await writeFile(path.join(folder, 'torn.json'), '{"format": "agentic-retriever/heartbeat/1", "role": "repl');
    // A replica killed an hour ago: its file stays, its beat does not.
    const stale = { format: 'agentic-retriever/heartbeat/1', role: 'replica', name: 'gone:8000', host: 'gone', port: 8000, pid: 1, active: INITIAL_VERSION, ready: true, beatAt: new Date(Date.now() - 3_600_000).toISOString() };
    await writeFile(path.join(folder, 'gone_8000.json'), JSON.stringify(stale));
    const other = await register(otherFiles);

    const activation = await fleet.versions.activate(other);
    assert.deepEqual(activation.replicas, ['alive']);
    const warnings = fleet.log.filter((line) => line.level === 'warn').map((line) => line.message);
    assert.ok(warnings.some((message) => message.startsWith(`heartbeat file ${path.join(folder, 'torn.json')} ignored: not JSON`)), warnings.join('\n'));
    assert.ok(warnings.includes(`replica gone:8000 has not beaten since ${stale.beatAt}: left out of the fleet`), warnings.join('\n'));

    const app = createApp({ service: fleet.writerActive, config: CONFIG_DEFAULTS, logger: createLogger({ logLevel: 'silent', logQueries: false }), fleet: () => fleet.versions.fleetView() });
    const response = await request(app).get('/replicas').expect(200);
    assertMatchesOpenApi('GET', '/replicas', response);
    assert.deepEqual(
      response.body.replicas.map((replica: { name: string; live: boolean; active: string }) => [replica.name, replica.live, replica.active]),
      [
        ['alive', true, other],
        ['gone:8000', false, INITIAL_VERSION],
      ],
    );
    assert.equal(response.body.ignored.length, 1);
    assert.equal(response.body.ignored[0].file, path.join(folder, 'torn.json'));
  });

  it('a writer that restarts with an activation pending withdraws it; replicas drop what they prepared and serve on', async function () {
    await fleet.startWriter(initialFiles);
    await fleet.startReplica('replica-a');
    const other = await register(otherFiles);
    await fleet.versions.close();
    // The writer died after asking for the preparation and before the flip.
    const registry = await VersionRegistry.open(path.join(fleet.dataDir, 'versions'));
    await registry.markPending(other, 'activate');
    await until(async () => (await fleet.board.read()).servers.find((server) => server.name === 'replica-a')?.prepared === other);
    assert.equal(fleet.serving()['replica-a'], INITIAL_VERSION, 'prepared, not switched: the registry never flipped');

    await fleet.writerActive.close();
    await fleet.writerBeacon?.stop();
    const restarted = new Fleet(fleet.dataDir);
    restarted.replicas.push(...fleet.replicas.splice(0));
    fleet = restarted;
    await fleet.startWriter(initialFiles);
    assert.ok(fleet.log.some((line) => line.message === `the activation of version ${other} was interrupted by a restart before the flip; withdrawn, version ${INITIAL_VERSION} stays active`));
    await until(async () => (await fleet.board.read()).servers.find((server) => server.name === 'replica-a')?.prepared === undefined);
    assert.deepEqual(fleet.serving(), { writer: INITIAL_VERSION, 'replica-a': INITIAL_VERSION });
  });

  it('--replica refuses the training routes\' flags: the writer serves those', function () {
    for (const flags of [['--training_token', TOKEN], ['--no_training_auth']]) {
      assert.throws(() => parseServeArgs(['--replica', ...flags], {}), {
        code: 'bad_request',
        message: `--replica serves no training routes (the writer does): drop ${flags[0]}`,
      });
    }
    assert.equal(parseServeArgs(['--replica', '--heartbeat_ms', '250'], {}).heartbeatMs, 250);
  });

  it("a replica answers the training routes with 421, naming the writer from its heartbeat", async function () {
    await fleet.startWriter(initialFiles);
    await fleet.board.beat({ role: 'writer', name: '10.0.0.5:8000', host: '10.0.0.5', port: 8000, pid: 1, ready: true, active: INITIAL_VERSION });
    await fleet.startReplica('replica-a');
    const replica = fleet.replicas[0]!;
    // Read as live for a minute: that writer beats only once here.
    const patient = new HeartbeatBoard(fleet.dataDir, 20_000);
    const app = createHarness(replica.active, {}, [replicaTrainingRefusal(() => patient.read()), versionRouter({ versions: fleet.versions, token: TOKEN })]).app;
    for (const [method, route] of [['post', '/training/versions'], ['get', '/training/versions'], ['post', '/training/versions/v1/activate']] as const) {
      const response = await request(app)[method](route).set('Authorization', AUTH).expect(421);
      assert.deepEqual(response.body, {
        error: { code: 'misdirected', message: 'this server is a read-only replica (--replica): the training routes are served by the writer at http://10.0.0.5:8000' },
      });
    }
    await request(app).post('/retrieve').send({ queries: ['hamlet'] }).expect(200).expect('X-Retriever-Version', INITIAL_VERSION);
  });
});
