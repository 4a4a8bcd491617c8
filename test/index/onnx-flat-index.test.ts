import assert from 'node:assert/strict';
import fsPromises, { mkdtemp, open, readFile, rm, stat, utimes, type FileHandle } from 'node:fs/promises';
import { readFileSync, type PathLike } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isServiceError } from '../support/assert-service-error.js';
import { float32ToFloat16 } from '../../src/onnx/half-precision.js';
import type { VectorSearchResult } from '../../src/index/vector-index.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { ensureFp16Sidecar, FP16_DATA_OFFSET, fp16SidecarHeader, fp16SidecarPath } from '../../src/index/fp16-sidecar.js';
import { IXFI_HEADER_BYTES } from '../../src/index/ixfi-header.js';
import { IxfiWriter } from '../../src/index/ixfi-writer.js';
import { OnnxFlatIndex, type OnnxIndexOptions } from '../../src/index/onnx-flat-index.js';
import { openVectorIndex, planVectorIndex } from '../../src/index/open-index.js';
import { bruteForceTopk, floatBytes, unitVectors } from '../support/index-fixtures.js';

const DIMENSION = 32;
const ROWS = 300;
const TOPK = 10;

async function writeIndex(file: string, vectors: Float32Array, dimension = DIMENSION): Promise<string> {
  const writer = await IxfiWriter.open(file, { dimension, rows: vectors.length / dimension, description: {} });
  await writer.append(vectors);
  await writer.finish();
  return file;
}

function assertSameRanking(actual: VectorSearchResult, expected: { rowIndices: ArrayLike<number>; scores: ArrayLike<number> }, tolerance = 1e-5): void {
  assert.deepEqual([...actual.rowIndices], [...Array.from(expected.rowIndices)]);
  assert.equal(actual.scores.length, expected.scores.length);
  actual.scores.forEach((score, i) => assert.ok(Math.abs(score - expected.scores[i]!) < tolerance, `score ${i}: ${score} vs ${expected.scores[i]}`));
}

/** Anonymous resident memory of this process (workers included): heap copies count, mapped file pages do not. */
function rssAnonBytes(): number {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((entry) => entry.startsWith('RssAnon:'))!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

describe('OnnxFlatIndex (exact flat search on ONNX Runtime over the IxFI file)', function () {
  let dir: string;
  let indexPath: string;
  const base = unitVectors(ROWS, DIMENSION, 21);
  const queries = unitVectors(9, DIMENSION, 22);
  const opened: Array<{ close(): Promise<void> }> = [];

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'onnx-index-'));
    indexPath = await writeIndex(path.join(dir, 'base.index'), base);
  });

  afterEach(async function () {
    await Promise.all(opened.splice(0).map((index) => index.close()));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function openOnnx(file: string, options: OnnxIndexOptions = {}): Promise<OnnxFlatIndex> {
    const index = await OnnxFlatIndex.open(file, {}, options);
    opened.push(index);
    return index;
  }

  for (const [label, options] of [
    ['one shard', {}],
    ['shards of 64 rows (last one short)', { shardRows: 64 }],
    ['shards of 4 rows, fewer than topk', { shardRows: 4 }],
    ['two CPU sessions, 150 rows each, shards of 40', { devices: [{ provider: 'cpu' }, { provider: 'cpu' }], shardRows: 40 }],
    ['three CPU sessions, shards of 7', { devices: [{ provider: 'cpu' }, { provider: 'cpu' }, { provider: 'cpu' }], shardRows: 7 }],
  ] as Array<[string, OnnxIndexOptions]>) {
    it(`fp32, ${label}: the brute-force ranking and the same ids and scores as faiss-node`, async function () {
      const onnx = await openOnnx(indexPath, options);
      const faiss = await FaissIndex.open(indexPath);
      opened.push(faiss);
      const found = await onnx.nearest(queries, TOPK);
      assert.equal(found.queries, 9);
      assert.equal(found.topk, TOPK);
      assertSameRanking(found, bruteForceTopk(base, queries, DIMENSION, TOPK));
      assertSameRanking(found, await faiss.nearest(queries, TOPK));
      assert.equal(onnx.placement.sessions.length, options.devices?.length ?? 1);
      assert.deepEqual(
        onnx.placement.sessions.map((session) => session.rows).reduce((a, b) => a + b),
        ROWS,
      );
      assert.ok(onnx.placement.sessions.every((session) => session.provider === 'cpu' && session.precision === 'fp32'));
    });
  }

  it('clamps topk above the rows to the rows, even split over sessions smaller than topk', async function () {
    const onnx = await openOnnx(indexPath, { devices: [{ provider: 'cpu' }, { provider: 'cpu' }], shardRows: 50 });
    const found = await onnx.nearest(queries.subarray(0, 2 * DIMENSION), 1000);
    assert.equal(found.topk, ROWS);
    assert.equal(found.rowIndices.length, 2 * ROWS);
    assertSameRanking(found, bruteForceTopk(base, queries.subarray(0, 2 * DIMENSION), DIMENSION, ROWS));
  });

  it('breaks ties towards the lower row, across shards and sessions, as one flat scan does', async function () {
    const tied = unitVectors(12, DIMENSION, 23);
    for (const copy of [3, 8, 11]) tied.set(tied.subarray(5 * DIMENSION, 6 * DIMENSION), copy * DIMENSION);
    const file = await writeIndex(path.join(dir, 'tied.index'), tied);
    const query = tied.slice(5 * DIMENSION, 6 * DIMENSION);
    for (const options of [{ shardRows: 4 }, { devices: [{ provider: 'cpu' }, { provider: 'cpu' }], shardRows: 2 }] as OnnxIndexOptions[]) {
      const index = await openOnnx(file, options);
      const found = await index.nearest(query, 4);
      assert.deepEqual([...found.rowIndices], [3, 5, 8, 11]);
      assert.ok(found.scores.every((score) => score === found.scores[0]));
    }
  });

  it('answers no rows for no queries, and refuses a bad topk or a partial vector with bad_request', async function () {
    const onnx = await openOnnx(indexPath);
    const none = await onnx.nearest(new Float32Array(0), 3);
    assert.deepEqual({ queries: none.queries, rows: none.rowIndices.length }, { queries: 0, rows: 0 });
    await assert.rejects(onnx.nearest(queries, 0), isServiceError('bad_request', /topk must be a positive integer, got 0/));
    await assert.rejects(onnx.nearest(queries.subarray(0, 40), 3), isServiceError('bad_request', /40 floats are not whole vectors of dimension 32/));
  });

  it('reads the vectors from the IxFI file itself: a row rewritten on disk after opening is what the search sees', async function () {
    const file = await writeIndex(path.join(dir, 'mapped.index'), base);
    const onnx = await openOnnx(file, { shardRows: 128 });
    const target = queries.subarray(0, DIMENSION);
    assert.notEqual((await onnx.nearest(target, 1)).rowIndices[0], 200);
    // A session holding a copy would still answer from the old vectors.
    const handle = await open(file, 'r+');
    await handle.write(floatBytes(target), 0, DIMENSION * 4, IXFI_HEADER_BYTES + 200 * DIMENSION * 4);
    await handle.close();
    const after = await onnx.nearest(target, 1);
    assert.equal(after.rowIndices[0], 200);
    assert.ok(Math.abs(after.scores[0]! - 1) < 1e-5);
  });

  it('does not copy the vectors into the heap: anonymous memory grows by far less than the index size', async function () {
    const dimension = 256;
    const rows = 96_000;
    const big = new Float32Array(rows * dimension);
    for (let row = 0; row < rows; row++) big.set(queries.subarray((row % 9) * DIMENSION, (row % 9 + 1) * DIMENSION), row * dimension);
    const file = await writeIndex(path.join(dir, 'big.index'), big, dimension);
    const indexBytes = (await stat(file)).size;
    const before = rssAnonBytes();
    const onnx = await openOnnx(file, { shardRows: 32_768 });
    await onnx.nearest(big.subarray(0, 4 * dimension), 5);
    const grown = rssAnonBytes() - before;
    assert.ok(grown < indexBytes / 2, `anonymous memory grew ${grown} bytes for a ${indexBytes}-byte index`);
  });

  describe('fp16 (the GPU path, run here on the CPU provider: ORT 1.30 has fp16 Gemm and TopK kernels on CPU)', function () {
    const rows = 4000;
    const dimension = 64;
    const vectors = unitVectors(rows, dimension, 31);
    // Queries near stored rows, as real questions are near their passages.
    const near = new Float32Array(200 * dimension);
    const noise = unitVectors(200, dimension, 32);
    for (let q = 0; q < 200; q++) {
      for (let i = 0; i < dimension; i++) near[q * dimension + i] = vectors[(q * 17) * dimension + i]! + 0.8 * noise[q * dimension + i]!;
    }
    let file: string;

    before(async function () {
      file = await writeIndex(path.join(dir, 'half.index'), vectors, dimension);
    });

    it('recall@3 against exact search is at least 0.995, scores within fp16 rounding', async function () {
      const onnx = await openOnnx(file, { precision: 'fp16', shardRows: 1500 });
      assert.equal(onnx.placement.sessions[0]!.precision, 'fp16');
      const found = await onnx.nearest(near, 3);
      const exact = bruteForceTopk(vectors, near, dimension, 3);
      let hits = 0;
      for (let q = 0; q < 200; q++) {
        const truth = new Set(exact.rowIndices.slice(q * 3, q * 3 + 3));
        for (const row of found.rowIndices.subarray(q * 3, q * 3 + 3)) if (truth.has(row)) hits++;
      }
      assert.ok(hits / 600 >= 0.995, `recall@3 ${hits / 600}`);
      found.scores.forEach((score, i) => assert.ok(Math.abs(score - exact.scores[i]!) < 5e-3, `score ${i}: ${score} vs ${exact.scores[i]}`));
    });

    it('with exact rescoring of 16 candidates: the fp32 ids and scores (within 1e-5), across two sessions', async function () {
      const onnx = await openOnnx(file, { precision: 'fp16', rescore: 16, shardRows: 1500, devices: [{ provider: 'cpu' }, { provider: 'cpu' }] });
      assertSameRanking(await onnx.nearest(near, 3), bruteForceTopk(vectors, near, dimension, 3));
    });

    it('builds <index>.fp16 once, as the rounded vectors, and rebuilds it when the index changes', async function () {
      const sidecar = path.join(dir, 'own.fp16');
      const shape = { dimension, rows };
      assert.equal(await ensureFp16Sidecar(file, sidecar, shape), true, 'missing: built');
      const written = await readFile(sidecar);
      assert.deepEqual(new Uint8Array(written.subarray(FP16_DATA_OFFSET)), float32ToFloat16(vectors));
      const progress: number[] = [];
      assert.equal(await ensureFp16Sidecar(file, sidecar, shape, (done) => progress.push(done)), false, 'current: kept');
      assert.equal(progress.length, 0, 'no conversion for a current sidecar');

      const later = new Date(Date.now() + 60_000);
      await utimes(file, later, later);
      assert.equal(await ensureFp16Sidecar(file, sidecar, shape, (done) => progress.push(done)), true, 'touched index: rebuilt');
      assert.deepEqual(progress, [rows * dimension]);

      await rm(sidecar);
      await writeIndex(sidecar, new Float32Array(8), 8);
      assert.equal(await ensureFp16Sidecar(file, sidecar, shape), true, 'not a sidecar: rebuilt');
      assert.equal(await ensureFp16Sidecar(file, sidecar, shape), false);
      assert.equal(fp16SidecarPath('/x/e5_Flat.index'), '/x/e5_Flat.index.fp16');
    });

    it('a copy written by other means under fp16SidecarHeader is current: kept as it is, and searched', async function () {
      const sidecar = path.join(dir, 'direct.fp16');
      const shape = { dimension, rows };
      const other = unitVectors(rows, dimension, 33);
      const handle = await open(sidecar, 'w');
      await handle.write(await fp16SidecarHeader(file, shape), 0, FP16_DATA_OFFSET, 0);
      await handle.write(float32ToFloat16(other), 0, rows * dimension * 2, FP16_DATA_OFFSET);
      await handle.close();
      assert.equal(await ensureFp16Sidecar(file, sidecar, shape), false, 'current: not converted from the index');
      const onnx = await openOnnx(file, { precision: 'fp16', fp16Path: sidecar });
      const found = await onnx.nearest(other.slice(77 * dimension, 78 * dimension), 1);
      assert.equal(found.rowIndices[0], 77);
      assert.ok(Math.abs(found.scores[0]! - 1) < 2e-3, `score ${found.scores[0]}`);
    });

    it('search reads a rewritten index through a rebuilt sidecar after the index changed', async function () {
      const copy = await writeIndex(path.join(dir, 'changing.index'), vectors, dimension);
      const first = await openOnnx(copy, { precision: 'fp16' });
      const target = near.slice(0, dimension);
      const row = 1234;
      assert.notEqual((await first.nearest(target, 1)).rowIndices[0], row);
      const handle = await open(copy, 'r+');
      const norm = Math.hypot(...target);
      await handle.write(floatBytes(target.map((value) => value / norm)), 0, dimension * 4, IXFI_HEADER_BYTES + row * dimension * 4);
      await handle.close();
      const reopened = await openOnnx(copy, { precision: 'fp16' });
      assert.equal((await reopened.nearest(target, 1)).rowIndices[0], row);
    });
  });

  describe('CUDA requested where it cannot load (real ONNX Runtime failure: no GPU or CUDA provider here)', function () {
    it('falls back to exact fp32 on CPU with one warning per session', async function () {
      const warnings: string[] = [];
      const onnx = await openOnnx(indexPath, { devices: [{ provider: 'cuda', deviceId: 0 }], warn: (message) => warnings.push(message) });
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /CUDA execution provider unavailable \(device 0\), searching on CPU instead/);
      assert.deepEqual(onnx.placement.sessions.map(({ provider, precision }) => ({ provider, precision })), [{ provider: 'cpu', precision: 'fp32' }]);
      assertSameRanking(await onnx.nearest(queries, TOPK), bruteForceTopk(base, queries, DIMENSION, TOPK));
    });

    it('strict: refuses to open instead of falling back', async function () {
      await assert.rejects(
        OnnxFlatIndex.open(indexPath, {}, { devices: [{ provider: 'cuda', deviceId: 1 }], strict: true }),
        isServiceError('internal', /CUDA was demanded \(strict\) but its provider cannot load/),
      );
    });
  });

  it('refuses an index over the memory budget with a clear bad_request; two devices halve the need', async function () {
    // 300 rows × 32 × 4 = 38,400 bytes of vectors, plus 512 queries × 300 rows × 4 of scores.
    await assert.rejects(
      OnnxFlatIndex.open(indexPath, {}, { memoryBudgetBytes: 400_000 }),
      isServiceError('bad_request', /does not fit the search memory budget of 390\.6 KB per device: 300 rows × 32 fp32 take 37\.5 KB plus 600 KB of scores/),
    );
    const halves = await openOnnx(indexPath, { memoryBudgetBytes: 400_000, devices: [{ provider: 'cpu' }, { provider: 'cpu' }] });
    assert.equal(halves.placement.sessions.length, 2);
  });

  it('openVectorIndex: auto is the ONNX backend, faiss is faiss-node, both validate the header', async function () {
    const auto = await openVectorIndex(indexPath, { expectRows: ROWS });
    const faiss = await openVectorIndex(indexPath, { expectRows: ROWS }, { backend: 'faiss' });
    opened.push(auto, faiss);
    assert.ok(auto instanceof OnnxFlatIndex);
    assert.ok(faiss instanceof FaissIndex);
    await assert.rejects(openVectorIndex(indexPath, { expectRows: 5 }), isServiceError('bad_request', /300 rows but the corpus has 5 rows/));
  });

  it('openVectorIndex and planVectorIndex read the index header once each, on either backend', async function () {
    const opens = await countOpens(indexPath, async () => {
      opened.push(await openVectorIndex(indexPath, { expectRows: ROWS }));
      opened.push(await openVectorIndex(indexPath, { expectRows: ROWS }, { backend: 'faiss' }));
      assert.equal((await planVectorIndex(indexPath)).perDevice.rows, ROWS);
    });
    // The search workers map the file and the faiss host reads it outside this thread: these are the header reads.
    assert.equal(opens, 3);
  });
});

/** How often this thread opens `file` while `work` runs (each header read opens it once). */
async function countOpens(file: string, work: () => Promise<void>): Promise<number> {
  const original = fsPromises.open;
  let opens = 0;
  fsPromises.open = ((opened: PathLike, ...rest: unknown[]) => {
    if (opened === file) opens++;
    return (original as (file: PathLike, ...rest: unknown[]) => Promise<FileHandle>)(opened, ...rest);
  }) as typeof fsPromises.open;
  // file-io.ts's named import of open sees the patched function once the ESM exports are synced.
  syncBuiltinESMExports();
  try {
    await work();
  } finally {
    fsPromises.open = original;
    syncBuiltinESMExports();
  }
  return opens;
}
