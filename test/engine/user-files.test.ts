import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdir, rm, symlink, truncate } from 'node:fs/promises';
import path from 'node:path';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { readBertConfig } from '../../src/encoder/hf-checkpoint.js';
import { readManifest } from '../../src/encoder/manifest.js';
import { createEncoderSession } from '../../src/encoder/session.js';
import { WordPieceTokenizer } from '../../src/encoder/tokenizer.js';
import { resolveModelFolder } from '../../src/engine/model-folder.js';
import { METADATA_FILE_LIMIT } from '../../src/file-io.js';
import { readIxfiHeader } from '../../src/index/ixfi-header.js';
import { isServiceError } from '../support/assert-service-error.js';
import { temporaryDir, writeCheckpoint } from '../support/version-fixtures.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';

function mkfifo(file: string): string {
  execFileSync('mkfifo', [file]);
  return file;
}

/**
 * User-given paths that are not regular files (a FIFO would block open() forever, /dev/zero
 * would be read until memory runs out) are refused at once with a 400 naming the path and what
 * it is. A hang here fails the test by mocha's timeout.
 */
describe('user-given files must be regular files', function () {
  let dir: string;
  let modelDir: string;

  before(async function () {
    dir = await temporaryDir('user-files');
    ({ modelDir } = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS }));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('a FIFO or a directory as the corpus or the index', async function () {
    const fifo = mkfifo(path.join(dir, 'pipe.jsonl'));
    await assert.rejects(CorpusStore.open(fifo), isServiceError('bad_request', new RegExp(`corpus ${fifo} is a FIFO \\(named pipe\\), not a regular file`)));
    await assert.rejects(readIxfiHeader(fifo), isServiceError('bad_request', new RegExp(`index ${fifo} is a FIFO`)));
    await assert.rejects(readIxfiHeader(dir), isServiceError('bad_request', new RegExp(`index ${dir} is a directory, not a regular file`)));
    await assert.rejects(CorpusStore.open(dir), isServiceError('bad_request', new RegExp(`corpus ${dir} is a directory`)));
  });

  it('config.json linked to /dev/zero, or larger than the metadata limit, is refused before it is read', async function () {
    const checkpoint = await writeCheckpoint(path.join(dir, 'zero-config'), modelDir, 3);
    const config = path.join(checkpoint, 'config.json');
    await rm(config);
    await symlink('/dev/zero', config);
    await assert.rejects(readBertConfig(checkpoint), isServiceError('bad_request', new RegExp(`checkpoint config ${config} is a character device`)));
    await assert.rejects(
      resolveModelFolder(checkpoint, { cacheDir: path.join(dir, 'cache'), fp16: false }),
      isServiceError('bad_request', /config\.json is a character device/),
    );

    // Sparse: the size is what counts, and nothing may read that far.
    await rm(config);
    await cp(path.join(checkpoint, 'vocab.txt'), config);
    await truncate(config, METADATA_FILE_LIMIT + 1);
    await assert.rejects(readBertConfig(checkpoint), isServiceError('bad_request', new RegExp(`is ${METADATA_FILE_LIMIT + 1} bytes, more than the ${METADATA_FILE_LIMIT}`)));
  });

  it('a model folder whose retriever.json, tokenizer.json or model.onnx is a FIFO', async function () {
    for (const [file, load, what] of [
      ['retriever.json', (folder: string) => readManifest(folder), 'model manifest'],
      ['tokenizer.json', (folder: string) => WordPieceTokenizer.load(folder), 'tokenizer'],
      ['model.onnx', async (folder: string) => createEncoderSession(folder, await readManifest(modelDir), { device: 'cpu' }), 'model file'],
    ] as const) {
      const folder = path.join(dir, `fifo-${file}`);
      await mkdir(folder);
      await cp(modelDir, folder, { recursive: true });
      await rm(path.join(folder, file));
      const fifo = mkfifo(path.join(folder, file));
      await assert.rejects(load(folder), isServiceError('bad_request', new RegExp(`${what} ${fifo} is a FIFO`)), file);
    }
  });
});
