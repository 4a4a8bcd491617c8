import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile, copyFile, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { makeModel } from '../../src/encoder/make-model.js';
import { buildIndex, type BuildIndexResult } from '../../src/index/build-index.js';
import { IXFI_HEADER_BYTES, readIxfiHeader } from '../../src/index/ixfi-header.js';
import { partialPaths } from '../../src/index/ixfi-writer.js';
import { mergeIndexParts } from '../../src/index/merge-index.js';
import type { RowRange } from '../../src/index/row-range.js';
import { selectedRows } from '../../src/index/row-range.js';
import { isServiceError } from '../support/assert-service-error.js';
import { runPython } from '../support/index-fixtures.js';
import { CLI_PATH, SAMPLE_CORPUS as samplePath } from '../support/sample-data.js';
import { HashingEncoder } from './hashing-encoder.js';

const run = promisify(execFile);
const DIMENSION = 16;

/** Python faiss reads both files; prints `ntotal d`, then each query row's top-5 labels and scores (queries: rows of the first). */
const SAME_ANSWERS_PY = `
a, b = faiss.read_index(sys.argv[1]), faiss.read_index(sys.argv[2])
q = a.reconstruct_n(0, a.ntotal)[::37]
da, la = a.search(q, 5)
db, lb = b.search(q, 5)
print(b.ntotal, b.d, len(q), int((la == lb).all()), int((da == db).all()), int((la[:, 0] == np.arange(0, a.ntotal, 37)).all()))
`;

describe('index parts and merge-index with a hashing stand-in encoder (tests the files, not a model)', function () {
  let dir: string;
  let corpusPath: string;
  let corpus: CorpusStore;
  let wholePath: string;

  const buildPart = (rows: RowRange, name: string, encoder = new HashingEncoder(), on = corpus): Promise<BuildIndexResult> =>
    buildIndex({ corpus: on, encoder, outPath: path.join(dir, name), batchSize: 64, rows });

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'merge-index-'));
    corpusPath = path.join(dir, 'wiki18.jsonl');
    await copyFile(samplePath, corpusPath);
    corpus = await CorpusStore.open(corpusPath);
    wholePath = path.join(dir, 'whole_Flat.index');
    await buildIndex({ corpus, encoder: new HashingEncoder(), outPath: wholePath, batchSize: 64 });
    await buildPart({ start: 0, end: 400 }, 'a.part');
    await buildPart({ start: 400, end: 1000 }, 'b.part');
  });

  after(async function () {
    await corpus?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a part is an IxFI file of its rows followed by its description, which Python faiss reads as its rows', async function () {
    const part = await readFile(path.join(dir, 'b.part'));
    const whole = await readFile(wholePath);
    const vectorBytes = 600 * DIMENSION * 4;
    assert.ok(part.subarray(IXFI_HEADER_BYTES, IXFI_HEADER_BYTES + vectorBytes).equals(whole.subarray(IXFI_HEADER_BYTES + 400 * DIMENSION * 4)));
    const trailer = part.subarray(IXFI_HEADER_BYTES + vectorBytes);
    assert.equal(trailer.toString('latin1', trailer.length - 8), 'IxPART01');
    const description = JSON.parse(trailer.subarray(0, Number(trailer.readBigUInt64LE(trailer.length - 16))).toString('utf8'));
    assert.deepEqual(
      { format: description.format, rows: description.rows, corpusRows: description.corpusRows, dimension: description.dimension, encoder: description.encoder.name },
      { format: 'agentic-retriever/index-part/1', rows: { start: 400, end: 1000 }, corpusRows: 1000, dimension: DIMENSION, encoder: 'hashing' },
    );
    assert.deepEqual(description.corpus, corpus.identity);
    assert.equal(runPython('print(faiss.read_index(sys.argv[1]).ntotal)', path.join(dir, 'b.part')).trim(), '600');
    await assert.rejects(readIxfiHeader(path.join(dir, 'b.part')), isServiceError('bad_request', /unexpected bytes after 600 rows × 16 \(a part from build-index --rows or --shard\? merge-index joins parts/));
  });

  it('merges parts given in any order (an empty one too) into the file a one-machine build writes, which Python faiss answers the same from', async function () {
    const outPath = path.join(dir, 'merged_Flat.index');
    const progress: Array<[number, number]> = [];
    // A shard of a corpus with fewer rows than shards is empty, and merges as nothing.
    assert.equal((await buildPart({ start: 400, end: 400 }, 'empty.part')).rows, 0);
    const partPaths = ['b.part', 'empty.part', 'a.part'].map((name) => path.join(dir, name));
    const result = await mergeIndexParts({ partPaths, outPath, onProgress: (done, total) => progress.push([done, total]) });
    assert.deepEqual(result, { path: outPath, rows: 1000, dimension: DIMENSION, parts: 3 });
    assert.deepEqual(progress, [[0, 1000], [400, 1000], [400, 1000], [1000, 1000]]);
    assert.ok((await readFile(outPath)).equals(await readFile(wholePath)), 'byte for byte the one-machine build');
    assert.equal(runPython(SAME_ANSWERS_PY, wholePath, outPath).trim(), '1000 16 28 1 1 1');
    assert.deepEqual((await readdir(dir)).filter((name) => name.includes('merged')), ['merged_Flat.index'], 'nothing left beside it');
  });

  it('resuming a stopped part build gives the same part as an uninterrupted one', async function () {
    const outPath = path.join(dir, 'resumed.part');
    const controller = new AbortController();
    const rows = { start: 400, end: 1000 };
    await assert.rejects(
      buildIndex({ corpus, encoder: new HashingEncoder(), outPath, batchSize: 64, rows, signal: controller.signal, onProgress: (done) => done >= 100 && controller.abort() }),
      { name: 'AbortError' },
    );
    await assert.rejects(stat(outPath), /ENOENT/);
    await assert.rejects(
      mergeIndexParts({ partPaths: [path.join(dir, 'a.part'), outPath], outPath: path.join(dir, 'never.index') }),
      isServiceError('conflict', /resumed\.part is still being built \(124 of 600 rows in .*resumed\.part\.partial\): run its build-index command again/),
    );
    await assert.rejects(
      mergeIndexParts({ partPaths: [path.join(dir, 'a.part'), partialPaths(outPath).vectors], outPath: path.join(dir, 'never.index') }),
      isServiceError('bad_request', /resumed\.part\.partial: is a part build still in progress/),
    );
    // Another range under the same name is another build, not a resume.
    await assert.rejects(buildPart({ start: 300, end: 1000 }, 'resumed.part'), isServiceError('conflict', /partial index build of a different encoder, corpus or shape/));

    const encoder = new HashingEncoder();
    const result = await buildIndex({ corpus, encoder, outPath, batchSize: 64, rows });
    assert.deepEqual(result, { path: outPath, rows: 600, dimension: DIMENSION, maxPassageLength: 256, resumedFrom: 124, rowRange: rows });
    assert.equal(encoder.passageBatches.reduce((sum, size) => sum + size, 0), 600 - 124, 'only the missing rows were encoded');
    assert.ok((await readFile(outPath)).equals(await readFile(path.join(dir, 'b.part'))));
    await assert.rejects(stat(partialPaths(outPath).vectors), /ENOENT/);
  });

  it('refuses parts that leave a gap, overlap, or are missing, naming the parts and rows', async function () {
    const never = path.join(dir, 'never.index');
    const merge = (...names: string[]) => mergeIndexParts({ partPaths: names.map((name) => path.join(dir, name)), outPath: never });
    await buildPart({ start: 0, end: 300 }, 'head.part');
    await buildPart({ start: 350, end: 1000 }, 'tail.part');
    await buildPart({ start: 300, end: 500 }, 'middle.part');
    await assert.rejects(merge('tail.part', 'head.part'), isServiceError('bad_request', /no part holds rows 300:350 between .*head\.part \(rows 0:300\) and .*tail\.part \(rows 350:1000\): a part is missing/));
    await assert.rejects(merge('b.part'), isServiceError('bad_request', /no part holds rows 0:400 before .*b\.part \(rows 400:1000\)/));
    await assert.rejects(merge('a.part'), isServiceError('bad_request', /no part holds rows 400:1000 of the corpus's 1000 \(after .*a\.part\)/));
    await assert.rejects(merge('a.part', 'middle.part', 'b.part'), isServiceError('bad_request', /index parts .*a\.part \(rows 0:400\) and .*middle\.part \(rows 300:500\) overlap on rows 300:400/));
    await assert.rejects(merge('a.part', 'a.part', 'b.part'), isServiceError('bad_request', /a\.part \(rows 0:400\) and .*a\.part \(rows 0:400\) overlap on rows 0:400/));
    await assert.rejects(merge('a.part', 'gone.part'), isServiceError('not_found', /index part .*gone\.part does not exist \(copy it from the machine that built it\)/));
    await assert.rejects(merge(), isServiceError('bad_request', /give the index parts to merge/));
    await assert.rejects(merge('a.part', 'whole_Flat.index'), isServiceError('bad_request', /whole_Flat\.index: not a finished index part/));
    await assert.rejects(stat(never), /ENOENT/);
  });

  it('refuses parts of another model, another dimension or another corpus', async function () {
    const never = path.join(dir, 'never.index');
    await buildPart({ start: 400, end: 1000 }, 'other-model.part', new HashingEncoder('other'));
    await buildPart({ start: 400, end: 1000 }, 'other-dims.part', new HashingEncoder('hashing', 8));
    const merge = (second: string) => mergeIndexParts({ partPaths: [path.join(dir, 'a.part'), path.join(dir, second)], outPath: never });
    await assert.rejects(merge('other-model.part'), isServiceError('conflict', /other-model\.part was encoded by another model than .*a\.part \(name "other" vs "hashing"\): the parts of one index must come from one build/));
    await assert.rejects(merge('other-dims.part'), isServiceError('conflict', /other-dims\.part has dimension 8, .*a\.part has 16/));

    const grownPath = path.join(dir, 'grown.jsonl');
    await copyFile(corpusPath, grownPath);
    await appendFile(grownPath, '{"id": "1000", "contents": "\\"Added\\"\\nrow"}\n');
    const grown = await CorpusStore.open(grownPath);
    try {
      await buildPart({ start: 400, end: 1001 }, 'other-corpus.part', new HashingEncoder(), grown);
    } finally {
      await grown.close();
    }
    await assert.rejects(merge('other-corpus.part'), isServiceError('conflict', /other-corpus\.part was built from another corpus than .*a\.part \(1001 rows, \d+ bytes, fingerprint [0-9a-f]{12} vs 1000 rows/));
    await assert.rejects(stat(never), /ENOENT/);
  });

  it('merges parts built from copies of the corpus with other modification times (each machine has its own)', async function () {
    const copyPath = path.join(dir, 'copy.jsonl');
    await copyFile(corpusPath, copyPath);
    const copy = await CorpusStore.open(copyPath);
    try {
      assert.notEqual(copy.identity.mtimeMs, corpus.identity.mtimeMs);
      await buildPart({ start: 400, end: 1000 }, 'copy.part', new HashingEncoder(), copy);
    } finally {
      await copy.close();
    }
    const outPath = path.join(dir, 'from-copies.index');
    await mergeIndexParts({ partPaths: [path.join(dir, 'a.part'), path.join(dir, 'copy.part')], outPath });
    assert.ok((await readFile(outPath)).equals(await readFile(wholePath)));
  });

  it('refuses a part whose description does not match its vectors', async function () {
    const damaged = path.join(dir, 'damaged.part');
    const bytes = await readFile(path.join(dir, 'b.part'));
    await writeFile(damaged, Buffer.concat([bytes.subarray(0, IXFI_HEADER_BYTES + 10 * DIMENSION * 4), bytes.subarray(IXFI_HEADER_BYTES + 600 * DIMENSION * 4)]));
    await assert.rejects(mergeIndexParts({ partPaths: [path.join(dir, 'a.part'), damaged], outPath: path.join(dir, 'never.index') }), isServiceError('bad_request', /damaged\.part: truncated/));
  });

  it('shard I of N holds rows floor(I*rows/N) to floor((I+1)*rows/N); --rows past the corpus or empty is refused', function () {
    assert.deepEqual([0, 1, 2].map((index) => selectedRows({ shard: { index, count: 3 } }, 1000)), [{ start: 0, end: 333 }, { start: 333, end: 666 }, { start: 666, end: 1000 }]);
    assert.deepEqual(selectedRows({ shard: { index: 2, count: 4 } }, 21_015_324), { start: 10_507_662, end: 15_761_493 });
    assert.deepEqual(selectedRows({ rows: { start: 400 } }, 1000), { start: 400, end: 1000 });
    assert.throws(() => selectedRows({ rows: { start: 0, end: 1001 } }, 1000), isServiceError('bad_request', /--rows 0:1001 runs past the corpus's 1000 rows/));
    assert.throws(() => selectedRows({ rows: { start: 500, end: 500 } }, 1000), isServiceError('bad_request', /--rows 500:500 holds no rows/));
  });
});

describe('build-index --rows/--shard on two "machines" and merge-index, through the CLI (tiny ONNX model)', function () {
  /** Rows 0 to 296 of the sample: shard 0/2 ends at row 148, a whole batch of 4 rows, so both builds cut the same batches. */
  const ROWS = 296;
  let dir: string;
  let modelDir: string;
  let corpusPath: string;
  const cli = async (...args: string[]): Promise<unknown> => JSON.parse((await run(process.execPath, [CLI_PATH, ...args])).stdout);
  const build = (out: string, ...args: string[]) =>
    cli('build-index', '--model', modelDir, '--corpus', corpusPath, '--out', path.join(dir, out), '--device', 'cpu', '--batch-size', '4', ...args);

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'merge-index-cli-'));
    modelDir = path.join(dir, 'tiny');
    await makeModel({ outDir: modelDir, preset: 'tiny', seed: 3, vocabularyCorpus: samplePath, vocabularyPassages: 1000 });
    corpusPath = path.join(dir, 'wiki18.jsonl');
    await writeFile(corpusPath, (await readFile(samplePath, 'utf8')).split('\n').slice(0, ROWS).join('\n') + '\n');
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('two parts merged equal a one-machine build byte for byte, and Python faiss answers the same from both', async function () {
    await build('whole_Flat.index');
    const first = await build('part-0-of-2', '--shard', '0/2');
    const second = await build('part-1-of-2', '--rows', '148:');
    assert.deepEqual([first, second].map((part) => (part as BuildIndexResult).rowRange), [{ start: 0, end: 148 }, { start: 148, end: ROWS }]);
    const merged = await cli('merge-index', '--out', path.join(dir, 'merged_Flat.index'), path.join(dir, 'part-1-of-2'), path.join(dir, 'part-0-of-2'));
    assert.deepEqual(merged, { path: path.join(dir, 'merged_Flat.index'), rows: ROWS, dimension: 32, parts: 2 });
    const [whole, joined] = await Promise.all([readFile(path.join(dir, 'whole_Flat.index')), readFile(path.join(dir, 'merged_Flat.index'))]);
    assert.ok(joined.equals(whole), 'the merged file is the one-machine build, byte for byte');
    assert.deepEqual(await readIxfiHeader(path.join(dir, 'merged_Flat.index')), { dimension: 32, rows: ROWS });
    assert.equal(runPython(SAME_ANSWERS_PY, path.join(dir, 'whole_Flat.index'), path.join(dir, 'merged_Flat.index')).trim(), `${ROWS} 32 8 1 1 1`);
  });

  it('merge-index --faiss-type HNSW32 converts the merged Flat and keeps no Flat behind', async function () {
    const out = path.join(dir, 'merged_HNSW32.index');
    const result = (await cli('merge-index', '--out', out, '--faiss_type', 'HNSW32', path.join(dir, 'part-0-of-2'), path.join(dir, 'part-1-of-2'))) as {
      encoded: { rows: number };
      conversion: { kind: string; rows: number };
    };
    assert.deepEqual([result.encoded.rows, result.conversion.kind, result.conversion.rows], [ROWS, 'IndexHNSWFlat', ROWS]);
    await assert.rejects(stat(`${out}.flat`), /ENOENT/);
    assert.equal(runPython('i = faiss.read_index(sys.argv[1]); print(i.ntotal, i.d)', out).trim(), `${ROWS} 32`);
  });

  it('refuses a part of a non-Flat type, a shard number past the count and a range past the corpus', async function () {
    await assert.rejects(build('x', '--shard', '0/2', '--faiss-type', 'HNSW32'), /a part \(--rows\/--shard\) is always Flat: give --faiss-type HNSW32 to merge-index/);
    await assert.rejects(build('x', '--shard', '2/2'), /option '--shard <i\/n>' argument '2\/2' is invalid\. expected I\/N, shard I of N numbered from 0/);
    await assert.rejects(build('x', '--rows', '0:297'), /--rows 0:297 runs past the corpus's 296 rows/);
    await assert.rejects(build('x', '--rows', '0:10', '--shard', '0/2'), /option '--rows <start:end>' cannot be used with option '--shard <i\/n>'/);
  });
});
