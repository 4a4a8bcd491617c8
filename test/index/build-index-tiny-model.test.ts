import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runBuildIndex } from '../../src/commands/build-index.js';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { makeModel } from '../../src/encoder/make-model.js';
import { readManifest } from '../../src/encoder/manifest.js';
import { MultiDeviceEncoder } from '../../src/encoder/multi-device-encoder.js';
import { OnnxEncoder } from '../../src/encoder/onnx-encoder.js';
import { WordPieceTokenizer } from '../../src/encoder/tokenizer.js';
import { WorkerEncoder } from '../../src/encoder/worker-encoder.js';
import { buildIndex } from '../../src/index/build-index.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { IXFI_HEADER_BYTES } from '../../src/index/ixfi-header.js';
import { isServiceError } from '../support/assert-service-error.js';
import { floatBytes, runPython } from '../support/index-fixtures.js';
import { CLI_PATH, SAMPLE_CORPUS as samplePath } from '../support/sample-data.js';

const CHECKED_ROWS = [0, 1, 500, 998, 999];

/** Same header, and vectors within float rounding: batches cut differently may move padding's last bits, rows may not move. */
async function assertSameIndex(actualPath: string, expectedPath: string, floats: number): Promise<void> {
  const [expectedFile, actualFile] = await Promise.all([readFile(expectedPath), readFile(actualPath)]);
  assert.equal(actualFile.length, expectedFile.length);
  assert.deepEqual(actualFile.subarray(0, IXFI_HEADER_BYTES), expectedFile.subarray(0, IXFI_HEADER_BYTES), 'same header');
  const vectorsOf = (file: Buffer) => new Float32Array(file.buffer.slice(file.byteOffset + IXFI_HEADER_BYTES, file.byteOffset + file.length));
  const [expected, actual] = [vectorsOf(expectedFile), vectorsOf(actualFile)];
  assert.equal(actual.length, floats);
  let worst = 0;
  actual.forEach((value, i) => (worst = Math.max(worst, Math.abs(value - expected[i]!))));
  assert.ok(worst < 1e-5, `largest difference ${worst}`);
}

describe('buildIndex over the 1k wiki18 sample with the tiny ONNX model', function () {
  let dir: string;
  let corpus: CorpusStore;
  let encoder: OnnxEncoder;
  let outPath: string;
  let modelDir: string;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'build-index-tiny-'));
    modelDir = path.join(dir, 'tiny');
    await makeModel({ outDir: modelDir, preset: 'tiny', seed: 3, vocabularyCorpus: samplePath, vocabularyPassages: 1000 });
    encoder = await OnnxEncoder.load(modelDir);
    corpus = await CorpusStore.open(samplePath, { sidecarPath: path.join(dir, 'sample.offsets') });
    outPath = path.join(dir, 'tiny_Flat.index');
    await buildIndex({ corpus, encoder, outPath, batchSize: 64 });
  });

  after(async function () {
    await encoder?.close();
    await corpus?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stores, for each row, the vector encodePassages gives that row alone, and Python faiss reads the same vectors', async function () {
    const { dimension } = encoder.manifest;
    const rows = await corpus.readRows(CHECKED_ROWS);
    const expected = await encoder.encodePassages(rows.map((row) => row.contents));
    const stored = runPython(
      `index = faiss.read_index(sys.argv[1])
print(index.d, index.ntotal, index.metric_type)
for row in map(int, sys.argv[2:]):
    print(' '.join(repr(float(v)) for v in index.reconstruct(row)))`,
      outPath, ...CHECKED_ROWS.map(String),
    ).trim().split('\n');
    assert.equal(stored[0], `${dimension} 1000 0`);
    CHECKED_ROWS.forEach((rowIndex, i) => {
      const vector = stored[i + 1]!.split(' ').map(Number);
      assert.equal(vector.length, dimension);
      vector.forEach((value, j) => assert.ok(Math.abs(value - expected[i * dimension + j]!) < 1e-5, `row ${rowIndex}[${j}]: ${value} vs ${expected[i * dimension + j]}`));
      assert.ok(Math.abs(Math.hypot(...vector) - 1) < 1e-5, `row ${rowIndex} is a unit vector`);
    });
    assert.notDeepEqual(floatBytes(expected.subarray(0, dimension)), floatBytes(expected.subarray(dimension, 2 * dimension)), 'rows differ');
  });

  it('finds each checked passage as its own best hit through FaissIndex', async function () {
    const index = await FaissIndex.open(outPath, { expectDimension: encoder.manifest.dimension, expectRows: corpus.rows });
    try {
      const passages = (await corpus.readRows(CHECKED_ROWS)).map((row) => row.contents);
      const { rowIndices, scores } = await index.nearest(await encoder.encodePassages(passages), 1);
      assert.deepEqual([...rowIndices], CHECKED_ROWS);
      scores.forEach((score) => assert.ok(Math.abs(score - 1) < 1e-4, `score ${score}`));
    } finally {
      await index.close();
    }
  });

  it('two encoder workers on CPU, standing in for two GPUs (no CUDA here), build the index one encoder builds, rows in corpus order', async function () {
    const twoDevices = await MultiDeviceEncoder.load(modelDir, [0, 1], { device: 'cpu', intraOpNumThreads: 1 });
    const twoPath = path.join(dir, 'two-devices_Flat.index');
    try {
      assert.equal(twoDevices.provider, 'cpu');
      // 128 rows a call, 64 on each device, as build-index gives it with --batch-size 64 --device-ids 0,1.
      await buildIndex({ corpus, encoder: twoDevices, outPath: twoPath, batchSize: 128 });
    } finally {
      await twoDevices.close();
    }
    await assertSameIndex(twoPath, outPath, corpus.rows * encoder.manifest.dimension);
  });

  it('build-index --device cpu --device-ids 0,1 (two CPU workers standing in for two GPUs) writes the same index, and refuses a repeated id', async function () {
    const cliPath = path.join(dir, 'cli_Flat.index');
    const args = ['build-index', '--model', modelDir, '--corpus', samplePath, '--sidecar', path.join(dir, 'cli.offsets'), '--out', cliPath, '--device', 'cpu', '--batch-size', '64'];
    const printed = JSON.parse(execFileSync(process.execPath, [CLI_PATH, ...args, '--device-ids', '0,1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    assert.deepEqual(printed, { path: cliPath, rows: 1000, dimension: encoder.manifest.dimension, maxPassageLength: encoder.manifest.maxPassageLength, resumedFrom: 0 });
    await assertSameIndex(cliPath, outPath, corpus.rows * encoder.manifest.dimension);
    assert.throws(() => execFileSync(process.execPath, [CLI_PATH, ...args, '--device-ids', '0,0'], { encoding: 'utf8', stdio: 'pipe' }), /expected distinct device ordinals/);
  });
});

describe('passage max length: 256 as the reference index scripts, or a build\'s own (tiny ONNX model, real worker)', function () {
  /** Sample rows 165–180: three of them (170, 171, 178) run past 256 tokens with this vocabulary. */
  const FIRST_ROW = 165;
  const ROWS = 16;
  const LONG = [5, 6, 13];
  let dir: string;
  let modelDir: string;
  let corpusPath: string;
  let passages: string[];
  let at256: OnnxEncoder;
  let at512: OnnxEncoder;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'passage-length-'));
    modelDir = path.join(dir, 'tiny');
    await makeModel({ outDir: modelDir, preset: 'tiny', seed: 3, vocabularyCorpus: samplePath, vocabularyPassages: 1000 });
    const lines = (await readFile(samplePath, 'utf8')).split('\n').slice(FIRST_ROW, FIRST_ROW + ROWS);
    passages = lines.map((line) => (JSON.parse(line) as { contents: string }).contents);
    corpusPath = path.join(dir, 'rows.jsonl');
    await writeFile(corpusPath, lines.join('\n') + '\n');
    at256 = await OnnxEncoder.load(modelDir);
    at512 = await OnnxEncoder.load(modelDir, { maxPassageLength: 512 });
  });

  after(async function () {
    await Promise.all([at256?.close(), at512?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('records 256 in retriever.json and cuts only the passages longer than that', async function () {
    assert.equal((await readManifest(modelDir)).maxPassageLength, 256);
    assert.equal(at256.manifest.maxPassageLength, 256);
    assert.equal(at512.manifest.maxPassageLength, 512);
    const tokenizer = await WordPieceTokenizer.load(modelDir);
    const lengths = (await tokenizer.tokenIdsOf(passages.map((text) => 'passage: ' + text), 10_000)).map((ids) => ids.length);
    assert.deepEqual(lengths.flatMap((length, row) => (length > 256 ? [row] : [])), LONG);
    const [short, long] = [await at256.encodePassages(passages), await at512.encodePassages(passages)];
    const { dimension } = at256.manifest;
    const differing = passages.flatMap((_, row) =>
      floatBytes(short.subarray(row * dimension, (row + 1) * dimension)).equals(floatBytes(long.subarray(row * dimension, (row + 1) * dimension))) ? [] : [row],
    );
    assert.deepEqual(differing, LONG);
  });

  it('build-index --max-passage-length 512 encodes at 512, reports it, and never resumes a partial build made at 256', async function () {
    const outPath = path.join(dir, 'at512_Flat.index');
    const partial = await CorpusStore.open(corpusPath);
    const stop = new AbortController();
    try {
      await assert.rejects(
        buildIndex({ corpus: partial, encoder: at256, outPath, batchSize: 4, signal: stop.signal, onProgress: (done) => done > 0 && stop.abort() }),
        { name: 'AbortError' },
      );
    } finally {
      await partial.close();
    }
    const command = { modelDir, corpusPath, outPath, batchSize: 4, device: 'cpu', deviceIds: [0], restart: false, maxPassageLength: 512 } as const;
    await assert.rejects(runBuildIndex(command), isServiceError('conflict', /partial index build of a different encoder/));

    const result = await runBuildIndex({ ...command, restart: true });
    assert.deepEqual(result, { path: outPath, rows: ROWS, dimension: at512.manifest.dimension, maxPassageLength: 512, resumedFrom: 0 });
    const bytes = await readFile(outPath);
    const stored = new Float32Array(new Uint8Array(bytes.subarray(IXFI_HEADER_BYTES)).buffer);
    assert.equal(stored.length, ROWS * at512.manifest.dimension);
    // Batches of 4 pad differently from one batch of 16, which moves the last float bits.
    const farthest = (vectors: Float32Array) => Math.max(...stored.map((value, i) => Math.abs(value - vectors[i]!)));
    assert.ok(farthest(await at512.encodePassages(passages)) < 1e-5, 'the index holds the 512-token vectors');
    assert.ok(farthest(await at256.encodePassages(passages)) > 1e-3, 'not the 256-token ones');
  });

  it('refuses a max passage length outside 2 to the model\'s 512 positions, in this thread and in the worker', async function () {
    await assert.rejects(OnnxEncoder.load(modelDir, { maxPassageLength: 513 }), isServiceError('bad_request', /from 2 to 512.*got 513/));
    await assert.rejects(OnnxEncoder.load(modelDir, { maxPassageLength: 1 }), isServiceError('bad_request', /got 1$/));
    await assert.rejects(WorkerEncoder.load(modelDir, { maxPassageLength: 513 }), isServiceError('bad_request', /max passage length/));
  });
});
