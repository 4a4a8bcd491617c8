import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import request from 'supertest';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import { versionRouter } from '../../src/http/version-routes.js';
import { INITIAL_VERSION, VersionManager } from '../../src/versions/version-manager.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { createHarness } from '../support/app-harness.js';
import { assertNewVersionAfterEachSwap, corpusQueries, planLoad, underLoad, type SwapSeen } from '../support/swap-load.js';
import { AUTH, temporaryDir, TOKEN } from '../support/version-fixtures.js';

describe('hot swap under load (tiny models, the demo corpus, real sockets)', function () {
  let initialFiles: RetrieverFiles;
  let otherFiles: RetrieverFiles;

  before(async function () {
    initialFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    otherFiles = await buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: DEMO_CORPUS });
  });

  it('a request in flight finishes on its version; the replaced version is closed (encoder worker, index, corpus) once it ends', async function () {
    const active = new ActiveRetriever();
    const old = await Retriever.load(initialFiles, { version: 'old' });
    await active.activate(old);
    const next = await Retriever.load(otherFiles, { version: 'next' });
    const inputs = (await corpusQueries(initialFiles.corpusPath, 64)).map((query) => ({ query }));
    const expected = await old.encodeSearchFetch(inputs, 3);

    const inFlight = active.retrieve(inputs, 3);
    let released = false;
    const swapped = active.activate(next).then(() => {
      released = true;
    });
    assert.equal(active.current, next, 'new requests go to the new version at once');
    assert.equal((await active.retrieve(inputs.slice(0, 1), 3)).version, 'next');
    const finished = await inFlight;
    assert.equal(released, false, 'not released while its request ran');
    assert.equal(finished.version, 'old');
    assert.deepEqual(finished.hits, expected.hits);
    await swapped;
    await assert.rejects(old.encoder.encodeQueries(inputs.slice(0, 1)), /the encoder is closed/);
    await assert.rejects(old.index.nearest(new Float32Array(old.index.dimension), 1), /is closed/);
    await assert.rejects(old.corpus.readRows([0]), /EBADF|closed/);
    await active.close();
    await assert.rejects(next.encoder.encodeQueries(inputs.slice(0, 1)), /the encoder is closed/);
  });

  it('answers every request, single-query and 64-query, with the results of the version it names while versions are swapped 3 times each way', async function () {
    const dataDir = await temporaryDir('load');
    const active = new ActiveRetriever();
    const versions = await VersionManager.open({ dataDir, active, fp16: false });
    await versions.restore(initialFiles);
    const app = createHarness(active, {}, [versionRouter({ versions, token: TOKEN })]).app;
    const registered = await request(app)
      .post('/training/versions')
      .set('Authorization', AUTH)
      .send({ model_path: otherFiles.modelDir, index_path: otherFiles.indexPath })
      .expect(201);
    const other: string = registered.body.version.id;
    const plan = await planLoad(
      { [INITIAL_VERSION]: initialFiles, [other]: otherFiles },
      initialFiles.corpusPath,
      [
        { name: 'single', size: 1, sets: 16 },
        { name: 'batch-64', size: 64, sets: 4 },
      ],
      3,
    );
    assert.notDeepEqual(plan.expected.get(other), plan.expected.get(INITIAL_VERSION));

    try {
      const swaps: SwapSeen[] = [];
      const samples = await underLoad(app, plan, { single: 2, 'batch-64': 2 }, async (clients) => {
        await clients.answered(8);
        for (let round = 0; round < 3; round++) {
          for (const [route, to] of [[`/training/versions/${other}/activate`, other], ['/training/versions/rollback', INITIAL_VERSION]] as const) {
            const sent = clients.now();
            const { body } = await request(app).post(route).set('Authorization', AUTH).expect(200);
            assert.equal(body.version.id, to);
            swaps.push([to, sent, clients.now()]);
            await clients.answered(8);
          }
        }
      });

      const failures = samples.filter((sample) => sample.status !== 200 || !sample.consistent);
      assert.deepEqual(failures, [], 'every response is a 200 whose results are those of the version it names');
      for (const shape of ['single', 'batch-64']) {
        const seen = new Set(samples.filter((sample) => sample.shape === shape).map((sample) => sample.version));
        assert.deepEqual([...seen].sort(), [INITIAL_VERSION, other].sort(), `${shape} requests were served by both versions`);
      }
      // Sent after a swap answered (and before the next began): the new version, without exception.
      assertNewVersionAfterEachSwap(samples, swaps);
      assert.equal((await request(app).get('/info').expect(200)).body.retriever.version, INITIAL_VERSION);
    } finally {
      await versions.close();
      await active.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
