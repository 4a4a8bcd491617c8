import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { CLI_PATH } from '../support/sample-data.js';
import { temporaryDir, writeCheckpoint } from '../support/version-fixtures.js';


interface Launch {
  /** The port once it logged "ready"; undefined when it exited first. */
  port?: number;
  stdout: { msg: string; level: number; err?: unknown }[];
  stderr: string;
  /** SIGTERM if still running; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** `serve` in a child process until it is ready or has exited. */
async function launch(args: string[]): Promise<Launch> {
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--host', '127.0.0.1', '--port', '0', '--device', 'cpu', ...args]);
  const result: Launch = { stdout: [], stderr: '', stop: async () => (await exited)[0] as number | null };
  const exited = once(child, 'close');
  child.stderr.on('data', (chunk: Buffer) => (result.stderr += chunk.toString()));
  let port: number | undefined;
  await new Promise<void>((resolve) => {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as Launch['stdout'][number] & { port?: number };
      result.stdout.push(line);
      if (line.port !== undefined) port = line.port;
      if (line.msg === 'ready') {
        result.port = port;
        resolve();
      }
    });
    void exited.then(() => resolve());
  });
  if (result.port !== undefined) {
    result.stop = async () => {
      child.kill('SIGTERM');
      return (await exited)[0] as number | null;
    };
  }
  return result;
}

/**
 * Serving alone writes nothing in --data_dir, so it works on a read-only one (a read-only tmpfs
 * mount: root ignores chmod 0555) or on one that does not exist; what needs it writable says so
 * in one line, without a stack.
 */
describe('serve with a read-only --data_dir (child process, read-only tmpfs mount)', function () {
  let files: RetrieverFiles;
  let readOnly: string;
  let scratch: string;

  before(async function () {
    readOnly = await mkdtemp(path.join(tmpdir(), 'read-only-data-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', readOnly], { stdio: 'pipe' });
    } catch (error) {
      await rm(readOnly, { recursive: true, force: true });
      // Mounting needs root (or CAP_SYS_ADMIN); chmod cannot stand in, as root writes through it.
      console.log(`      skipped: cannot mount a read-only tmpfs here (${(error as Error).message.split('\n')[0]})`);
      this.skip();
    }
    await assert.rejects(writeFile(path.join(readOnly, 'probe'), 'x'), { code: 'EROFS' });
    files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    scratch = await temporaryDir('read-only');
  });

  after(async function () {
    if (!scratch) return;
    execFileSync('umount', [readOnly]);
    await rm(readOnly, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });

  const modelFlags = () => ['--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath];

  it('serves a model folder without the training routes, with the data dir read-only or absent inside it', async function () {
    for (const dataDir of [readOnly, path.join(readOnly, 'absent')]) {
      const served = await launch([...modelFlags(), '--data_dir', dataDir]);
      assert.ok(served.port, `not ready with --data_dir ${dataDir}: ${served.stderr}${JSON.stringify(served.stdout)}`);
      try {
        const response = await fetch(`http://127.0.0.1:${served.port}/retrieve`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ queries: ['hamlet'], topk: 2 }),
        });
        assert.equal(response.status, 200);
        assert.equal(((await response.json()) as { result: unknown[][] }).result[0]!.length, 2);
      } finally {
        assert.equal(await served.stop(), 0);
      }
    }
  });

  it('with the training routes on: exits 1 with one line saying the data dir must be writable', async function () {
    const served = await launch([...modelFlags(), '--data_dir', readOnly, '--training_token', 'secret-token-1234']);
    assert.equal(served.port, undefined);
    assert.equal(await served.stop(), 1);
    assert.equal(
      served.stderr,
      `error: bad_request: the training routes need a writable --data_dir, and ${readOnly} is not (EROFS: read-only file system, mkdir '${readOnly}/serve.lock'); serving without them needs none\n`,
    );
  });

  it('with a checkpoint to convert: exits 1 with one log line naming the data dir and the way out, no stack', async function () {
    const checkpoint = await writeCheckpoint(path.join(scratch, 'checkpoint-9'), files.modelDir, 9);
    const served = await launch(['--retriever_model', checkpoint, '--index_path', files.indexPath, '--corpus_path', files.corpusPath, '--data_dir', readOnly]);
    assert.equal(served.port, undefined);
    assert.equal(await served.stop(), 1);
    const fatal = served.stdout.filter((line) => line.level === 60);
    assert.equal(fatal.length, 1, JSON.stringify(served.stdout));
    assert.match(fatal[0]!.msg, new RegExp(`^the retriever failed to load: cannot convert checkpoint ${checkpoint} into ${readOnly}/models \\(.+\\): give a writable --data_dir`));
    assert.match(fatal[0]!.msg, /convert it elsewhere once with `make-model --checkpoint .+checkpoint-9 --out <folder>` and serve that folder$/);
    assert.equal(fatal[0]!.err, undefined, 'no error object with a stack');
    assert.equal(served.stderr, '');
  });
});
