import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { trainingRouter } from '../../src/http/training-routes.js';
import { LoadingTrainingStore } from '../../src/training/store-loading.js';
import { EXAMPLES_FILE, TrainingExampleStore, type StoreLoadProgress } from '../../src/training/store.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { StandInService } from '../support/stand-in-service.js';
import { makeRecord, samplePath, temporaryDir } from '../support/training-fixtures.js';

describe('training store loading in the background (real app, real HTTP)', function () {
  let dir: string;
  let corpus: CorpusStore;

  beforeEach(async function () {
    dir = await temporaryDir('loading');
    corpus = await CorpusStore.open(samplePath, { sidecarPath: path.join(dir, 'corpus.offsets') });
  });

  afterEach(async function () {
    await corpus.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers /health while the store loads, the training routes 503 not_ready with progress until it is open, then serves them', async function () {
    const storeDir = path.join(dir, 'store');
    const seeded = await TrainingExampleStore.open(storeDir);
    await seeded.append([makeRecord({ query_id: 'a' }), makeRecord({ query_id: 'b' }, 40), makeRecord({ query_id: 'c' }, 80)]);
    await seeded.close();

    // The loader waits on its progress callback: holding the first call keeps the store loading.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let started!: (progress: StoreLoadProgress) => void;
    const firstProgress = new Promise<StoreLoadProgress>((resolve) => (started = resolve));
    const loading = new LoadingTrainingStore(storeDir, (progress) => {
      started(progress);
      return held;
    });
    const router = trainingRouter({ store: () => loading.current(), corpus: () => corpus, allowUnauthenticated: true });
    const { app } = createHarness(new StandInService([]), {}, [router]);
    try {
      const progress = await firstProgress;
      assert.equal(progress.records, 0);
      assert.ok(progress.totalBytes > 3 * 300, `a store of three records holds ${progress.totalBytes} bytes`);

      const health = await request(app).get('/health').expect(200);
      assert.deepEqual(health.body, { status: 'ok' });
      const refusals = [
        ['GET', '/training/stats', await request(app).get('/training/stats')],
        ['GET', '/training/examples', await request(app).get('/training/examples')],
        ['POST', '/training/examples', await request(app).post('/training/examples').send([makeRecord({ query_id: 'd' })])],
        ['POST', '/training/construct', await request(app).post('/training/construct').send({ rounds: [] })],
      ] as const;
      for (const [method, route, response] of refusals) {
        assert.equal(response.status, 503, `${method} ${route}`);
        assert.equal(response.headers['retry-after'], '5');
        assert.equal(response.body.error.code, 'not_ready');
        assert.equal(
          response.body.error.message,
          `the training store is still loading: 0 records, 0% of ${progress.totalBytes} bytes read`,
        );
        assertMatchesOpenApi(method, route, response);
      }

      release();
      await loading.loaded;
      const stats = await request(app).get('/training/stats').expect(200);
      assert.equal(stats.body.records, 3);
      assertMatchesOpenApi('GET', '/training/stats', stats);
      const added = await request(app).post('/training/examples').send([makeRecord({ query_id: 'd' }), makeRecord({ query_id: 'a' })]).expect(200);
      assert.deepEqual([added.body.accepted, added.body.duplicate], [1, 1]);
    } finally {
      release();
      await loading.close();
    }
  });

  it('rejects `loaded`, and the training routes answer 500 naming the damage, when the store cannot be read', async function () {
    const storeDir = path.join(dir, 'damaged');
    await mkdir(storeDir);
    await writeFile(path.join(storeDir, EXAMPLES_FILE), '{"dataset": "nq", "query_id": \n');
    const loading = new LoadingTrainingStore(storeDir);
    await assert.rejects(loading.loaded, /examples\.jsonl line 1 is not a JSON record: the store is damaged/);
    const { app } = createHarness(new StandInService([]), {}, [
      trainingRouter({ store: () => loading.current(), corpus: () => corpus, allowUnauthenticated: true }),
    ]);
    const response = await request(app).get('/training/stats').expect(500);
    assert.equal(response.body.error.code, 'internal');
    assert.match(response.body.error.message, /^the training store failed to load: .*examples\.jsonl line 1 is not a JSON record: the store is damaged$/);
    assertMatchesOpenApi('GET', '/training/stats', response);
    await loading.close();
  });
});
