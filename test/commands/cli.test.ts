import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../../src/project-files.js';
import { CLI_PATH, SAMPLE_CORPUS } from '../support/sample-data.js';

const run = promisify(execFile);

/** The CLI as a user runs it, from another folder than the project, so nothing lands in ./data by accident. */
function runCli(args: string[], cwd: string): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [CLI_PATH, ...args], { cwd, encoding: 'utf8' });
}

describe('the CLI: demo under --data_dir, both flag spellings on every command (child processes)', function () {
  let dir: string;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'cli-'));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('build-demo builds into --data-dir, and serve with no files serves that demo from --data_dir', async function () {
    const dataDir = path.join(dir, 'state');
    const built = JSON.parse((await runCli(['build-demo', '--data-dir', dataDir], dir)).stdout);
    assert.equal(built.built, true);
    assert.deepEqual(built.files, {
      modelDir: path.join(dataDir, 'demo', 'model'),
      indexPath: path.join(dataDir, 'demo', 'demo_Flat.index'),
      corpusPath: path.join(PROJECT_ROOT, 'demo', 'corpus.jsonl'),
      sidecarPath: path.join(dataDir, 'demo', 'corpus.jsonl.offsets'),
    });
    assert.deepEqual(await readdir(dir), ['state'], 'nothing written beside it');

    const child = spawn(process.execPath, [CLI_PATH, 'serve', '--data_dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--device', 'cpu'], { cwd: dir });
    const exited = once(child, 'close');
    try {
      const messages: string[] = [];
      let port: number | undefined;
      for await (const text of createInterface({ input: child.stdout })) {
        const line = JSON.parse(text) as { msg: string; port?: number };
        messages.push(line.msg);
        port ??= line.port;
        if (line.msg === 'ready') break;
      }
      assert.ok(!messages.some((message) => message.startsWith('building the demo model')), 'the demo built above is reused');
      const info = (await (await fetch(`http://127.0.0.1:${port}/info`)).json()) as { retriever: Record<string, unknown> };
      const { modelDir, indexPath, corpusPath } = info.retriever;
      assert.deepEqual({ modelDir, indexPath, corpusPath }, { modelDir: built.files.modelDir, indexPath: built.files.indexPath, corpusPath: built.files.corpusPath });
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    assert.deepEqual((await readdir(dir)).sort(), ['state']);
  });

  it('takes dash and underscore spellings alike on make-model, build-index and construct-training, and refuses both with different values', async function () {
    const modelDir = path.join(dir, 'tiny');
    const manifest = JSON.parse((await runCli(['make-model', '--preset', 'tiny', '--out', modelDir, '--vocabulary_corpus', SAMPLE_CORPUS], dir)).stdout);
    assert.equal(manifest.provenance.vocabularyFrom, SAMPLE_CORPUS);
    const indexPath = path.join(dir, 'tiny_Flat.index');
    const index = JSON.parse((await runCli(['build-index', '--model', modelDir, '--corpus', SAMPLE_CORPUS, '--out', indexPath, '--batch_size', '500', '--device', 'cpu'], dir)).stdout);
    assert.deepEqual([index.rows, index.resumedFrom], [1000, 0]);
    await assert.rejects(runCli(['construct-training', '--input', 'a', '--output', 'b', '--corpus-rows', '5', '--corpus_rows', '6'], dir), (error: { stderr: string }) => {
      assert.match(error.stderr, /bad_request: --corpus-rows and --corpus_rows were both given with different values/);
      return true;
    });
  });
});
