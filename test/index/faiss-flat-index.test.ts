import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isServiceError } from '../support/assert-service-error.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { IxfiWriter } from '../../src/index/ixfi-writer.js';
import { bruteForceTopk, floatBytes, runPython, unitVectors } from '../support/index-fixtures.js';

const DIMENSION = 32;
const ROWS = 300;
const TOPK = 10;

function assertMatchesBruteForce(actual: { queries: number; topk: number; rowIndices: Int32Array; scores: Float32Array }, base: Float32Array, queries: Float32Array, topk: number): void {
  const expected = bruteForceTopk(base, queries, DIMENSION, topk);
  assert.equal(actual.queries, queries.length / DIMENSION);
  assert.equal(actual.topk, topk);
  assert.deepEqual([...actual.rowIndices], expected.rowIndices);
  assert.equal(actual.scores.length, expected.scores.length);
  actual.scores.forEach((score, i) => assert.ok(Math.abs(score - expected.scores[i]!) < 1e-5, `score ${i}: ${score} vs ${expected.scores[i]}`));
}

describe('FaissIndex (faiss-node in a host process per index)', function () {
  let dir: string;
  const base = unitVectors(ROWS, DIMENSION, 11);
  const queries = unitVectors(7, DIMENSION, 12);
  const opened: FaissIndex[] = [];

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'flat-index-'));
    const writer = await IxfiWriter.open(path.join(dir, 'ours.index'), { dimension: DIMENSION, rows: ROWS, description: {} });
    await writer.append(base);
    await writer.finish();
    await writeFile(path.join(dir, 'base.f32'), floatBytes(base));
    runPython(
      `raw, ip, factory, l2, d = sys.argv[1:6]
x = np.fromfile(raw, dtype='<f4').reshape(-1, int(d))
for name, index in ((ip, faiss.IndexFlatIP(int(d))), (factory, faiss.index_factory(int(d), "Flat", faiss.METRIC_INNER_PRODUCT)), (l2, faiss.IndexFlatL2(int(d)))):
    index.add(x)
    faiss.write_index(index, name)`,
      path.join(dir, 'base.f32'), path.join(dir, 'python-ip.index'), path.join(dir, 'python-factory.index'), path.join(dir, 'python-l2.index'), String(DIMENSION),
    );
  });

  afterEach(async function () {
    await Promise.all(opened.splice(0).map((index) => index.close()));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function open(name: string, expect: { expectDimension?: number; expectRows?: number } = {}): Promise<FaissIndex> {
    const index = await FaissIndex.open(path.join(dir, name), expect);
    opened.push(index);
    return index;
  }

  for (const name of ['ours.index', 'python-ip.index', 'python-factory.index']) {
    it(`${name}: loads and returns the brute-force inner-product ranking and scores, best first`, async function () {
      const index = await open(name, { expectDimension: DIMENSION, expectRows: ROWS });
      assert.equal(index.dimension, DIMENSION);
      assert.equal(index.rows, ROWS);
      assertMatchesBruteForce(await index.nearest(queries, TOPK), base, queries, TOPK);
    });
  }

  it('finds each stored vector as its own best hit with score 1 (unit vectors)', async function () {
    const index = await open('ours.index');
    const result = await index.nearest(base.subarray(40 * DIMENSION, 45 * DIMENSION), 1);
    assert.deepEqual([...result.rowIndices], [40, 41, 42, 43, 44]);
    result.scores.forEach((score) => assert.ok(Math.abs(score - 1) < 1e-5));
  });

  it('clamps topk above the row count to the row count', async function () {
    const small = path.join(dir, 'small.index');
    const writer = await IxfiWriter.open(small, { dimension: DIMENSION, rows: 4, description: {} });
    await writer.append(base.subarray(0, 4 * DIMENSION));
    await writer.finish();
    const index = await open('small.index');
    const result = await index.nearest(queries.subarray(0, 2 * DIMENSION), 10);
    assert.equal(result.topk, 4);
    assert.equal(result.rowIndices.length, 8);
    assertMatchesBruteForce(result, base.subarray(0, 4 * DIMENSION), queries.subarray(0, 2 * DIMENSION), 4);
  });

  it('answers an empty batch with empty results and rejects bad input', async function () {
    const index = await open('ours.index');
    const empty = await index.nearest(new Float32Array(0), 3);
    assert.deepEqual({ ...empty, rowIndices: [...empty.rowIndices], scores: [...empty.scores] }, { queries: 0, topk: 3, rowIndices: [], scores: [] });
    await assert.rejects(index.nearest(new Float32Array(DIMENSION + 1), 3), isServiceError('bad_request', /not whole vectors of dimension 32/));
    await assert.rejects(index.nearest(queries, 0), isServiceError('bad_request', /topk must be a positive integer/));
  });

  it('keeps two indexes loaded at once (hot swap) and closing one leaves the other searchable', async function () {
    const older = await open('ours.index');
    const newer = await open('python-ip.index');
    await older.close();
    await assert.rejects(older.nearest(queries, 3), isServiceError('internal', /is closed/));
    assertMatchesBruteForce(await newer.nearest(queries, 3), base, queries, 3);
  });

  it('keeps answering searches on a loaded index while another index loads (each index has its own host process)', async function () {
    const bigPath = path.join(dir, 'big.index');
    const bigRows = 100_000;
    const writer = await IxfiWriter.open(bigPath, { dimension: DIMENSION, rows: bigRows, description: {} });
    for (let done = 0; done < bigRows; done += ROWS) await writer.append(base.subarray(0, Math.min(ROWS, bigRows - done) * DIMENSION));
    await writer.finish();
    const active = await open('ours.index');
    let loaded = false;
    const loading = FaissIndex.open(bigPath).then((index) => {
      loaded = true;
      opened.push(index);
      return index;
    });
    let searchesWhileLoading = 0;
    while (!loaded) {
      assertMatchesBruteForce(await active.nearest(queries, 3), base, queries, 3);
      if (!loaded) searchesWhileLoading++;
    }
    assert.ok(searchesWhileLoading >= 3, `only ${searchesWhileLoading} searches finished while the other index loaded`);
    assert.equal((await loading).rows, bigRows);
  });

  it('lets a process with nothing else to do search, close and exit (an idle host never holds it open)', function () {
    const flatIndexModule = new URL('../../src/index/faiss-index.js', import.meta.url).href;
    const script = `import { FaissIndex } from ${JSON.stringify(flatIndexModule)};
const index = await FaissIndex.open(${JSON.stringify(path.join(dir, 'ours.index'))});
const { rowIndices } = await index.nearest(new Float32Array(${DIMENSION}).fill(1), 2);
await index.close();
console.log('closed', rowIndices.length);`;
    const output = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(output.trim(), 'closed 2');
  });

  it('serves an L2 file with the distances faiss returns, nearest (smallest) first, as the reference does', async function () {
    const index = await open('python-l2.index');
    const result = await index.nearest(queries, TOPK);
    const ip = bruteForceTopk(base, queries, DIMENSION, TOPK);
    // Unit vectors: squared L2 distance = 2 - 2·cosine, so the ranking is the inner-product one.
    assert.deepEqual([...result.rowIndices], ip.rowIndices);
    result.scores.forEach((distance, i) => assert.ok(Math.abs(distance - (2 - 2 * ip.scores[i]!)) < 1e-5, `distance ${distance} at ${i}`));
    assert.equal(index.info.metric, 'l2');
  });

  it('refuses dimension or row mismatches before loading', async function () {
    await assert.rejects(open('ours.index', { expectDimension: 768 }), isServiceError('bad_request', /dimension 32 does not match the encoder's dimension 768/));
    await assert.rejects(open('ours.index', { expectRows: 1000 }), isServiceError('bad_request', /300 rows but the corpus has 1000 rows/));
  });
});
