import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { cp, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../engine/retriever-fixture.js';
import { AUTH, temporaryDir, TOKEN } from './version-fixtures.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli.js');

interface Served {
  url: string;
  messages: string[];
  stop(): Promise<number | null>;
}

/** `serve` in a child process, as launched in production; resolves once it reports ready. */
async function serve(files: RetrieverFiles, dataDir: string): Promise<Served> {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, [
    cli,
    'serve',
    ...['--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath],
    ...['--data_dir', dataDir, '--training_token', TOKEN, '--host', '127.0.0.1', '--port', '0', '--device', 'cpu'],
  ]);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const messages: string[] = [];
  let port: number | undefined;
  const exited = once(child, 'exit');
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as { msg: string; port?: number };
      messages.push(line.msg);
      if (line.port !== undefined) port = line.port;
      if (line.msg === 'ready') resolve();
    });
    void exited.then(([code]) => reject(new Error(`serve exited (${String(code)}) before ready: ${stderr}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    messages,
    stop: async () => {
      child.kill('SIGTERM');
      const [code] = await exited;
      return code as number | null;
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
});
