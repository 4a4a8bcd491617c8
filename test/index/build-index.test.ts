import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { isServiceError } from '../support/assert-service-error.js';
import { buildIndex, indexFileName } from '../../src/index/build-index.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { IXFI_HEADER_BYTES, readIxfiHeader } from '../../src/index/ixfi-header.js';
import { partialPaths, partialRowsWritten } from '../../src/index/ixfi-writer.js';
import type { RowRange } from '../../src/index/row-range.js';
import { HashingEncoder } from './hashing-encoder.js';
import { floatBytes } from '../support/index-fixtures.js';
import { SAMPLE_CORPUS as samplePath } from '../support/sample-data.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIMENSION = 16;

/** Starts a build (of a part of `rows`, when given) in a child process and SIGKILLs it once it reports at least `killAfterRows` rows. */
async function killBuildMidway(corpusPath: string, outPath: string, killAfterRows: number, rows?: RowRange): Promise<number> {
  const range = rows ? [String(rows.start), String(rows.end)] : [];
  const child = spawn(process.execPath, [path.join(here, 'build-index-child.js'), corpusPath, outPath, ...range], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_, signal) => resolve(signal)));
  let reported = 0;
  for await (const line of createInterface({ input: child.stdout })) {
    reported = Number(line);
    if (reported >= killAfterRows) {
      child.kill('SIGKILL');
      break;
    }
  }
  assert.equal(await exited, 'SIGKILL', 'the build was killed, not finished');
  return reported;
}

describe('buildIndex with a hashing stand-in encoder (tests the file pipeline, not a model)', function () {
  let dir: string;
  let corpusPath: string;
  let corpus: CorpusStore;

  beforeEach(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'build-index-'));
    corpusPath = path.join(dir, 'wiki18.jsonl');
    await copyFile(samplePath, corpusPath);
    corpus = await CorpusStore.open(corpusPath);
  });

  afterEach(async function () {
    await corpus.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('encodes every passage in row order through encodePassages, in batches, with progress to the corpus rows', async function () {
    const encoder = new HashingEncoder();
    const outPath = path.join(dir, 'hashing_Flat.index');
    const progress: Array<[number, number]> = [];
    const result = await buildIndex({ corpus, encoder, outPath, batchSize: 64, onProgress: (done, total) => progress.push([done, total]) });
    assert.deepEqual(result, { path: outPath, rows: 1000, dimension: DIMENSION, maxPassageLength: 256, resumedFrom: 0 });
    assert.deepEqual(encoder.passageBatches, [4, 8, 16, 32, ...Array(14).fill(64), 44], 'small batches first, for an early progress report');
    assert.deepEqual(progress.slice(0, 3), [[0, 1000], [4, 1000], [12, 1000]]);
    assert.deepEqual(progress.at(-1), [1000, 1000]);
    assert.deepEqual(await readIxfiHeader(outPath, { expectDimension: DIMENSION, expectRows: 1000 }), { dimension: DIMENSION, rows: 1000 });

    const file = await readFile(outPath);
    for (const rowIndex of [0, 1, 517, 999]) {
      const expected = await new HashingEncoder().encodePassages([(await corpus.readRow(rowIndex)).contents]);
      const offset = IXFI_HEADER_BYTES + rowIndex * DIMENSION * 4;
      assert.ok(file.subarray(offset, offset + DIMENSION * 4).equals(floatBytes(expected)), `row ${rowIndex}`);
    }
    const index = await FaissIndex.open(outPath, { expectDimension: DIMENSION, expectRows: corpus.rows });
    try {
      const query = await new HashingEncoder().encodePassages([(await corpus.readRow(321)).contents]);
      const { rowIndices, scores } = await index.nearest(query, 1);
      assert.equal(rowIndices[0], 321);
      assert.ok(Math.abs(scores[0]! - 1) < 1e-5);
    } finally {
      await index.close();
    }
  });

  it('a SIGKILLed build leaves no index file, and resuming it gives the same bytes as an uninterrupted build', async function () {
    const uninterrupted = path.join(dir, 'uninterrupted.index');
    await buildIndex({ corpus, encoder: new HashingEncoder(), outPath: uninterrupted, batchSize: 50 });

    const killedPath = path.join(dir, 'killed.index');
    const reported = await killBuildMidway(corpusPath, killedPath, 300);
    assert.ok(reported >= 300 && reported < 1000, `killed after ${reported} rows`);
    await assert.rejects(stat(killedPath), /ENOENT/);
    await assert.rejects(FaissIndex.open(killedPath), isServiceError('not_found', /killed\.index: cannot open/));
    // A kill can also land inside a row's write.
    await appendFile(partialPaths(killedPath).vectors, Buffer.alloc(DIMENSION * 2));

    const encoder = new HashingEncoder();
    const progress: number[] = [];
    const result = await buildIndex({ corpus, encoder, outPath: killedPath, batchSize: 50, onProgress: (done) => progress.push(done) });
    assert.ok(result.resumedFrom >= reported, `resumed from ${result.resumedFrom}, ${reported} were reported done`);
    assert.equal(progress[0], result.resumedFrom);
    assert.equal(encoder.passageBatches.reduce((sum, size) => sum + size, 0), 1000 - result.resumedFrom, 'only the missing rows were encoded');
    assert.ok((await readFile(killedPath)).equals(await readFile(uninterrupted)));
    await assert.rejects(stat(partialPaths(killedPath).vectors), /ENOENT/);
  });

  it('a SIGKILLed part build, resumed, gives the part an uninterrupted build writes', async function () {
    const rows = { start: 250, end: 750 };
    const uninterrupted = path.join(dir, 'uninterrupted.part');
    await buildIndex({ corpus, encoder: new HashingEncoder(), outPath: uninterrupted, batchSize: 50, rows });
    const killedPath = path.join(dir, 'killed.part');
    const reported = await killBuildMidway(corpusPath, killedPath, 150, rows);
    assert.ok(reported >= 150 && reported < 500, `killed after ${reported} rows`);
    await assert.rejects(stat(killedPath), /ENOENT/);
    const encoder = new HashingEncoder();
    const result = await buildIndex({ corpus, encoder, outPath: killedPath, batchSize: 50, rows });
    assert.ok(result.resumedFrom >= reported, `resumed from ${result.resumedFrom}, ${reported} were reported done`);
    assert.equal(encoder.passageBatches.reduce((sum, size) => sum + size, 0), 500 - result.resumedFrom, 'only the missing rows were encoded');
    assert.ok((await readFile(killedPath)).equals(await readFile(uninterrupted)));
  });

  it('stops between batches on abort, keeping the partial build for a resume', async function () {
    const outPath = path.join(dir, 'aborted.index');
    const controller = new AbortController();
    let abortedAt = 0;
    const onProgress = (done: number): void => {
      if (done < 200 || controller.signal.aborted) return;
      abortedAt = done;
      controller.abort();
    };
    await assert.rejects(buildIndex({ corpus, encoder: new HashingEncoder(), outPath, batchSize: 100, signal: controller.signal, onProgress }), {
      name: 'AbortError',
    });
    assert.equal(abortedAt, 4 + 8 + 16 + 32 + 64 + 100);
    await assert.rejects(stat(outPath), /ENOENT/);
    assert.equal((await stat(partialPaths(outPath).vectors)).size, IXFI_HEADER_BYTES + abortedAt * DIMENSION * 4);
    assert.equal(await partialRowsWritten(outPath), abortedAt);
    const result = await buildIndex({ corpus, encoder: new HashingEncoder(), outPath, batchSize: 100 });
    assert.equal(result.resumedFrom, abortedAt);
    assert.equal(await partialRowsWritten(outPath), 0, 'a finished build leaves no partial file');
  });

  it('abandons the batch being encoded on abort instead of waiting for it', async function () {
    const outPath = path.join(dir, 'abandoned.index');
    const controller = new AbortController();
    /** Its third batch never finishes, like a long encode on a slow CPU: only abandoning it ends the build. */
    class StallingEncoder extends HashingEncoder {
      override encodePassages(texts: readonly string[]): Promise<Float32Array> {
        if (this.passageBatches.length < 2) return super.encodePassages(texts);
        this.passageBatches.push(texts.length);
        controller.abort();
        return new Promise(() => undefined);
      }
    }
    const encoder = new StallingEncoder();
    await assert.rejects(buildIndex({ corpus, encoder, outPath, batchSize: 64, signal: controller.signal }), { name: 'AbortError' });
    assert.deepEqual(encoder.passageBatches, [4, 8, 16]);
    assert.equal(await partialRowsWritten(outPath), 12, 'the abandoned batch wrote nothing');
  });

  it('refuses to resume a partial build made with another encoder or another corpus state, unless restarted', async function () {
    const outPath = path.join(dir, 'out.index');
    const controller = new AbortController();
    await assert.rejects(buildIndex({ corpus, encoder: new HashingEncoder('model-a'), outPath, batchSize: 100, signal: controller.signal, onProgress: (done) => done >= 100 && controller.abort() }));
    const conflict = isServiceError('conflict', /partial index build of a different encoder, corpus or shape/);
    await assert.rejects(buildIndex({ corpus, encoder: new HashingEncoder('model-b'), outPath, batchSize: 100 }), conflict);

    await appendFile(corpusPath, '{"id": "1000", "contents": "\\"Added\\"\\nrow"}\n');
    const grown = await CorpusStore.open(corpusPath);
    try {
      await assert.rejects(buildIndex({ corpus: grown, encoder: new HashingEncoder('model-a'), outPath, batchSize: 100 }), conflict);
      const restarted = await buildIndex({ corpus: grown, encoder: new HashingEncoder('model-a'), outPath, batchSize: 100, restart: true });
      assert.deepEqual({ resumedFrom: restarted.resumedFrom, rows: restarted.rows }, { resumedFrom: 0, rows: 1001 });
    } finally {
      await grown.close();
    }
  });

  it('names index files as FlashRAG does', function () {
    assert.equal(indexFileName('E5-Base-v2'), 'e5-base-v2_Flat.index');
    assert.equal(indexFileName('E5-Base-v2', 'HNSW64'), 'e5-base-v2_HNSW64.index');
  });
});
