import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cp, mkdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Express } from 'express';
import request from 'supertest';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import { encodeIxfiHeader } from '../../src/index/ixfi-header.js';
import { versionRouter } from '../../src/http/version-routes.js';
import type { JobView } from '../../src/versions/index-jobs.js';
import { INITIAL_VERSION, VersionBusyError, VersionManager, type VersionManagerOptions } from '../../src/versions/version-manager.js';
import { REGISTRY_FILE, type VersionRecord } from '../../src/versions/version-registry.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi, openApiDocument } from '../support/openapi-schemas.js';
import { AUTH, expectedResults, pollJob, pollVersion, temporaryDir, TOKEN, writeCheckpoint } from '../support/version-fixtures.js';

const QUERIES: QueryInput[] = [
  { query: 'who was the lobbyist for genentech' },
  { question: 'Where did Horatio Hale study?', query: 'united states exploring expedition ethnologist' },
  { query: 'pavia cathedral construction date' },
];
const TOPK = 5;
const execFileAsync = promisify(execFile);
/** Rows of demo/corpus.jsonl. */
const ROWS = 243;

interface Service {
  dataDir: string;
  active: ActiveRetriever;
  versions: VersionManager;
  app: Express;
}

describe('checkpoint versions: register, build, activate, roll back (tiny models, the demo corpus, real HTTP)', function () {
  let initialFiles: RetrieverFiles;
  let checkpointDir: string;
  let scratch: string;
  const services: Service[] = [];
  const dataDirs = new Set<string>();

  /** A service as `serve` starts it with the training routes on: the registry decides what serves. */
  async function startService(dataDir?: string, buildBatchSize = 64, launchFiles = initialFiles, log?: VersionManagerOptions['log']): Promise<Service> {
    const dir = dataDir ?? (await temporaryDir('data'));
    dataDirs.add(dir);
    const active = new ActiveRetriever();
    const versions = await VersionManager.open({ dataDir: dir, active, fp16: false, buildBatchSize, buildEncoder: { intraOpNumThreads: 1 }, log });
    await versions.restore(launchFiles);
    const app = createHarness(active, {}, [versionRouter({ versions, token: TOKEN })]).app;
    const service = { dataDir: dir, active, versions, app };
    services.push(service);
    return service;
  }

  async function stopService(service: Service): Promise<void> {
    services.splice(services.indexOf(service), 1);
    await service.versions.close();
    await service.active.close();
  }

  function retrieve(app: Express, inputs: readonly QueryInput[] = QUERIES) {
    const queries = inputs.map((input) => (input.question ? `${input.question} [SEP] ${input.query}` : input.query));
    return request(app).post('/retrieve').send({ queries, topk: TOPK, return_scores: true }).expect(200);
  }

  /** A version of the launch model with its own copy of the index, registered as prebuilt. */
  async function registerCopy(service: Service, name: string): Promise<VersionRecord> {
    const indexPath = path.join(scratch, `${name}.index`);
    await cp(initialFiles.indexPath, indexPath);
    const { body } = await request(service.app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: initialFiles.modelDir, index_path: indexPath })
      .expect(201);
    return body.version;
  }

  before(async function () {
    initialFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    scratch = await temporaryDir('scratch');
    checkpointDir = await writeCheckpoint(path.join(scratch, 'checkpoint-500'), initialFiles.modelDir, 500);
  });

  afterEach(async function () {
    for (const service of [...services]) await stopService(service);
  });

  after(async function () {
    for (const dir of [scratch, ...dataDirs]) await rm(dir, { recursive: true, force: true });
  });

  it('serves the launch files as version "initial" and lists it as active', async function () {
    const { app } = await startService();
    const response = await retrieve(app);
    assert.equal(response.headers['x-retriever-version'], INITIAL_VERSION);
    const { body } = await request(app).get('/training/versions').set('Authorization', AUTH).expect(200);
    assert.equal(body.active, INITIAL_VERSION);
    assert.equal(body.previous, null);
    assert.deepEqual(
      body.versions.map((version: VersionRecord) => [version.id, version.state, version.modelDir, version.indexPath]),
      [[INITIAL_VERSION, 'active', initialFiles.modelDir, initialFiles.indexPath]],
    );
  });

  it('serves every /training/versions and /training/jobs operation openapi.yaml documents', async function () {
    const { app } = await startService();
    const documented = Object.entries(openApiDocument.paths)
      .filter(([route]) => /^\/training\/(versions|jobs)/.test(route))
      .flatMap(([route, operations]) => Object.keys(operations).filter((key) => key !== 'parameters').map((method) => ({ route, method })));
    assert.equal(documented.length, 10);
    for (const { route, method } of documented) {
      const res = await request(app)[method as 'get' | 'post' | 'delete'](route.replace('{id}', 'unknown-id')).set('Authorization', AUTH);
      assert.doesNotMatch(String(res.body.error?.message), /^no route/, `${method.toUpperCase()} ${route} is documented but not served`);
      assertMatchesOpenApi(method, route, res);
    }
  });

  it('answers 401 without the bearer token', async function () {
    const { app } = await startService();
    const unauthorized = await request(app).get('/training/versions').expect(401);
    assertMatchesOpenApi('GET', '/training/versions', unauthorized);
    const { body } = unauthorized;
    assert.equal(body.error.code, 'unauthorized');
    await request(app).post('/training/versions').send({ model_path: checkpointDir, build_index: true }).expect(401);
    await request(app).get('/training/jobs').expect(401);
  });

  it('registers a safetensors checkpoint at once (202, converting), converts it and builds its index in one background pipeline, activates it exactly at the swap, and rolls back', async function () {
    const service = await startService();
    const { app } = service;
    const registered = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: checkpointDir, build_index: true, label: 'checkpoint-500' })
      .expect(202);
    assertMatchesOpenApi('POST', '/training/versions', registered);
    const versionId: string = registered.body.version.id;
    assert.equal(versionId, 'v1');
    // The answer came before the conversion ended: nothing converted, no job yet.
    assert.equal(registered.body.version.state, 'converting');
    assert.equal(registered.body.version.modelDir, undefined);
    assert.equal(registered.body.version.indexPath, undefined);
    assert.equal(registered.body.job, undefined);
    assert.equal(registered.body.version.source, checkpointDir);
    assert.equal(registered.body.version.label, 'checkpoint-500');
    assert.equal(registered.body.version.fingerprint, undefined, 'the service keeps its fingerprint to itself');

    const converted = await pollVersion(app, versionId);
    assert.equal(converted.state, 'building');
    const jobList = (await request(app).get('/training/jobs').set('Authorization', AUTH).expect(200)).body.jobs as JobView[];
    assert.deepEqual(jobList.map((job) => [job.id, job.versionId, job.rowsTotal]), [[converted.jobId, versionId, ROWS]], 'the pipeline started the build');
    // The checkpoint was converted into our model folder under the data dir.
    assert.ok(converted.modelDir!.startsWith(path.join(service.dataDir, 'models') + path.sep));
    assert.equal(JSON.parse(await readFile(path.join(converted.modelDir!, 'retriever.json'), 'utf8')).provenance.source, 'checkpoint');

    const progress = await pollJob(app, converted.jobId!);
    const done = progress.at(-1)!;
    assert.equal(done.state, 'done');
    assert.equal(done.rowsDone, ROWS);
    assert.equal(done.rowsTotal, ROWS);
    assert.ok(done.finishedAt);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.rowsDone >= progress[i - 1]!.rowsDone, 'progress never goes back');
    const midway = progress.filter((view) => view.state === 'running' && view.rowsPerSecond !== undefined);
    for (const view of midway) {
      assert.ok(view.rowsPerSecond! > 0);
      assert.ok(Math.abs(view.etaSeconds! - (view.rowsTotal - view.rowsDone) / view.rowsPerSecond!) < 1e-6);
    }
    const builtResponse = await request(app).get(`/training/versions/${versionId}`).set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('GET', '/training/versions/{id}', builtResponse);
    const built: VersionRecord = builtResponse.body;
    assert.equal(built.state, 'ready');
    assert.ok(built.indexPath!.startsWith(path.join(service.dataDir, 'versions', versionId) + path.sep));
    assert.equal((await stat(built.indexPath!)).size, 45 + ROWS * 32 * 4);

    const expected = await expectedResults(
      { [INITIAL_VERSION]: initialFiles, [versionId]: { modelDir: built.modelDir!, indexPath: built.indexPath!, corpusPath: built.corpusPath } },
      [QUERIES],
      TOPK,
    );
    assert.notDeepEqual(expected.get(versionId), expected.get(INITIAL_VERSION), 'the two versions rank differently');

    const before = await retrieve(app);
    assert.equal(before.headers['x-retriever-version'], INITIAL_VERSION);
    assert.deepEqual(before.body.result, expected.get(INITIAL_VERSION)![0]);

    const activation = await request(app).post(`/training/versions/${versionId}/activate`).set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('POST', '/training/versions/{id}/activate', activation);
    assert.equal(activation.body.version.id, versionId);
    assert.equal(activation.body.version.state, 'active');
    assert.equal(activation.body.previous, INITIAL_VERSION);
    assert.ok(activation.body.loadMs > 0);

    const after = await retrieve(app);
    assert.equal(after.headers['x-retriever-version'], versionId);
    assert.deepEqual(after.body.result, expected.get(versionId)![0]);
    const info = await request(app).get('/info').expect(200);
    assert.equal(info.body.retriever.version, versionId);
    assert.equal(info.body.retriever.modelDir, built.modelDir);
    const listing = await request(app).get('/training/versions').set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('GET', '/training/versions', listing);
    const listed = listing.body;
    assert.equal(listed.active, versionId);
    assert.equal(listed.previous, INITIAL_VERSION);
    assert.deepEqual(
      listed.versions.map((version: VersionRecord) => [version.id, version.state]),
      [[INITIAL_VERSION, 'ready'], [versionId, 'active']],
    );

    const rollback = await request(app).post('/training/versions/rollback').set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('POST', '/training/versions/rollback', rollback);
    assert.equal(rollback.body.version.id, INITIAL_VERSION);
    assert.equal(rollback.body.previous, versionId);
    const rolledBack = await retrieve(app);
    assert.equal(rolledBack.headers['x-retriever-version'], INITIAL_VERSION);
    assert.deepEqual(rolledBack.body.result, expected.get(INITIAL_VERSION)![0]);
    assert.equal((await request(app).get('/info').expect(200)).body.retriever.version, INITIAL_VERSION);

    const nothingBefore = await request(app).post('/training/versions/rollback').set('Authorization', AUTH).expect(409);
    assertMatchesOpenApi('POST', '/training/versions/rollback', nothingBefore);
    assert.equal(nothingBefore.body.error.code, 'conflict');
    assert.match(nothingBefore.body.error.message, /no previously active version/);
  });

  it('registers a prebuilt index and refuses one that does not fit the model or the corpus, naming why', async function () {
    const { app } = await startService();
    const ok = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: initialFiles.modelDir, index_path: initialFiles.indexPath })
      .expect(201);
    assert.equal(ok.body.version.state, 'ready');
    assert.equal(ok.body.version.modelDir, initialFiles.modelDir);
    assert.equal(ok.body.job, undefined);

    const wrongDimension = path.join(scratch, 'dimension-8.index');
    await writeFile(wrongDimension, Buffer.concat([encodeIxfiHeader({ dimension: 8, rows: ROWS }), Buffer.alloc(ROWS * 8 * 4)]));
    const dimension = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: checkpointDir, index_path: wrongDimension })
      .expect(400);
    assertMatchesOpenApi('POST', '/training/versions', dimension);
    assert.equal(dimension.body.error.field, 'index_path');
    assert.match(dimension.body.error.message, /dimension 8 does not match the encoder's dimension 32/);

    const wrongRows = path.join(scratch, 'rows-10.index');
    await writeFile(wrongRows, Buffer.concat([encodeIxfiHeader({ dimension: 32, rows: 10 }), Buffer.alloc(10 * 32 * 4)]));
    const rows = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: initialFiles.modelDir, index_path: wrongRows })
      .expect(400);
    assert.match(rows.body.error.message, /10 rows but the corpus has 243 rows/);

    // open() on a FIFO would wait for a writer on one of libuv's four pool threads: five used to stop /retrieve.
    for (let pipe = 0; pipe < 5; pipe++) {
      const fifo = path.join(scratch, `pipe-${pipe}.index`);
      execFileSync('mkfifo', [fifo]);
      const refused = await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: initialFiles.modelDir, index_path: fifo }).expect(400);
      assertMatchesOpenApi('POST', '/training/versions', refused);
      assert.equal(refused.body.error.field, 'index_path');
      assert.equal(refused.body.error.message, `index_path: index ${fifo} is a FIFO (named pipe), not a regular file`);
    }
    await retrieve(app);
    const folder = await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: initialFiles.modelDir, index_path: scratch }).expect(400);
    assert.equal(folder.body.error.message, `index_path: index ${scratch} is a directory, not a regular file`);

    const noModel = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: path.join(scratch, 'missing'), build_index: true })
      .expect(400);
    assert.equal(noModel.body.error.field, 'model_path');
    assert.match(noModel.body.error.message, /neither a model folder/);

    for (const body of [{ model_path: checkpointDir }, { model_path: checkpointDir, build_index: true, index_path: wrongRows }]) {
      const both = await request(app).post('/training/versions').set('Authorization', AUTH).send(body).expect(400);
      assert.match(both.body.error.message, /either index_path or build_index/);
    }
    const badType = await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: 7 }).expect(400);
    assert.equal(badType.body.error.field, 'model_path');
    const unknown = await request(app).post('/training/versions/v404/activate').set('Authorization', AUTH).expect(404);
    assertMatchesOpenApi('POST', '/training/versions/{id}/activate', unknown);
    assert.equal(unknown.body.error.code, 'not_found');
    const listed = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body;
    assert.equal(listed.versions.length, 2, 'refused registrations leave nothing behind');
  });

  it('answers an Idempotency-Key retry with its version even once the model folder it named is gone', async function () {
    const { app } = await startService();
    const modelPath = path.join(scratch, 'model-then-gone');
    const indexPath = path.join(scratch, 'model-then-gone.index');
    await cp(initialFiles.modelDir, modelPath, { recursive: true });
    await cp(initialFiles.indexPath, indexPath);
    const post = () => request(app).post('/training/versions').set('Authorization', AUTH).set('Idempotency-Key', 'key-gone').send({ model_path: modelPath, index_path: indexPath });
    const made = await post().expect(201);
    await rm(modelPath, { recursive: true });
    const retried = await post().expect(200);
    assert.equal(retried.body.version.id, made.body.version.id);
    assert.equal(retried.body.version.idempotencyKey, 'key-gone');
  });

  it('answers a repeated registration with the version it made (200) and starts nothing: the same files and options, or the same Idempotency-Key; a key reused with another body is a 409', async function () {
    const { app } = await startService();
    const post = (body: object, key?: string) => {
      const sent = request(app).post('/training/versions').set('Authorization', AUTH);
      return (key === undefined ? sent : sent.set('Idempotency-Key', key)).send(body);
    };
    const indexPath = path.join(scratch, 'repeated.index');
    await cp(initialFiles.indexPath, indexPath);
    const prebuilt = { model_path: initialFiles.modelDir, index_path: indexPath };
    const first = await post(prebuilt).expect(201);
    const again = await post(prebuilt).expect(200);
    assertMatchesOpenApi('POST', '/training/versions', again);
    assert.deepEqual(again.body, first.body);
    const labelled = await post({ ...prebuilt, label: 'other' }).expect(201);
    assert.notEqual(labelled.body.version.id, first.body.version.id, 'another label is another registration');

    // A checkpoint is converted and built once; a repeat while it converts or after it is built answers with it.
    const checkpoint = await writeCheckpoint(path.join(scratch, 'checkpoint-800'), initialFiles.modelDir, 800);
    const build = { model_path: checkpoint, build_index: true };
    const registered = await post(build).expect(202);
    const id: string = registered.body.version.id;
    const repeated = await post(build).expect(200);
    assertMatchesOpenApi('POST', '/training/versions', repeated);
    assert.equal(repeated.body.version.id, id);
    const building = await pollVersion(app, id);
    assert.equal(building.state, 'building', building.reason);
    assert.equal((await pollJob(app, building.jobId!)).at(-1)!.state, 'done');
    const afterBuild = await post(build).expect(200);
    assert.deepEqual([afterBuild.body.version.state, afterBuild.body.job.id, afterBuild.body.job.state], ['ready', building.jobId, 'done']);
    const jobs = (await request(app).get('/training/jobs').set('Authorization', AUTH).expect(200)).body.jobs as JobView[];
    assert.deepEqual(jobs.map((job) => job.versionId), [id], 'one build of the checkpoint');

    // Rewritten weights (a new modification time) are another checkpoint.
    await utimes(path.join(checkpoint, 'model.safetensors'), new Date(), new Date(Date.UTC(2030, 0, 1)));
    const retrained = await post(build).expect(202);
    assert.notEqual(retrained.body.version.id, id);
    assert.equal((await pollVersion(app, retrained.body.version.id)).state, 'building');

    const keyed = await post({ ...prebuilt, label: 'keyed' }, 'key-1').expect(201);
    assert.equal(keyed.body.version.idempotencyKey, 'key-1');
    const retried = await post({ ...prebuilt, label: 'keyed' }, 'key-1').expect(200);
    assert.equal(retried.body.version.id, keyed.body.version.id);
    const reused = await post({ ...prebuilt, label: 'another' }, 'key-1').expect(409);
    assertMatchesOpenApi('POST', '/training/versions', reused);
    assert.deepEqual(reused.body.error, {
      code: 'conflict',
      field: 'Idempotency-Key',
      message: `Idempotency-Key "key-1" was already used with a different body: it registered version ${keyed.body.version.id} (model_path ${initialFiles.modelDir}, index_path ${indexPath}, label "keyed"); send a new key for a new registration`,
    });
    const reusedForBuild = await post(build, 'key-1').expect(409);
    assert.match(reusedForBuild.body.error.message, /^Idempotency-Key "key-1" was already used with a different body/);
    const empty = await post(prebuilt, '').expect(400);
    assert.deepEqual([empty.body.error.field, empty.body.error.message], ['Idempotency-Key', 'Idempotency-Key must be 1 to 255 characters']);

    const listed = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body.versions as VersionRecord[];
    assert.deepEqual(
      listed.map((version) => version.id),
      [INITIAL_VERSION, first.body.version.id, labelled.body.version.id, id, retrained.body.version.id, keyed.body.version.id],
      'repeats and refusals registered nothing',
    );
  });

  it('makes one version and one build of two identical registrations sent at once, and refuses a build of it meanwhile (409)', async function () {
    const { app } = await startService();
    const checkpoint = await writeCheckpoint(path.join(scratch, 'checkpoint-900'), initialFiles.modelDir, 900);
    const send = () => request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: checkpoint, build_index: true });
    const answers = await Promise.all([send(), send()]);
    assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 202]);
    const id: string = answers[0]!.body.version.id;
    assert.equal(answers[1]!.body.version.id, id);
    for (const answer of answers) assert.equal(answer.body.version.state, 'converting');
    const refused = await request(app).post(`/training/versions/${id}/build`).set('Authorization', AUTH).expect(409);
    assertMatchesOpenApi('POST', '/training/versions/{id}/build', refused);
    assert.match(refused.body.error.message, new RegExp(`^version ${id} is (converting|building); only a registered or failed version's index is built$`));

    const building = await pollVersion(app, id);
    assert.equal(building.state, 'building', building.reason);
    const again = await request(app).post(`/training/versions/${id}/build`).set('Authorization', AUTH).expect(409);
    assert.equal(again.body.error.message, `version ${id} is building; only a registered or failed version's index is built`);
    assert.equal((await pollJob(app, building.jobId!)).at(-1)!.state, 'done');
    const jobs = (await request(app).get('/training/jobs').set('Authorization', AUTH).expect(200)).body.jobs as JobView[];
    assert.deepEqual(jobs.map((job) => [job.id, job.versionId]), [[building.jobId, id]]);
    const listed = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body.versions as VersionRecord[];
    assert.deepEqual(listed.map((version) => [version.id, version.state]), [[INITIAL_VERSION, 'active'], [id, 'ready']]);
  });

  it('marks a checkpoint whose conversion fails as failed with the reason; it is neither built nor activated, and once deleted it registers anew', async function () {
    const { app } = await startService();
    const broken = path.join(scratch, 'checkpoint-broken');
    await cp(checkpointDir, broken, { recursive: true });
    await writeFile(path.join(broken, 'model.safetensors'), 'not a safetensors file');
    const send = () => request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: broken, build_index: true }).expect(202);
    const id: string = (await send()).body.version.id;
    const failed = await pollVersion(app, id);
    assert.equal(failed.state, 'failed');
    assert.match(failed.reason!, /^checkpoint conversion failed: .*model\.safetensors/);
    assert.equal(failed.modelDir, undefined);
    const build = await request(app).post(`/training/versions/${id}/build`).set('Authorization', AUTH).expect(409);
    assert.equal(build.body.error.message, `version ${id} has no converted model (${failed.reason}); delete it and register the checkpoint again`);
    const activate = await request(app).post(`/training/versions/${id}/activate`).set('Authorization', AUTH).expect(409);
    assert.equal(activate.body.error.message, `version ${id} has no index yet (failed: ${failed.reason})`);
    assert.deepEqual((await request(app).delete(`/training/versions/${id}`).set('Authorization', AUTH).expect(200)).body.removed, []);
    const anew = (await send()).body.version.id;
    assert.notEqual(anew, id);
    assert.equal((await pollVersion(app, anew)).state, 'failed');
  });

  it('serialises activations: a second one while the first loads is a 409, and the first completes', async function () {
    const { app } = await startService();
    const ids: string[] = [];
    for (let n = 0; n < 2; n++) {
      // Two labels make two versions of the same files; the same body twice would be one.
      const { body } = await request(app)
        .post('/training/versions')
        .set('Authorization', AUTH)
        .send({ model_path: initialFiles.modelDir, index_path: initialFiles.indexPath, label: `copy-${n}` })
        .expect(201);
      ids.push(body.version.id);
    }
    const [first, second] = await Promise.all(
      ids.map((id) => request(app).post(`/training/versions/${id}/activate`).set('Authorization', AUTH)),
    );
    const statuses = [first!.status, second!.status];
    assert.deepEqual([...statuses].sort(), [200, 409]);
    const winner = statuses[0] === 200 ? first! : second!;
    const loser = statuses[0] === 200 ? second! : first!;
    assertMatchesOpenApi('POST', '/training/versions/{id}/activate', loser);
    assert.equal(loser.body.error.code, 'conflict');
    assert.match(loser.body.error.message, /another activation, rollback or deletion is in progress/);
    assert.equal((await retrieve(app)).headers['x-retriever-version'], winner.body.version.id);
  });

  it('leaves the old version serving when an activation fails, and marks the version failed with the reason', async function () {
    const service = await startService();
    const { app } = service;
    const modelCopy = path.join(scratch, 'model-copy');
    await cp(initialFiles.modelDir, modelCopy, { recursive: true });
    const indexCopy = path.join(scratch, 'index-copy.index');
    await cp(initialFiles.indexPath, indexCopy);
    const registerCopyAs = async (label: string) =>
      (await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: modelCopy, index_path: indexCopy, label }).expect(201)).body.version;
    const vanishing = await registerCopyAs('vanishing');
    const swapped = await registerCopyAs('swapped');
    await writeFile(indexCopy, Buffer.concat([encodeIxfiHeader({ dimension: 8, rows: ROWS }), Buffer.alloc(ROWS * 8 * 4)]));

    const mismatch = await request(app).post(`/training/versions/${swapped.id}/activate`).set('Authorization', AUTH).expect(400);
    assertMatchesOpenApi('POST', '/training/versions/{id}/activate', mismatch);
    assert.match(mismatch.body.error.message, new RegExp(`version ${swapped.id}: activation failed: .*dimension 8 does not match the encoder's dimension 32`));
    await rm(modelCopy, { recursive: true });
    const missing = await request(app).post(`/training/versions/${vanishing.id}/activate`).set('Authorization', AUTH).expect(400);
    assert.match(missing.body.error.message, new RegExp(`version ${vanishing.id}: activation failed: .*model-copy`));

    const response = await retrieve(app);
    assert.equal(response.headers['x-retriever-version'], INITIAL_VERSION);
    const states = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body;
    assert.equal(states.active, INITIAL_VERSION);
    const byId = new Map(states.versions.map((version: VersionRecord) => [version.id, version]));
    assert.equal((byId.get(swapped.id) as VersionRecord).state, 'failed');
    assert.match((byId.get(swapped.id) as VersionRecord).reason!, /dimension 8 does not match/);
    assert.equal((byId.get(vanishing.id) as VersionRecord).state, 'failed');
    assert.match((byId.get(vanishing.id) as VersionRecord).reason!, /model-copy/);
    assert.equal((byId.get(INITIAL_VERSION) as VersionRecord).state, 'active');
  });

  it('remembers the active version and the history across a restart', async function () {
    const first = await startService();
    const version = await registerCopy(first, 'remembered');
    await request(first.app).post(`/training/versions/${version.id}/activate`).set('Authorization', AUTH).expect(200);
    await stopService(first);
    const stored = JSON.parse(await readFile(path.join(first.dataDir, 'versions', REGISTRY_FILE), 'utf8'));
    assert.equal(stored.activeId, version.id);

    const again = await startService(first.dataDir);
    assert.equal((await retrieve(again.app)).headers['x-retriever-version'], version.id);
    assert.equal(again.active.current!.files.indexPath, version.indexPath);
    const listed = (await request(again.app).get('/training/versions').set('Authorization', AUTH).expect(200)).body;
    assert.equal(listed.active, version.id);
    assert.equal(listed.previous, INITIAL_VERSION);
    await request(again.app).post('/training/versions/rollback').set('Authorization', AUTH).expect(200);
    assert.equal((await retrieve(again.app)).headers['x-retriever-version'], INITIAL_VERSION);
  });

  it('serves the launch files when the remembered version no longer loads, and marks it failed', async function () {
    const first = await startService();
    const version = await registerCopy(first, 'vanishing');
    await request(first.app).post(`/training/versions/${version.id}/activate`).set('Authorization', AUTH).expect(200);
    await stopService(first);
    await rm(version.indexPath!);

    const again = await startService(first.dataDir);
    assert.equal((await retrieve(again.app)).headers['x-retriever-version'], INITIAL_VERSION);
    const reloaded = again.versions.version(version.id);
    assert.equal(reloaded.state, 'failed');
    assert.match(reloaded.reason!, /activation failed: .*cannot open/);
  });

  it('does not serve a remembered version registered for another corpus than the launch flags name', async function () {
    const first = await startService();
    const version = await registerCopy(first, 'other-corpus');
    await request(first.app).post(`/training/versions/${version.id}/activate`).set('Authorization', AUTH).expect(200);
    await stopService(first);
    const movedCorpus = path.join(scratch, 'moved-corpus.jsonl');
    await cp(initialFiles.corpusPath, movedCorpus);

    const again = await startService(first.dataDir, 64, { ...initialFiles, corpusPath: movedCorpus, sidecarPath: `${movedCorpus}.offsets` });
    assert.equal((await retrieve(again.app)).headers['x-retriever-version'], INITIAL_VERSION);
    assert.equal(again.active.current!.files.corpusPath, movedCorpus);
    const refused = again.versions.version(version.id);
    assert.equal(refused.state, 'failed');
    assert.equal(refused.reason, `registered for corpus ${initialFiles.corpusPath}, but the server now serves ${movedCorpus}`);
    assert.equal(again.versions.version(INITIAL_VERSION).corpusPath, movedCorpus, 'version initial follows the launch flags');
  });

  it('does not serve a version that finishes loading while the server shuts down', async function () {
    const service = await startService();
    const version = await registerCopy(service, 'late');
    const outcome = service.versions.activate(version.id).then(
      () => undefined,
      (error: Error) => error,
    );
    await stopService(service);
    assert.match((await outcome)?.message ?? 'activated', new RegExp(`version ${version.id} loaded while the server was shutting down`));
    assert.equal(service.active.current, undefined);
    assert.equal(service.versions.list().active, INITIAL_VERSION);
  });

  it('deletes a version with the files made for it, keeps what the client named, and refuses the active, the launch and a building version', async function () {
    const service = await startService(undefined, 8);
    const { app } = service;
    const remove = (id: string) => request(app).delete(`/training/versions/${id}`).set('Authorization', AUTH);
    /** Registers the checkpoint and waits for its conversion: the version is building then. */
    const register = async (label: string) => {
      const { body } = await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: checkpointDir, build_index: true, label }).expect(202);
      const version = await pollVersion(app, body.version.id);
      assert.equal(version.state, 'building');
      return { version, job: { id: version.jobId! } };
    };
    const versionsDir = path.join(service.dataDir, 'versions');

    const first = await register('first');
    const building = await remove(first.version.id).expect(409);
    assertMatchesOpenApi('DELETE', '/training/versions/{id}', building);
    assert.match(building.body.error.message, new RegExp(`version v1 is building its index; cancel job ${first.job.id} \\(DELETE /training/jobs/${first.job.id}\\) first`));
    assert.equal((await pollJob(app, first.job.id)).at(-1)!.state, 'done');
    // The same checkpoint under another label: a second version sharing the first one's ONNX conversion.
    const second = await register('second');
    assert.equal(second.version.modelDir, first.version.modelDir);
    await pollJob(app, second.job.id);
    const copy = await registerCopy(service, 'kept-by-client');

    await request(app).post('/training/versions/v1/activate').set('Authorization', AUTH).expect(200);
    assert.match((await remove('v1').expect(409)).body.error.message, /version v1 is active; activate or roll back to another version first/);
    assert.match((await remove(INITIAL_VERSION).expect(409)).body.error.message, /version initial is the launch flags' files/);
    await request(app).post(`/training/versions/${copy.id}/activate`).set('Authorization', AUTH).expect(200);

    const deleted = await remove('v1').expect(200);
    assertMatchesOpenApi('DELETE', '/training/versions/{id}', deleted);
    assert.equal(deleted.body.version.id, 'v1');
    assert.deepEqual(deleted.body.removed, [path.join(versionsDir, 'v1')], 'the conversion v2 still uses stays');
    await assert.rejects(stat(path.join(versionsDir, 'v1')), { code: 'ENOENT' });
    assert.ok((await stat(first.version.modelDir!)).isDirectory());
    assert.equal((await request(app).get('/training/versions/v1').set('Authorization', AUTH).expect(404)).body.error.code, 'not_found');
    const listed = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body;
    assert.deepEqual(listed.versions.map((version: VersionRecord) => version.id), [INITIAL_VERSION, 'v2', copy.id]);
    assert.equal(listed.previous, INITIAL_VERSION, 'a rollback skips the deleted version');
    const jobs = (await request(app).get('/training/jobs').set('Authorization', AUTH).expect(200)).body.jobs;
    assert.deepEqual(jobs.map((job: JobView) => job.versionId), ['v2']);
    const registry = JSON.parse(await readFile(path.join(versionsDir, REGISTRY_FILE), 'utf8'));
    assert.deepEqual(registry.history, [INITIAL_VERSION, copy.id]);

    const last = await remove('v2').expect(200);
    assert.deepEqual(last.body.removed, [path.join(versionsDir, 'v2'), second.version.modelDir], 'no version uses the conversion now');
    await assert.rejects(stat(second.version.modelDir!), { code: 'ENOENT' });

    await request(app).post('/training/versions/rollback').set('Authorization', AUTH).expect(200);
    const prebuilt = await remove(copy.id).expect(200);
    assert.deepEqual(prebuilt.body.removed, []);
    assert.ok((await stat(copy.indexPath!)).isFile(), 'an index the client named stays');
    assert.ok((await stat(initialFiles.modelDir)).isDirectory());
    assert.equal((await remove('v404').expect(404)).body.error.code, 'not_found');
    assert.equal((await retrieve(app)).headers['x-retriever-version'], INITIAL_VERSION);
  });

  it('never runs a build start and a deletion of one version together: the second is refused (conflict, 409) with what is under way', async function () {
    const service = await startService(undefined, 8);
    const { app, versions } = service;
    const registered = await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: initialFiles.modelDir, build_index: true }).expect(201);
    const id: string = registered.body.version.id;
    await versions.cancelJob(registered.body.job.id);
    assert.equal(versions.version(id).state, 'registered');

    // Asked in the same tick, as two requests arriving together are: the build is starting when the deletion comes.
    const [built, removedDuringBuild] = await Promise.allSettled([versions.build(id), versions.remove(id)]);
    assert.equal(built.status, 'fulfilled');
    assert.equal(removedDuringBuild.status, 'rejected');
    assert.ok(removedDuringBuild.reason instanceof VersionBusyError && removedDuringBuild.reason.code === 'conflict', String(removedDuringBuild.reason));
    assert.equal(removedDuringBuild.reason.message, `version ${id} is starting its index build`);
    assert.equal(versions.version(id).state, 'building');
    await versions.cancelJob(built.value.id);

    const [removed, builtDuringRemoval] = await Promise.allSettled([versions.remove(id), versions.build(id)]);
    assert.equal(removed.status, 'fulfilled');
    assert.deepEqual(removed.value.removed, [path.join(service.dataDir, 'versions', id)]);
    assert.equal(builtDuringRemoval.status, 'rejected');
    assert.ok(builtDuringRemoval.reason instanceof VersionBusyError && builtDuringRemoval.reason.code === 'conflict', String(builtDuringRemoval.reason));
    assert.equal(builtDuringRemoval.reason.message, `version ${id} is being deleted`);
    await assert.rejects(stat(path.join(service.dataDir, 'versions', id)), { code: 'ENOENT' });
    assert.deepEqual(versions.jobs(), [], 'no job was started for the deleted version, and its cancelled ones went with it');
    assert.equal((await request(app).post(`/training/versions/${id}/build`).set('Authorization', AUTH).expect(404)).body.error.code, 'not_found');
  });

  it('cancels an index job, keeps its partial file, and resumes it from there', async function () {
    const service = await startService(undefined, 8);
    const { app } = service;
    const registered = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: checkpointDir, build_index: true })
      .expect(202);
    const body = { version: registered.body.version as VersionRecord, job: { id: (await pollVersion(app, registered.body.version.id)).jobId! } };
    await pollJob(app, body.job.id, (job) => job.rowsDone >= 16 || job.state !== 'running');
    const cancelled = await request(app).delete(`/training/jobs/${body.job.id}`).set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('DELETE', '/training/jobs/{id}', cancelled);
    assert.equal(cancelled.body.state, 'cancelled');
    assert.ok(cancelled.body.rowsDone >= 16 && cancelled.body.rowsDone < ROWS, `stopped at ${cancelled.body.rowsDone}`);
    const version: VersionRecord = (await request(app).get(`/training/versions/${body.version.id}`).set('Authorization', AUTH).expect(200)).body;
    assert.equal(version.state, 'registered');
    assert.match(version.reason!, new RegExp(`cancelled at row ${cancelled.body.rowsDone} of ${ROWS}; POST /training/versions/${version.id}/build resumes it`));
    assert.equal((await stat(`${version.indexPath!}.partial`)).isFile(), true);
    const early = await request(app).post(`/training/versions/${version.id}/activate`).set('Authorization', AUTH).expect(409);
    assert.match(early.body.error.message, /has no index yet \(registered/);
    assert.equal(early.body.error.message, `version ${version.id} has no index yet (registered: ${version.reason})`, 'the refusal names the resuming request too');
    const recorded = service.versions.version(version.id);
    assert.deepEqual(
      [recorded.reason, recorded.buildStopped],
      [`index build ${body.job.id} cancelled at row ${cancelled.body.rowsDone} of ${ROWS}`, 'cancelled'],
      'the versions room records how the build stopped; only HTTP names the request',
    );
    const again = await request(app).delete(`/training/jobs/${body.job.id}`).set('Authorization', AUTH).expect(409);
    assert.match(again.body.error.message, /is not running \(it is cancelled\)/);

    const starts = await Promise.all(
      [0, 1].map(() => request(app).post(`/training/versions/${version.id}/build`).set('Authorization', AUTH)),
    );
    assert.deepEqual(starts.map((start) => start.status).sort(), [202, 409], 'one build of a version at a time');
    const resumed = starts.find((start) => start.status === 202)!;
    assert.match(starts.find((start) => start.status === 409)!.body.error.message, new RegExp(`version ${version.id} is (already building its index|building|starting its index build)`));
    assertMatchesOpenApi('POST', '/training/versions/{id}/build', resumed);
    assert.notEqual(resumed.body.id, body.job.id);
    assert.deepEqual(
      { resumedFrom: resumed.body.resumedFrom, rowsDone: resumed.body.rowsDone },
      { resumedFrom: cancelled.body.rowsDone, rowsDone: cancelled.body.rowsDone },
      'a resumed build shows the rows on disk from its start',
    );
    const finished = (await pollJob(app, resumed.body.id)).at(-1)!;
    assert.equal(finished.state, 'done');
    assert.equal(finished.resumedFrom, cancelled.body.rowsDone);
    assert.equal(finished.rowsDone, ROWS);
    const jobList = await request(app).get('/training/jobs').set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('GET', '/training/jobs', jobList);
    const jobs = jobList.body.jobs;
    assert.deepEqual(jobs.map((job: JobView) => [job.id, job.state]), [[body.job.id, 'cancelled'], [resumed.body.id, 'done']]);
    const rebuild = await request(app).post(`/training/versions/${version.id}/build`).set('Authorization', AUTH).expect(409);
    assert.match(rebuild.body.error.message, /is ready; only a registered or failed version's index is built/);
    await request(app).post(`/training/versions/${version.id}/activate`).set('Authorization', AUTH).expect(200);
    assert.equal((await retrieve(app)).headers['x-retriever-version'], version.id);
  });

  const fullDisks = [
    { what: 'the version\'s index folder', mountAt: ['versions', 'v1'], registryWritten: true },
    { what: 'the whole versions folder, registry included', mountAt: ['versions'], registryWritten: false },
  ];
  for (const { what, mountAt, registryWritten } of fullDisks) {
    it(`fails an index build when ${what} is full: ENOSPC named in the job and version, logged as an error, kept after a restart, resumed once space is freed (a real tmpfs mount)`, async function () {
      const dataDir = await temporaryDir('full');
      dataDirs.add(dataDir);
      // The first version registered here is v1; `mountAt` is a 16 KiB tmpfs.
      const mounted = path.join(dataDir, ...mountAt);
      await mkdir(mounted, { recursive: true });
      try {
        await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mounted]);
      } catch (error) {
        process.stderr.write(`      skipped: cannot mount a tmpfs here (${(error as Error).message.trim()})\n`);
        this.skip();
      }
      try {
        const logs: Array<{ message: string; level: string }> = [];
        const service = await startService(dataDir, 8, initialFiles, (message, _fields, level = 'info') => logs.push({ message, level }));
        const registered = await request(service.app)
          .post('/training/versions')
          .set('Authorization', AUTH)
          .send({ model_path: checkpointDir, build_index: true })
          .expect(202);
        assert.equal(registered.body.version.id, 'v1');
        const body = { job: { id: (await pollVersion(service.app, 'v1')).jobId! } };
        const failed = (await pollJob(service.app, body.job.id)).at(-1)!;
        assert.equal(failed.state, 'failed');
        assert.match(failed.reason!, /no space left on device \(ENOSPC\).*build again to resume/);
        assert.ok(failed.rowsDone > 0 && failed.rowsDone < ROWS, `failed at row ${failed.rowsDone}`);
        const version: VersionRecord = (await request(service.app).get('/training/versions/v1').set('Authorization', AUTH).expect(200)).body;
        assert.equal(version.state, 'failed');
        assert.match(version.reason!, new RegExp(`index build ${body.job.id} failed: no space left on device \\(ENOSPC\\)`));
        const cancel = await request(service.app).delete(`/training/jobs/${body.job.id}`).set('Authorization', AUTH).expect(409);
        assert.match(cancel.body.error.message, /is not running \(it is failed\)/);
        // The API shows the end once it is in memory; it is logged once the registry write is done or kept.
        while (!logs.some((entry) => entry.level === 'error')) await setTimeout(10);
        const errors = logs.filter((entry) => entry.level === 'error').map((entry) => entry.message);
        assert.equal(errors[0], `index job ${body.job.id} of version v1: failed (${failed.reason})`);
        if (registryWritten) assert.equal(errors.length, 1);
        else assert.match(errors[1]!, /^index job state could not be recorded \(it is kept in memory and written once the disk takes it\): ENOSPC/);
        const onDisk = JSON.parse(await readFile(path.join(dataDir, 'versions', REGISTRY_FILE), 'utf8'));
        assert.equal(onDisk.jobs[0].state, registryWritten ? 'failed' : 'running');

        // Space comes back; the shutdown writes what the full disk held back.
        await execFileAsync('mount', ['-o', 'remount,size=1m', mounted]);
        await stopService(service);
        const restarted = await startService(dataDir, 8);
        const after: JobView = (await request(restarted.app).get(`/training/jobs/${body.job.id}`).set('Authorization', AUTH).expect(200)).body;
        assert.deepEqual([after.state, after.reason, after.rowsDone], ['failed', failed.reason, failed.rowsDone]);
        const versionAfter: VersionRecord = (await request(restarted.app).get('/training/versions/v1').set('Authorization', AUTH).expect(200)).body;
        assert.deepEqual([versionAfter.state, versionAfter.reason], ['failed', version.reason]);
        const retry = await request(restarted.app).post('/training/versions/v1/build').set('Authorization', AUTH).expect(202);
        assert.equal(retry.body.resumedFrom, failed.rowsDone);
        const done = (await pollJob(restarted.app, retry.body.id)).at(-1)!;
        assert.deepEqual([done.state, done.rowsDone], ['done', ROWS]);
        await stopService(restarted);
      } finally {
        await execFileAsync('umount', [mounted]);
      }
    });
  }
});
