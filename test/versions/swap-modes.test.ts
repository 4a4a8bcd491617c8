import assert from 'node:assert/strict';
import { chmod, copyFile, cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { versionRouter } from '../../src/http/version-routes.js';
import { planVectorIndex, type VectorIndexOptions } from '../../src/index/open-index.js';
import type { SwapModeSetting } from '../../src/index/search-memory.js';
import { readManifest } from '../../src/encoder/manifest.js';
import { gpuMemoryReader, type GpuMemoryReader } from '../../src/onnx/gpu-memory.js';
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
  /** The largest device share of one version's index: both indexes have the same rows and dimension. */
  let indexBytes: number;
  /** Each version's encoder graph on CPU, which the plan counts on the `cpu` device beside its index. */
  let encoderBytes: { initial: number; other: number };
  /** What one version holds on the `cpu` device: its index share and its encoder. */
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
    indexBytes = perDevice.vectorBytes + perDevice.scoreBytes;
    const graphBytes = async (modelDir: string) => (await stat(path.join(modelDir, (await readManifest(modelDir)).files.fp32))).size;
    encoderBytes = { initial: await graphBytes(initialFiles.modelDir), other: await graphBytes(otherFiles.modelDir) };
    oneVersionBytes = indexBytes + Math.max(encoderBytes.initial, encoderBytes.other);
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
  async function service(budgetBytes: number, swapMode?: SwapModeSetting, gpu?: { deviceIds: number[]; gpuMemory: GpuMemoryReader }) {
    const dataDir = await temporaryDir('swap-modes-data');
    const active = new ActiveRetriever();
    const logs: string[] = [];
    const levels = new Map<string, string>();
    const versions = await VersionManager.open({
      dataDir,
      active,
      fp16: false,
      index: { ...FP16, memoryBudgetBytes: budgetBytes, ...(gpu && { gpu: true, deviceIds: gpu.deviceIds, warn: () => undefined }) },
      ...(swapMode && { swapMode }),
      ...(gpu && { gpuMemory: gpu.gpuMemory }),
      log: (message, _fields, level = 'info') => {
        logs.push(message);
        levels.set(message, level);
      },
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
    return { app, active, versions, logs, levels, register, close };
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
          const [from, into] = to === other ? [encoderBytes.initial, encoderBytes.other] : [encoderBytes.other, encoderBytes.initial];
          assert.deepEqual(res.body.swap.devices, [
            { name: 'cpu', activeBytes: indexBytes + from, nextBytes: indexBytes + into, encoderBytes: { active: from, next: into }, budgetBytes: budget, limitBytes: budget },
          ]);
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
      const metrics = (await request(app).get('/metrics').expect(200)).text;
      assert.match(metrics, /^retriever_swaps_total\{mode="replace"\} 2$/m);
      assert.match(metrics, /^retriever_swaps_total\{mode="side-by-side"\} 0$/m);
      assert.match(metrics, /^retriever_swap_pause_seconds_count 2$/m);
      assert.ok(logs.some((line) => line.includes(`activating version ${other} in place of ${INITIAL_VERSION}, replace:`)), logs.join('\n'));
      assert.equal(versions.version(other).state, 'ready');
    } finally {
      await close();
    }
  });

  it('a new version that fails to load in replace mode leaves the old one serving, and the activation answers with the reason', async function () {
    const { app, versions, register, close } = await service(0, 'replace');
    try {
      // A model folder that registers and plans (its manifest and graph file are there) but does not
      // load: its manifest, changed since, now names another dimension than the index's.
      const broken = path.join(dir, 'broken-model');
      await cp(otherFiles.modelDir, broken, { recursive: true });
      const id = await register(broken);
      const manifestFile = path.join(broken, 'retriever.json');
      const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
      await writeFile(manifestFile, JSON.stringify({ ...manifest, dimension: manifest.dimension + 1 }));
      let refusal: request.Response | undefined;
      const samples = await underLoad(app, plan, CLIENTS, async (clients) => {
        await clients.answered(6);
        refusal = await request(app).post(`/training/versions/${id}/activate`).set('Authorization', AUTH);
        await clients.answered(6);
      });
      assert.equal(refusal!.status, 400, JSON.stringify(refusal!.body));
      assert.match(refusal!.body.error.message, new RegExp(`^version ${id}: activation failed: .*dimension.*; version ${INITIAL_VERSION} was reloaded and serves$`));
      assert.deepEqual(wrong(samples), []);
      assert.deepEqual(new Set(samples.filter((sample) => sample.status === 200).map((sample) => sample.version)), new Set([INITIAL_VERSION]));
      assert.equal(versions.version(id).state, 'failed');
      assert.match(versions.version(id).reason!, /dimension/);
      const metrics = (await request(app).get('/metrics').expect(200)).text;
      assert.deepEqual(metrics.match(/^retriever_swaps_total\{.*$/gm), ['retriever_swaps_total{mode="side-by-side"} 0', 'retriever_swaps_total{mode="replace"} 0'], 'no version took over');
      assert.match(metrics, /^retriever_swap_pause_seconds_count 1$/m, 'the pause happened all the same');
      const info = (await request(app).get('/info').expect(200)).body;
      assert.equal(info.ready, true);
      assert.equal(info.retriever.version, INITIAL_VERSION);
      const retrieved = await request(app).post('/retrieve').send({ queries: ['hamlet'], topk: 1 }).expect(200);
      assert.equal(retrieved.headers['x-retriever-version'], INITIAL_VERSION);
    } finally {
      await close();
    }
  });

  it('a forced side by side that does not fit goes on, as the user asked, with a warning in the log and the answer', async function () {
    const { app, logs, levels, register, close } = await service(Math.floor(oneVersionBytes * 1.5), 'side-by-side');
    try {
      const other = await register(otherFiles.modelDir);
      const res = await request(app).post(`/training/versions/${other}/activate`).set('Authorization', AUTH).expect(200);
      assertMatchesOpenApi('POST', ACTIVATE_ROUTE, res);
      assert.equal(res.body.swap.mode, 'side-by-side');
      assert.equal(res.body.swap.fits, false);
      assert.match(res.body.swap.reason, /^--swap_mode side-by-side forced though they do not fit \(both versions need .* on cpu .*over the search memory budget of .*\): loading the new version beside the serving one may run out of memory$/);
      assert.equal(res.body.pausedMs, undefined);
      const line = logs.find((message) => message.startsWith(`activating version ${other} in place of ${INITIAL_VERSION}, side-by-side: --swap_mode side-by-side forced`));
      assert.ok(line, logs.join('\n'));
      assert.equal(levels.get(line), 'warn');
    } finally {
      await close();
    }
  });

  it('a CUDA search that fell back to CPU is planned where it runs, in host memory at fp32, and the driver is not asked (no GPU here: the fallback is real)', async function () {
    const bin = path.join(dir, 'stand-in-driver');
    await mkdir(bin, { recursive: true });
    const asked = path.join(bin, 'asked');
    // Were the card planned, nothing free on it would force replace mode.
    await writeFile(path.join(bin, 'nvidia-smi'), `#!/bin/sh\ntouch ${asked}\necho "0, 0, 81559"\n`);
    await chmod(path.join(bin, 'nvidia-smi'), 0o755);
    const gpuMemory = gpuMemoryReader({ env: { PATH: `${bin}:/usr/bin:/bin` } });
    const { app, active, register, close } = await service(0, undefined, { deviceIds: [0], gpuMemory });
    try {
      assert.deepEqual(
        active.current?.index.placement.sessions.map(({ provider, precision }) => ({ provider, precision })),
        [{ provider: 'cpu', precision: 'fp32' }],
      );
      const other = await register(otherFiles.modelDir);
      const res = await request(app).post(`/training/versions/${other}/activate`).set('Authorization', AUTH).expect(200);
      assertMatchesOpenApi('POST', ACTIVATE_ROUTE, res);
      const { perDevice } = await planVectorIndex(initialFiles.indexPath, { precision: 'fp32' });
      const fp32IndexBytes = perDevice.vectorBytes + perDevice.scoreBytes;
      assert.equal(res.body.swap.mode, 'side-by-side', JSON.stringify(res.body.swap));
      assert.deepEqual(
        res.body.swap.devices.map(({ name, activeBytes, nextBytes }: { name: string; activeBytes: number; nextBytes: number }) => ({ name, activeBytes, nextBytes })),
        [{ name: 'cpu', activeBytes: fp32IndexBytes + encoderBytes.initial, nextBytes: fp32IndexBytes + encoderBytes.other }],
      );
      await assert.rejects(stat(asked), { code: 'ENOENT' }, 'nvidia-smi was asked about a card nothing runs on');
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
      const metrics = (await request(app).get('/metrics').expect(200)).text;
      assert.match(metrics, /^retriever_swaps_total\{mode="side-by-side"\} 1$/m);
      assert.match(metrics, /^retriever_swaps_total\{mode="replace"\} 0$/m);
      assert.match(metrics, /^retriever_swap_pause_seconds_count 0$/m);
      assert.equal((await request(app).get('/info').expect(200)).body.retriever.swap.mode, 'side-by-side');
    } finally {
      await close();
    }
  });
});
