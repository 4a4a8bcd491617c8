import assert from 'node:assert/strict';
import { readFile, rm, stat } from 'node:fs/promises';
import type { Express } from 'express';
import request from 'supertest';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { versionRouter } from '../../src/http/version-routes.js';
import type { JobView } from '../../src/versions/index-jobs.js';
import { INITIAL_VERSION, VersionManager } from '../../src/versions/version-manager.js';
import { REGISTRY_FILE, type VersionRecord } from '../../src/versions/version-registry.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { AUTH, expectedResults, pollJob, temporaryDir, TOKEN } from '../support/version-fixtures.js';

/** Rows of the 1k sample. */
const ROWS = 1000;
const QUERIES = [{ query: 'who was the lobbyist for genentech' }, { query: 'pavia cathedral construction date' }];
const TOPK = 5;

describe('index jobs of any faiss_type: the training routes build HNSW as build-index --faiss_type does (tiny model, the 1k sample, real faiss, real HTTP)', function () {
  let files: RetrieverFiles;
  let dataDir: string;
  let active: ActiveRetriever;
  let versions: VersionManager;
  let app: Express;

  before(async function () {
    files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
    dataDir = await temporaryDir('faiss-type');
    active = new ActiveRetriever();
    // Small batches, so the job can be cancelled part way through the encoding.
    versions = await VersionManager.open({ dataDir, active, fp16: false, buildBatchSize: 16, buildEncoder: { intraOpNumThreads: 1 } });
    await versions.restore(files);
    app = createHarness(active, {}, [versionRouter({ versions, token: TOKEN })]).app;
  });

  after(async function () {
    await versions.close();
    await active.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const register = (body: Record<string, unknown>, key?: string) => {
    const post = request(app).post('/training/versions').set('Authorization', AUTH);
    return (key === undefined ? post : post.set('Idempotency-Key', key)).send({ model_path: files.modelDir, ...body });
  };

  it('registers with faiss_type HNSW16, resumes a cancelled encoding, converts, and serves the HNSW index on faiss once activated', async function () {
    const registered = await register({ build_index: true, faiss_type: 'HNSW16' }, 'hnsw-1').expect(201);
    assertMatchesOpenApi('POST', '/training/versions', registered);
    const version: VersionRecord = registered.body.version;
    assert.equal(version.faissType, 'HNSW16');
    assert.match(version.indexPath!, /_HNSW16\.index$/);
    const job: JobView = registered.body.job;
    assert.deepEqual([job.faissType, job.stage], ['HNSW16', 'encoding']);

    await pollJob(app, job.id, (seen) => seen.rowsDone >= 32 || seen.state !== 'running');
    const cancelled = await request(app).delete(`/training/jobs/${job.id}`).set('Authorization', AUTH).expect(200);
    assert.equal(cancelled.body.state, 'cancelled');
    assert.ok((await stat(`${version.indexPath!}.flat.partial`)).isFile(), 'the encoding resumes from <index>.flat.partial');

    const resumed = await request(app).post(`/training/versions/${version.id}/build`).set('Authorization', AUTH).expect(202);
    assertMatchesOpenApi('POST', '/training/versions/{id}/build', resumed);
    assert.equal(resumed.body.resumedFrom, cancelled.body.rowsDone);
    const seen = await pollJob(app, resumed.body.id);
    const finished = seen.at(-1)!;
    assert.deepEqual([finished.state, finished.faissType, finished.rowsDone], ['done', 'HNSW16', ROWS], finished.reason);
    // The conversion starts a process of its own: polls every 20 ms see it.
    const converting = seen.filter((view) => view.stage === 'converting');
    assert.ok(converting.length > 0, 'the job shows its conversion stage');
    for (const view of converting) assert.equal(view.rowsDone, ROWS, 'the conversion starts once every row is encoded');
    for (const view of converting) assert.notEqual(view.conversion?.step, 'sampling', 'HNSW needs no training sample');
    await assert.rejects(stat(`${version.indexPath!}.flat`), { code: 'ENOENT' }, 'the encoded Flat is deleted once converted');
    assert.equal((await readFile(version.indexPath!)).subarray(0, 4).toString('latin1'), 'IHNf');

    const shown = await request(app).get(`/training/versions/${version.id}`).set('Authorization', AUTH).expect(200);
    assert.deepEqual([shown.body.state, shown.body.faissType], ['ready', 'HNSW16']);
    const stored = JSON.parse(await readFile(`${dataDir}/versions/${REGISTRY_FILE}`, 'utf8')) as { versions: VersionRecord[] };
    assert.equal(stored.versions.find((candidate) => candidate.id === version.id)?.faissType, 'HNSW16');

    await request(app).post(`/training/versions/${version.id}/activate`).set('Authorization', AUTH).expect(200);
    const info = (await request(app).get('/info').expect(200)).body.retriever;
    assert.deepEqual([info.version, info.search.index.kind], [version.id, 'IndexHNSWFlat']);
    const retrieved = await request(app)
      .post('/retrieve')
      .send({ queries: QUERIES.map((input) => input.query), topk: TOPK, return_scores: true })
      .expect(200);
    assert.equal(retrieved.headers['x-retriever-version'], version.id);
    const expected = await expectedResults({ [version.id]: { ...files, indexPath: version.indexPath! } }, [QUERIES], TOPK);
    assert.deepEqual(retrieved.body.result, expected.get(version.id)![0]);

    // The same checkpoint and options again is this version; another faiss_type under the same key is another registration.
    const again = await register({ build_index: true, faiss_type: 'HNSW16' }).expect(200);
    assert.equal(again.body.version.id, version.id);
    const reused = await register({ build_index: true, faiss_type: 'HNSW32' }, 'hnsw-1').expect(409);
    assert.match(reused.body.error.message, /faiss_type HNSW16/);
    await request(app).post(`/training/versions/${INITIAL_VERSION}/activate`).set('Authorization', AUTH).expect(200);
  });

  it('refuses a faiss_type faiss cannot build with a 400 naming the field, registering nothing', async function () {
    const before = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body.versions;
    const bad = await register({ build_index: true, faiss_type: 'HNSW16,Bogus' }).expect(400);
    assertMatchesOpenApi('POST', '/training/versions', bad);
    assert.equal(bad.body.error.field, 'faiss_type');
    assert.match(bad.body.error.message, /^faiss_type: faiss cannot build "HNSW16,Bogus"/);
    const withPrebuilt = await register({ index_path: files.indexPath, faiss_type: 'HNSW16' }).expect(400);
    assert.equal(withPrebuilt.body.error.field, 'faiss_type');
    const notString = await register({ build_index: true, faiss_type: 64 }).expect(400);
    assert.equal(notString.body.error.field, 'faiss_type');
    const after = (await request(app).get('/training/versions').set('Authorization', AUTH).expect(200)).body.versions;
    assert.deepEqual(after, before);
  });
});
