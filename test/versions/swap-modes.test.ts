import assert from 'node:assert/strict';
import { copyFile, cp, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { versionRouter } from '../../src/http/version-routes.js';
import { planVectorIndex, type VectorIndexOptions } from '../../src/index/open-index.js';
import type { SwapModeSetting } from '../../src/index/search-memory.js';
import { INITIAL_VERSION, VersionManager } from '../../src/versions/version-manager.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { assertNewVersionAfterEachSwap, planLoad, underLoad, type LoadPlan, type LoadSample, type SwapSeen } from '../support/swap-load.js';
import { AUTH, temporaryDir, TOKEN } from '../support/version-fixtures.js';

/** fp16 on ONNX Runtime's CPU provider, the GPU path's precision; the budget stands in for a GPU's memory. */
const FP16: VectorIndexOptions = { precision: 'fp16' };

const ACTIVATE_ROUTE = '/training/versions/{id}/activate';

describe('hot swap by memory plan: side by side when both versions fit the budget, else replace (fp16 on CPU, real sockets)', function () {
  let dir: string;
  let initialFiles: RetrieverFiles;
  let otherFiles: RetrieverFiles;
  /** The largest device share of one version: both indexes have the same rows and dimension. */
  let oneVersionBytes: number;
  let plan: LoadPlan;

  before(async function () {
    dir = await temporaryDir('swap-modes');
    // Copies, so each index's fp16 sidecar is built beside it here, not beside the shared fixtures.
    const copy = async (files: RetrieverFiles, name: string): Promise<RetrieverFiles> => {
      await mkdir(path.join(dir, name));
      const indexPath = path.join(dir, name, path.basename(files.indexPath));
      await copyFile(files.indexPath, indexPath);
      return { ...files, indexPath };
    };
    initialFiles = await copy(await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS }), 'initial');
    otherFiles = await copy(await buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: DEMO_CORPUS }), 'other');
    const { perDevice } = await planVectorIndex(initialFiles.indexPath, FP16);
    oneVersionBytes = perDevice.vectorBytes + perDevice.scoreBytes;
    plan = await planLoad(
      { [INITIAL_VERSION]: initialFiles, other: otherFiles },
      initialFiles.corpusPath,
      [
        { name: 'single', size: 1, sets: 16 },
        { name: 'batch-64', size: 64, sets: 4 },
      ],
      3,
      FP16,
    );
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  /** A service serving `initialFiles` with `other` registered, its index opened in fp16 under `budgetBytes`. */
  async function service(budgetBytes: number, swapMode?: SwapModeSetting) {
    const dataDir = await temporaryDir('swap-modes-data');
    const active = new ActiveRetriever();
    const logs: string[] = [];
    const versions = await VersionManager.open({
      dataDir,
      active,
      fp16: false,
      index: { ...FP16, memoryBudgetBytes: budgetBytes },
      ...(swapMode && { swapMode }),
      log: (message) => logs.push(message),
    });
    await versions.restore(initialFiles);
    const app = createHarness(active, {}, [versionRouter({ versions, token: TOKEN })]).app;
    const register = async (modelPath: string) =>
      (await request(app).post('/training/versions').set('Authorization', AUTH).send({ model_path: modelPath, index_path: otherFiles.indexPath }).expect(201))
        .body.version.id as string;
    const close = async () => {
      await versions.close();
      await active.close();
      await rm(dataDir, { recursive: true, force: true });
    };
    return { app, versions, logs, register, close };
  }

  const CLIENTS = { single: 2, 'batch-64': 1 };

  /** Not a 200 with the results of the version it names, nor a 503 with Retry-After: what must never happen. */
  const wrong = (samples: readonly LoadSample[]) =>
    samples.filter((sample) => !(sample.status === 200 ? sample.consistent : sample.status === 503 && sample.retryAfter !== undefined));

  it('a budget that fits one version but not two swaps by replacement under load: every answer a 200 of the version it names (or 503 + Retry-After), the new version after the flip', async function () {
    const budget = Math.floor(oneVersionBytes * 1.5);
    const { app, versions, logs, register, close } = await service(budget);
    try {
      const other = await register(otherFiles.modelDir);
      // The plan names the second version 'other'; the registry named it `other`.
      const shapes: LoadPlan = { ...plan, expected: new Map([[INITIAL_VERSION, plan.expected.get(INITIAL_VERSION)!], [other, plan.expected.get('other')!]]) };
      const swaps: SwapSeen[] = [];
      const samples = await underLoad(app, shapes, CLIENTS, async (clients) => {
        await clients.answered(6);
        for (const [route, to] of [[`/training/versions/${other}/activate`, other], ['/training/versions/rollback', INITIAL_VERSION]] as const) {
          const sent = clients.now();
          const res = await request(app).post(route).set('Authorization', AUTH).expect(200);
          swaps.push([to, sent, clients.now()]);
          assert.equal(res.body.version.id, to);
          assert.equal(res.body.swap.mode, 'replace');
          assert.match(res.body.swap.reason, /over the search memory budget/);
          assert.deepEqual(res.body.swap.device, { activeBytes: oneVersionBytes, nextBytes: oneVersionBytes, budgetBytes: budget });
          assert.equal(typeof res.body.pausedMs, 'number');
          if (to === other) assertMatchesOpenApi('POST', ACTIVATE_ROUTE, res);
          const info = (await request(app).get('/info').expect(200)).body.retriever;
          assert.equal(info.version, to);
          assert.equal(info.swap.mode, 'replace');
          await clients.answered(6);
        }
      });

      assert.deepEqual(wrong(samples), [], 'only 200s of the version named, or 503 with Retry-After');
      assertNewVersionAfterEachSwap(samples, swaps);
      assert.ok(logs.some((line) => line.includes(`activating version ${other} in place of ${INITIAL_VERSION}, replace:`)), logs.join('\n'));
      assert.equal(versions.version(other).state, 'ready');
    } finally {
      await close();
    }
  });

  it('a new version that fails to load in replace mode leaves the old one serving, and the activation answers with the reason', async function () {
    const { app, versions, register, close } = await service(0, 'replace');
    try {
      // A model folder that registers (its manifest reads) but does not load: its ONNX graph is gone.
      const broken = path.join(dir, 'broken-model');
      await cp(otherFiles.modelDir, broken, { recursive: true });
      const id = await register(broken);
      await rm(path.join(broken, 'model.onnx'));
      let refusal: request.Response | undefined;
      const samples = await underLoad(app, plan, CLIENTS, async (clients) => {
        await clients.answered(6);
        refusal = await request(app).post(`/training/versions/${id}/activate`).set('Authorization', AUTH);
        await clients.answered(6);
      });
      assert.equal(refusal!.status, 400, JSON.stringify(refusal!.body));
      assert.match(refusal!.body.error.message, new RegExp(`^version ${id}: activation failed: .*model\\.onnx.*; version ${INITIAL_VERSION} was reloaded and serves$`));
      assert.deepEqual(wrong(samples), []);
      assert.deepEqual(new Set(samples.filter((sample) => sample.status === 200).map((sample) => sample.version)), new Set([INITIAL_VERSION]));
      assert.equal(versions.version(id).state, 'failed');
      assert.match(versions.version(id).reason!, /model\.onnx/);
      const info = (await request(app).get('/info').expect(200)).body;
      assert.equal(info.ready, true);
      assert.equal(info.retriever.version, INITIAL_VERSION);
      const retrieved = await request(app).post('/retrieve').send({ queries: ['hamlet'], topk: 1 }).expect(200);
      assert.equal(retrieved.headers['x-retriever-version'], INITIAL_VERSION);
    } finally {
      await close();
    }
  });

  it('a budget that fits both versions keeps side by side', async function () {
    const budget = oneVersionBytes * 3;
    const { app, register, close } = await service(budget);
    try {
      const other = await register(otherFiles.modelDir);
      const res = await request(app).post(`/training/versions/${other}/activate`).set('Authorization', AUTH).expect(200);
      assertMatchesOpenApi('POST', ACTIVATE_ROUTE, res);
      assert.equal(res.body.swap.mode, 'side-by-side');
      assert.match(res.body.swap.reason, /^both versions fit/);
      assert.equal(res.body.pausedMs, undefined);
      assert.equal((await request(app).get('/info').expect(200)).body.retriever.swap.mode, 'side-by-side');
    } finally {
      await close();
    }
  });
});
