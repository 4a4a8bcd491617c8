import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { cp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { DATA_DIR_LOCK } from '../../src/data-dir-lock.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { buildRetrieverFiles, DEMO_CORPUS, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import type { JobView } from '../../src/versions/index-jobs.js';
import { REGISTRY_FILE, type VersionRecord } from '../../src/versions/version-registry.js';
import { CLI_PATH } from '../support/sample-data.js';
import { AUTH, temporaryDir, TOKEN, writeCheckpoint } from '../support/version-fixtures.js';


interface Served {
  url: string;
  messages: string[];
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash or an OOM kill would end it. */
  crash(): Promise<void>;
}

/** `serve` in a child process, as launched in production; resolves once it reports ready. */
async function serve(files: RetrieverFiles, dataDir: string, extraArgs: readonly string[] = []): Promise<Served> {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [
    CLI_PATH,
    'serve',
    ...['--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath],
    ...['--data_dir', dataDir, '--training_token', TOKEN, '--host', '127.0.0.1', '--port', '0', '--device', 'cpu'],
    ...extraArgs,
  ]);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const messages: string[] = [];
  let port: number | undefined;
  // 'close', not 'exit': it comes after stderr has been read to the end.
  const exited = once(child, 'close');
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as { msg: string; port?: number };
      messages.push(line.msg);
      if (line.port !== undefined) port = line.port;
      if (line.msg === 'ready') resolve();
    });
    void exited.then(([code]) => reject(new Error(`serve exited (${String(code)}) before ready: ${stderr}log: ${messages.join(' | ')}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    messages,
    stop: async () => {
      child.kill('SIGTERM');
      const [code] = await exited;
      return code as number | null;
    },
    crash: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

async function call(url: string, method: string, body?: unknown): Promise<{ status: number; version: string | null; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method,
    headers: { authorization: AUTH, 'content-type': 'application/json' },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: response.status, version: response.headers.get('x-retriever-version'), body: (await response.json()) as Record<string, unknown> };
}

/** Polls `GET /training/versions/:id` until `until` holds, by default until its checkpoint's conversion has ended. */
async function versionWhen(url: string, id: string, until: (version: VersionRecord) => boolean = (version) => version.state !== 'converting'): Promise<VersionRecord> {
  for (;;) {
    const { status, body } = await call(`${url}/training/versions/${id}`, 'GET');
    assert.equal(status, 200);
    if (until(body as unknown as VersionRecord)) return body as unknown as VersionRecord;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('serve with the training routes remembers the active version across a restart (child process, tiny model)', function () {
  let files: RetrieverFiles;
  let dataDir: string;

  before(async function () {
    files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    dataDir = await temporaryDir('serve');
  });

  after(async function () {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('serves a Hugging Face checkpoint given as --retriever_model, converted once into <data_dir>/models and reused', async function () {
    const checkpoint = await writeCheckpoint(path.join(dataDir, 'trained_models', 'checkpoint-200'), files.modelDir, 21);
    const checkpointDataDir = path.join(dataDir, 'checkpoint-serve');
    const modelDirs: string[] = [];
    for (let start = 0; start < 2; start++) {
      const served = await serve({ ...files, modelDir: checkpoint }, checkpointDataDir);
      try {
        const info = await call(`${served.url}/info`, 'GET');
        const retriever = info.body.retriever as { modelDir: string; modelName: string; manifest: { provenance: { source: string } } };
        assert.equal(retriever.modelName, 'checkpoint-200');
        assert.equal(retriever.manifest.provenance.source, 'checkpoint');
        modelDirs.push(retriever.modelDir);
        const answer = await call(`${served.url}/retrieve`, 'POST', { queries: ['hamlet'], topk: 2 });
        assert.equal(answer.status, 200);
        assert.equal((answer.body.result as unknown[][])[0]!.length, 2);
      } finally {
        assert.equal(await served.stop(), 0);
      }
    }
    assert.equal(path.dirname(modelDirs[0]!), path.join(checkpointDataDir, 'models'));
    assert.equal(modelDirs[1], modelDirs[0]);
    assert.deepEqual(await readdir(path.join(checkpointDataDir, 'models')), [path.basename(modelDirs[0]!)]);
  });

  it('with --precision int8, serves model.int8.onnx for the launch checkpoint and for a checkpoint registered as a version', async function () {
    const launch = await writeCheckpoint(path.join(dataDir, 'int8', 'checkpoint-300'), files.modelDir, 30);
    const registeredCheckpoint = await writeCheckpoint(path.join(dataDir, 'int8', 'checkpoint-400'), files.modelDir, 40);
    const copiedIndex = path.join(dataDir, 'int8', 'copy.index');
    await cp(files.indexPath, copiedIndex);
    const served = await serve({ ...files, modelDir: launch }, path.join(dataDir, 'int8', 'data'), ['--precision', 'int8', '--int8_weight_bits', '7']);
    type Info = { version: string; modelFile: string; manifest: { name: string; files: Record<string, string>; int8: { weightBits: number } } };
    const retrieverInfo = async () => (await call(`${served.url}/info`, 'GET')).body.retriever as Info;
    try {
      const initial = await retrieverInfo();
      assert.deepEqual(
        [initial.manifest.name, initial.modelFile, initial.manifest.files, initial.manifest.int8.weightBits],
        ['checkpoint-300', 'model.int8.onnx', { fp32: 'model.onnx', int8: 'model.int8.onnx' }, 7],
      );
      const registered = await call(`${served.url}/training/versions`, 'POST', { model_path: registeredCheckpoint, index_path: copiedIndex });
      assert.equal(registered.status, 202);
      const versionId = (registered.body.version as { id: string }).id;
      assert.equal((await versionWhen(served.url, versionId)).state, 'ready');
      assert.equal((await call(`${served.url}/training/versions/${versionId}/activate`, 'POST')).status, 200);
      const version = await retrieverInfo();
      assert.deepEqual(
        [version.version, version.manifest.name, version.modelFile, version.manifest.int8.weightBits],
        [versionId, 'checkpoint-400', 'model.int8.onnx', 7],
      );
      const answer = await call(`${served.url}/retrieve`, 'POST', { queries: ['hamlet'], topk: 2 });
      assert.deepEqual([answer.status, answer.version, (answer.body.result as unknown[][])[0]!.length], [200, versionId, 2]);
    } finally {
      assert.equal(await served.stop(), 0);
    }
  });

  it('serves the launch flags as "initial", then the activated version after SIGTERM and a new start', async function () {
    const copiedIndex = path.join(dataDir, 'copy.index');
    await cp(files.indexPath, copiedIndex);
    const first = await serve(files, dataDir);
    let versionId: string;
    try {
      assert.equal((await call(`${first.url}/retrieve`, 'POST', { queries: ['hamlet'] })).version, 'initial');
      const registered = await call(`${first.url}/training/versions`, 'POST', { model_path: files.modelDir, index_path: copiedIndex });
      assert.equal(registered.status, 201);
      versionId = (registered.body.version as { id: string }).id;
      assert.equal((await call(`${first.url}/training/versions/${versionId}/activate`, 'POST')).status, 200);
      assert.equal((await call(`${first.url}/retrieve`, 'POST', { queries: ['hamlet'] })).version, versionId);
    } finally {
      assert.equal(await first.stop(), 0);
    }

    const second = await serve(files, dataDir);
    try {
      assert.ok(second.messages.includes(`serving remembered active version ${versionId} instead of the launch files`), second.messages.join('\n'));
      assert.equal((await call(`${second.url}/retrieve`, 'POST', { queries: ['hamlet'] })).version, versionId);
      assert.equal(((await call(`${second.url}/info`, 'GET')).body.retriever as { indexPath: string }).indexPath, copiedIndex);
      const rollback = await call(`${second.url}/training/versions/rollback`, 'POST');
      assert.equal((rollback.body.version as { id: string }).id, 'initial');
      assert.equal((await call(`${second.url}/retrieve`, 'POST', { queries: ['hamlet'] })).version, 'initial');
    } finally {
      assert.equal(await second.stop(), 0);
    }
  });

  it('refuses a second server on the same data dir, naming it, while the first serves on; a stopped server frees it', async function () {
    const shared = path.join(dataDir, 'shared');
    const first = await serve(files, shared);
    try {
      await assert.rejects(serve(files, shared), (error: Error) => {
        assert.match(error.message, /serve exited \(1\) before ready: error: conflict: the data dir \S*shared is in use by another running server/);
        assert.match(error.message, /log: the data dir lock \S*serve\.lock is held; waiting up to 6 s in case the server that took it has died/);
        return true;
      });
      const answer = await call(`${first.url}/retrieve`, 'POST', { queries: ['hamlet'] });
      assert.deepEqual([answer.status, answer.version], [200, 'initial']);
    } finally {
      assert.equal(await first.stop(), 0);
    }
    assert.ok(!(await readdir(shared)).includes(DATA_DIR_LOCK), 'released at shutdown');
    const next = await serve(files, shared);
    assert.equal(await next.stop(), 0);
  });

  it('a build killed with the server is marked interrupted at the next start and resumes from its partial file', async function () {
    const sample = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
    const checkpoint = await writeCheckpoint(path.join(dataDir, 'checkpoint-600'), sample.modelDir, 600);
    const crashDir = path.join(dataDir, 'crash');
    const first = await serve(sample, crashDir);
    let versionId: string;
    let jobId: string;
    try {
      const registered = await call(`${first.url}/training/versions`, 'POST', { model_path: checkpoint, build_index: true });
      assert.equal(registered.status, 202);
      versionId = (registered.body.version as { id: string }).id;
      jobId = (await versionWhen(first.url, versionId)).jobId!;
      for (;;) {
        const job = (await call(`${first.url}/training/jobs/${jobId}`, 'GET')).body as unknown as JobView;
        assert.equal(job.state, 'running', 'the kill must land mid-build');
        if (job.rowsDone >= 64) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      await first.crash();
    }

    const second = await serve(sample, crashDir);
    try {
      assert.ok(
        second.messages.some((message) => /serve\.lock is held; waiting up to 6 s/.test(message)),
        'the lock of the killed server was still fresh, and was waited out',
      );
      const interrupted = (await call(`${second.url}/training/jobs/${jobId}`, 'GET')).body as unknown as JobView;
      assert.equal(interrupted.state, 'failed');
      assert.equal(interrupted.reason, 'interrupted by a server restart');
      assert.ok(interrupted.rowsDone >= 64 && interrupted.rowsDone < 1000, `the rows on disk are recorded, got ${interrupted.rowsDone}`);
      const version = (await call(`${second.url}/training/versions/${versionId}`, 'GET')).body as { state: string; reason: string };
      assert.equal(version.state, 'registered');
      assert.equal(
        version.reason,
        `index build ${jobId} interrupted by a server restart at row ${interrupted.rowsDone} of 1000; POST /training/versions/${versionId}/build resumes it from its partial file`,
      );
      const resumed = await call(`${second.url}/training/versions/${versionId}/build`, 'POST');
      assert.equal(resumed.status, 202);
      assert.equal((resumed.body as unknown as JobView).resumedFrom, interrupted.rowsDone, 'a resumed build shows its starting row at once');
      let job: JobView;
      do {
        await new Promise((resolve) => setTimeout(resolve, 20));
        job = (await call(`${second.url}/training/jobs/${(resumed.body as { id: string }).id}`, 'GET')).body as unknown as JobView;
      } while (job.state === 'running');
      assert.equal(job.state, 'done');
      assert.equal(job.resumedFrom, interrupted.rowsDone);
      assert.equal(job.rowsDone, 1000);
      assert.equal((await call(`${second.url}/training/versions/${versionId}/activate`, 'POST')).status, 200);
      assert.equal((await call(`${second.url}/retrieve`, 'POST', { queries: ['hamlet'] })).version, versionId);
    } finally {
      assert.equal(await second.stop(), 0);
    }
  });

  it('a checkpoint conversion killed with the server (SIGKILL) resumes at the next start, then builds the index (a 256-wide, 4-layer checkpoint that takes seconds to convert)', async function () {
    const checkpoint = await writeCheckpoint(path.join(dataDir, 'checkpoint-700'), files.modelDir, 700, {
      hiddenSize: 256,
      numHiddenLayers: 4,
      numAttentionHeads: 4,
      intermediateSize: 1024,
    });
    const killDir = path.join(dataDir, 'kill-converting');
    const first = await serve(files, killDir);
    let versionId: string;
    try {
      const registered = await call(`${first.url}/training/versions`, 'POST', { model_path: checkpoint, build_index: true });
      assert.equal(registered.status, 202);
      const version = registered.body.version as unknown as VersionRecord;
      assert.equal(version.state, 'converting');
      versionId = version.id;
    } finally {
      await first.crash();
    }
    // What the next start reads: the kill landed while the checkpoint was converting.
    const recorded = JSON.parse(await readFile(path.join(killDir, 'versions', REGISTRY_FILE), 'utf8')) as { versions: VersionRecord[]; jobs: JobView[] };
    assert.deepEqual(
      recorded.versions.filter((version) => version.id === versionId).map((version) => [version.state, version.modelDir]),
      [['converting', undefined]],
    );
    assert.deepEqual(recorded.jobs, []);

    const second = await serve(files, killDir);
    try {
      assert.ok(second.messages.includes(`resuming the checkpoint conversion of version ${versionId}, interrupted by a restart`), second.messages.join('\n'));
      const converted = await versionWhen(second.url, versionId);
      assert.equal(converted.state, 'building', converted.reason);
      assert.equal(path.dirname(converted.modelDir!), path.join(killDir, 'models'));
      let job: JobView;
      do {
        await new Promise((resolve) => setTimeout(resolve, 20));
        job = (await call(`${second.url}/training/jobs/${converted.jobId!}`, 'GET')).body as unknown as JobView;
      } while (job.state === 'running');
      assert.deepEqual([job.state, job.versionId, job.rowsDone], ['done', versionId, 243]);
      assert.equal((await versionWhen(second.url, versionId)).state, 'ready');
      assert.equal((await call(`${second.url}/training/versions/${versionId}/activate`, 'POST')).status, 200);
      assert.equal((await call(`${second.url}/retrieve`, 'POST', { queries: ['hamlet'] })).version, versionId);
    } finally {
      assert.equal(await second.stop(), 0);
    }
  });
});
