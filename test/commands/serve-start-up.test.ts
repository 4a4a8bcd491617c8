import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { cudaProviderInstalled } from '../../src/onnx/execution-provider.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { CLI_PATH } from '../support/sample-data.js';
import { serveOnce } from '../support/serve-child.js';
import { temporaryDir, writeCheckpoint } from '../support/version-fixtures.js';

const INFO = 30;
const WARN = 40;

/** What `serve` says about its launch line: --help, and at start-up (child processes, tiny model on CPU). */
describe("serve's words about its launch line (child process)", function () {
  let files: RetrieverFiles;
  let dataDir: string;

  before(async function () {
    files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
    dataDir = await temporaryDir('serve-start-up');
  });

  after(async function () {
    await rm(dataDir, { recursive: true, force: true });
  });

  /** `serve` of `model` with the tiny model's index and corpus. */
  function serve(model: string, ...flags: string[]) {
    return serveOnce(['--retriever_model', model, '--index_path', files.indexPath, '--corpus_path', files.corpusPath, '--data_dir', dataDir, ...flags]);
  }

  it('serve --help says --retriever_model takes a Hugging Face checkpoint folder too', async function () {
    const { stdout } = await promisify(execFile)(process.execPath, [CLI_PATH, 'serve', '--help']);
    assert.match(
      stdout.replace(/\s+/g, ' '),
      / --retriever_model <value> model folder with retriever\.json, or a Hugging Face BERT checkpoint folder \(config\.json \+ \*\.safetensors\), converted once \(env RETRIEVER_RETRIEVER_MODEL\)/,
    );
  });

  it('--retriever_name bm25 says BM25 is not served; a Hugging Face model id as --retriever_model says it is not downloaded and what to give instead', async function () {
    const run = await serve('intfloat/e5-base-v2', '--retriever_name', 'bm25', '--device', 'cpu');
    assert.equal(run.code, 1);
    assert.deepEqual(
      run.log.filter((line) => line.msg.startsWith('--retriever_name')).map((line) => [line.level, line.msg]),
      [[WARN, '--retriever_name bm25: BM25 is not served; this service retrieves with the dense encoder of --retriever_model over its FAISS-format index only']],
    );
    assert.equal(
      run.log.find((line) => line.msg.startsWith('the retriever failed to load'))?.msg,
      'the retriever failed to load: model folder intfloat/e5-base-v2 does not exist; if it is a Hugging Face model id, models are not downloaded here: ' +
        'download it first (huggingface-cli download intfloat/e5-base-v2 --local-dir <folder>) and give that local folder',
    );
  });

  it('--device auto where CUDA cannot load (no CUDA provider here): the checkpoint conversion writes no model.fp16.onnx', async function () {
    if (cudaProviderInstalled()) this.skip();
    const checkpoint = await writeCheckpoint(path.join(dataDir, 'checkpoint'), files.modelDir, 11);
    const run = await serve(checkpoint, '--device', 'auto');
    assert.equal(run.info?.provider, 'cpu');
    const converted = await readdir(path.join(dataDir, 'models'));
    assert.equal(converted.length, 1);
    const graphs = (await readdir(path.join(dataDir, 'models', converted[0]!))).filter((file) => file.endsWith('.onnx'));
    assert.deepEqual(graphs, ['model.onnx']);
  });

  it('a plain start (no training token) says once, at info, that the training routes are off, and warns about nothing', async function () {
    const run = await serve(files.modelDir, '--device', 'cpu');
    assert.equal(run.info?.provider, 'cpu');
    assert.deepEqual(
      run.log.filter((line) => /training routes/.test(line.msg)).map((line) => [line.level, line.msg]),
      [[INFO, 'training routes are off: give --training_token (or --no_training_auth for local use) to turn them on']],
    );
    assert.deepEqual(run.log.filter((line) => line.level >= WARN), []);
  });
});
