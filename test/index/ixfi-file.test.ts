import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm, stat, truncate, appendFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isServiceError } from '../support/assert-service-error.js';
import { readIxfiHeader } from '../../src/index/ixfi-header.js';
import { IxfiWriter, partialPaths } from '../../src/index/ixfi-writer.js';
import { floatBytes, runPython, unitVectors } from '../support/index-fixtures.js';

const DIMENSION = 16;
const ROWS = 50;

async function writeIndex(outPath: string, vectors: Float32Array, description: Record<string, unknown> = { encoder: 'a' }): Promise<void> {
  const writer = await IxfiWriter.open(outPath, { dimension: DIMENSION, rows: vectors.length / DIMENSION, description });
  await writer.append(vectors);
  await writer.finish();
}

describe('IxFI files', function () {
  let dir: string;
  const vectors = unitVectors(ROWS, DIMENSION, 7);

  beforeEach(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'ixfi-'));
  });

  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the same bytes as faiss.write_index(IndexFlatIP), and Python faiss reads our vectors back exactly', async function () {
    const ours = path.join(dir, 'ours.index');
    const raw = path.join(dir, 'vectors.f32');
    const theirs = path.join(dir, 'python.index');
    const readBack = path.join(dir, 'read-back.f32');
    await writeIndex(ours, vectors);
    await writeFile(raw, floatBytes(vectors));
    const report = runPython(
      `ours, raw, theirs, back, d = sys.argv[1:6]
x = np.fromfile(raw, dtype='<f4').reshape(-1, int(d))
python_index = faiss.IndexFlatIP(int(d)); python_index.add(x); faiss.write_index(python_index, theirs)
read = faiss.read_index(ours)
read.reconstruct_n(0, read.ntotal).astype('<f4').tofile(back)
print(read.d, read.ntotal, read.metric_type, int(read.is_trained))`,
      ours, raw, theirs, readBack, String(DIMENSION),
    );
    assert.equal(report.trim(), `${DIMENSION} ${ROWS} 0 1`);
    assert.ok((await readFile(ours)).equals(await readFile(theirs)), 'byte-identical to faiss.write_index');
    assert.ok((await readFile(readBack)).equals(floatBytes(vectors)), 'reconstruct_n gives our vectors');
    assert.deepEqual(await readIxfiHeader(ours, { expectDimension: DIMENSION, expectRows: ROWS }), { dimension: DIMENSION, rows: ROWS });
  });

  it('accepts the header of an index_factory(d, "Flat", METRIC_INNER_PRODUCT) file and refuses an L2 Flat file', async function () {
    const factory = path.join(dir, 'factory.index');
    const l2 = path.join(dir, 'l2.index');
    runPython(
      `x = np.random.default_rng(0).standard_normal((5, 8)).astype('float32')
ip = faiss.index_factory(8, "Flat", faiss.METRIC_INNER_PRODUCT); ip.add(x); faiss.write_index(ip, sys.argv[1])
l2 = faiss.IndexFlatL2(8); l2.add(x); faiss.write_index(l2, sys.argv[2])`,
      factory, l2,
    );
    assert.deepEqual(await readIxfiHeader(factory), { dimension: 8, rows: 5 });
    await assert.rejects(readIxfiHeader(l2), isServiceError('bad_request', /is an IndexFlatL2 \(L2 metric\), not an inner-product IndexFlatIP/));
  });

  it('names each way a file can be wrong before FAISS reads it', async function () {
    const good = path.join(dir, 'good.index');
    await writeIndex(good, vectors);
    await assert.rejects(readIxfiHeader(good, { expectDimension: 768 }), isServiceError('bad_request', /dimension 16 does not match the encoder's dimension 768/));
    await assert.rejects(readIxfiHeader(good, { expectRows: 1000 }), isServiceError('bad_request', /50 rows but the corpus has 1000 rows/));

    const truncated = path.join(dir, 'truncated.index');
    await copyFile(good, truncated);
    await truncate(truncated, (await stat(good)).size - 10);
    await assert.rejects(readIxfiHeader(truncated), isServiceError('bad_request', /truncated: 3235 bytes, 50 rows × 16 need 3245/));

    const trailing = path.join(dir, 'trailing.index');
    await copyFile(good, trailing);
    await appendFile(trailing, Buffer.alloc(4));
    await assert.rejects(readIxfiHeader(trailing), isServiceError('bad_request', /4 unexpected bytes after 50 rows × 16/));

    const notIndex = path.join(dir, 'corpus.jsonl');
    await writeFile(notIndex, '{"id": "0", "contents": "not an index at all, just text"}\n');
    await assert.rejects(readIxfiHeader(notIndex), isServiceError('bad_request', /not a FAISS IndexFlatIP file \(starts with "\{\\"id", expected "IxFI"\)/));

    const tiny = path.join(dir, 'tiny.index');
    await writeFile(tiny, 'IxFI');
    await assert.rejects(readIxfiHeader(tiny), isServiceError('bad_request', /only 4 bytes/));

    await assert.rejects(readIxfiHeader(path.join(dir, 'missing.index')), isServiceError('not_found', /missing\.index: cannot open/));
  });

  it('keeps a stopped build in <out>.partial only, and resumes it (dropping a half-written row) to the same bytes as an uninterrupted build', async function () {
    const uninterrupted = path.join(dir, 'uninterrupted.index');
    const resumed = path.join(dir, 'resumed.index');
    await writeIndex(uninterrupted, vectors);

    const first = await IxfiWriter.open(resumed, { dimension: DIMENSION, rows: ROWS, description: { encoder: 'a' } });
    await first.append(vectors.subarray(0, 20 * DIMENSION));
    await first.close();
    // A kill in the middle of a write leaves part of a row behind.
    await appendFile(partialPaths(resumed).vectors, floatBytes(vectors.subarray(20 * DIMENSION, 20 * DIMENSION + 5)));
    await assert.rejects(stat(resumed), /ENOENT/);
    await assert.rejects(readIxfiHeader(resumed), isServiceError('not_found', /cannot open/));

    const second = await IxfiWriter.open(resumed, { dimension: DIMENSION, rows: ROWS, description: { encoder: 'a' } });
    assert.equal(second.resumedFrom, 20);
    assert.equal(second.rowsWritten, 20);
    await second.append(vectors.subarray(20 * DIMENSION));
    await second.finish();
    assert.ok((await readFile(resumed)).equals(await readFile(uninterrupted)));
    await assert.rejects(stat(partialPaths(resumed).vectors), /ENOENT/);
    await assert.rejects(stat(partialPaths(resumed).description), /ENOENT/);
  });

  it('refuses to resume a partial build of another encoder, and discards it on restart', async function () {
    const out = path.join(dir, 'out.index');
    const first = await IxfiWriter.open(out, { dimension: DIMENSION, rows: ROWS, description: { encoder: 'a' } });
    await first.append(vectors.subarray(0, 10 * DIMENSION));
    await first.close();
    await assert.rejects(
      IxfiWriter.open(out, { dimension: DIMENSION, rows: ROWS, description: { encoder: 'b' } }),
      isServiceError('conflict', /out\.index\.partial is a partial index build of a different encoder, corpus or shape/),
    );
    await assert.rejects(
      IxfiWriter.open(out, { dimension: DIMENSION, rows: ROWS + 1, description: { encoder: 'a' } }),
      isServiceError('conflict', /different encoder, corpus or shape/),
    );
    const restarted = await IxfiWriter.open(out, { dimension: DIMENSION, rows: ROWS, description: { encoder: 'b' }, restart: true });
    assert.equal(restarted.resumedFrom, 0);
    await restarted.append(vectors);
    await restarted.finish();
    assert.ok((await readFile(out)).subarray(45).equals(floatBytes(vectors)));
  });

  it('refuses to finish with rows missing and to append past the declared rows', async function () {
    const out = path.join(dir, 'out.index');
    const writer = await IxfiWriter.open(out, { dimension: DIMENSION, rows: 3, description: {} });
    await writer.append(vectors.subarray(0, 2 * DIMENSION));
    await assert.rejects(writer.finish(), isServiceError('internal', /2 of 3 rows written, cannot finish/));
    await assert.rejects(writer.append(vectors.subarray(0, 2 * DIMENSION)), isServiceError('internal', /would exceed the 3 rows/));
    await assert.rejects(writer.append(vectors.subarray(0, 5)), isServiceError('internal', /not whole rows of 16/));
    await writer.close();
    await assert.rejects(stat(out), /ENOENT/);
  });
});
