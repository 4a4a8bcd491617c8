import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { sampleRows } from '../../src/index/convert-index.js';
import { CLUSTERED_PY, runPython } from '../support/index-fixtures.js';
import { CLI_PATH } from '../support/sample-data.js';

const DIMENSION = 32;
const ROWS = 3000;
const QUERIES = 50;
const TOPK = 10;

/**
 * A FlashRAG-style Flat file (faiss.IndexFlatIP, written by Python) and, from the same vectors,
 * Python's own IVF and HNSW indexes with their answers and the exact ones.
 */
const FIXTURES = `${CLUSTERED_PY}
import json
out, d, rows, nq, topk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(9)
x, q = clustered(rng, rows, d, nq)
q.tofile(f'{out}/queries.f32')
flat = faiss.IndexFlatIP(d)
flat.add(x)
faiss.write_index(flat, f'{out}/flashrag_Flat.index')
answers = {'exact': flat.search(q, topk)[1].ravel().tolist()}
ivf = faiss.index_factory(d, 'IVF32,Flat', faiss.METRIC_INNER_PRODUCT)
ivf.train(x)
ivf.add(x)
ivf.nprobe = 4
D, I = ivf.search(q, topk)
answers['ivf'] = {'labels': I.ravel().tolist(), 'distances': D.ravel().tolist()}
# HNSW insertion is deterministic on one thread only.
faiss.omp_set_num_threads(1)
hnsw = faiss.index_factory(d, 'HNSW16', faiss.METRIC_INNER_PRODUCT)
hnsw.add(x)
answers['hnsw'] = hnsw.search(q, topk)[1].ravel().tolist()
big, _ = clustered(rng, 60000, d)
big_flat = faiss.IndexFlatIP(d)
big_flat.add(big)
faiss.write_index(big_flat, f'{out}/big_Flat.index')
json.dump(answers, open(f'{out}/answers.json', 'w'))
`;

/** Python faiss reading one of our files: its answers at these parameters. */
const PYTHON_SEARCH = `
path, queries, d, topk, params = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
index = faiss.read_index(path)
for pair in filter(None, params.split(',')):
    name, value = pair.split('=')
    faiss.ParameterSpace().set_index_parameter(index, name, int(value))
D, I = index.search(np.fromfile(queries, dtype='<f4').reshape(-1, d), topk)
print(' '.join(map(str, I.ravel().tolist())))
`;

function recall(found: ArrayLike<number>, exact: readonly number[]): number {
  let hits = 0;
  for (let q = 0; q < QUERIES; q++) {
    const truth = new Set(exact.slice(q * TOPK, (q + 1) * TOPK));
    for (let r = 0; r < TOPK; r++) if (truth.has(found[q * TOPK + r]!)) hits++;
  }
  return hits / (QUERIES * TOPK);
}

describe('convert-index: a Flat index into other FAISS types without re-encoding (CLI, real faiss)', function () {
  let dir: string;
  let queries: Float32Array;
  let answers: { exact: number[]; ivf: { labels: number[]; distances: number[] }; hnsw: number[] };

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'convert-index-'));
    runPython(FIXTURES, dir, String(DIMENSION), String(ROWS), String(QUERIES), String(TOPK));
    const raw = await readFile(path.join(dir, 'queries.f32'));
    queries = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    answers = JSON.parse(await readFile(path.join(dir, 'answers.json'), 'utf8')) as typeof answers;
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function convert(out: string, flags: string[], env: NodeJS.ProcessEnv = process.env): Promise<Record<string, unknown>> {
    const { stdout } = await promisify(execFile)(process.execPath, [CLI_PATH, 'convert-index', '--index', path.join(dir, 'flashrag_Flat.index'), '--out', path.join(dir, out), ...flags], { env });
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  async function search(file: string, options: { efSearch?: number; nprobe?: number } = {}) {
    const index = await FaissIndex.open(path.join(dir, file), { expectDimension: DIMENSION, expectRows: ROWS }, options);
    try {
      return { info: index.info, ...(await index.nearest(queries, TOPK)) };
    } finally {
      await index.close();
    }
  }

  it('IVF32,Flat trained on every row: the index Python builds, the same answers', async function () {
    const result = await convert('ivf.index', ['--faiss_type', 'IVF32,Flat', '--train-rows', String(ROWS)]);
    assert.equal(result.kind, 'IndexIVFFlat');
    assert.equal(result.trainRows, ROWS);
    const found = await search('ivf.index', { nprobe: 4 });
    assert.deepEqual([...found.rowIndices], answers.ivf.labels);
    assert.deepEqual([...found.scores], answers.ivf.distances.map((distance) => Math.fround(distance)));
  });

  it('HNSW16 built on one thread: the graph Python builds (same answers), recall as Python\'s, and Python reads our file with our answers', async function () {
    const result = await convert('hnsw.index', ['--faiss_type', 'HNSW16', '--ef_construction', '40'], { ...process.env, OMP_NUM_THREADS: '1' });
    assert.equal(result.kind, 'IndexHNSWFlat');
    const found = await search('hnsw.index', { efSearch: 16 });
    assert.deepEqual([...found.rowIndices], answers.hnsw);
    assert.ok(recall(found.rowIndices, answers.exact) > 0.9, 'HNSW finds most of the exact top 10 here');
    const read = runPython(PYTHON_SEARCH, path.join(dir, 'hnsw.index'), path.join(dir, 'queries.f32'), String(DIMENSION), String(TOPK), 'efSearch=16');
    assert.deepEqual(read.trim().split(' ').map(Number), [...found.rowIndices]);
  });

  it('an IVF-PQ with a seeded training sample: the same file from the same seed, and Python answers from it as we do', async function () {
    await convert('pq-a.index', ['--faiss_type', 'IVF16,PQ8x4np', '--train-rows', '1000', '--seed', '3']);
    await convert('pq-b.index', ['--faiss_type', 'IVF16,PQ8x4np', '--train-rows', '1000', '--seed', '3']);
    assert.ok((await readFile(path.join(dir, 'pq-a.index'))).equals(await readFile(path.join(dir, 'pq-b.index'))));
    const found = await search('pq-a.index', { nprobe: 4 });
    const read = runPython(PYTHON_SEARCH, path.join(dir, 'pq-a.index'), path.join(dir, 'queries.f32'), String(DIMENSION), String(TOPK), 'nprobe=4');
    assert.deepEqual(read.trim().split(' ').map(Number), [...found.rowIndices]);
  });

  it('samples distinct rows, the same for the same seed', function () {
    const sample = sampleRows(1000, 200, 7);
    assert.equal(new Set(sample).size, 200);
    assert.ok(sample.every((row, i) => row >= 0 && row < 1000 && (i === 0 || row > sample[i - 1]!)));
    assert.deepEqual(sampleRows(1000, 200, 7), sample);
    assert.notDeepEqual(sampleRows(1000, 200, 8), sample);
    assert.deepEqual(sampleRows(5, 5, 1), [0, 1, 2, 3, 4]);
  });

  it('Ctrl-C while adding: exits with an error and leaves no file under the output name, nor a staging file', async function () {
    const child = spawn(process.execPath, [
      CLI_PATH, 'convert-index', '--index', path.join(dir, 'big_Flat.index'), '--out', path.join(dir, 'stopped.index'),
      '--faiss_type', 'HNSW32', '--ef_construction', '200', '--batch-rows', '500',
    ]);
    const closed = once(child, 'close');
    const stderr: string[] = [];
    for await (const line of createInterface({ input: child.stderr })) {
      stderr.push(line);
      if (line.startsWith('adding vectors to HNSW32: 500/60000')) break;
    }
    child.kill('SIGINT');
    child.stderr.resume();
    const [code] = await closed;
    assert.equal(code, 1, stderr.join('\n'));
    assert.deepEqual((await readdir(dir)).filter((name) => name.startsWith('stopped')), []);
  });

  it('refuses a factory string faiss cannot parse, and efConstruction for a non-HNSW type', async function () {
    await assert.rejects(convert('bad.index', ['--faiss_type', 'HNSWx']), /--faiss_type "HNSWx": faiss cannot build it/);
    await assert.rejects(convert('bad.index', ['--faiss_type', 'IVF16,Flat', '--ef_construction', '80']), /efConstruction applies to HNSW indexes only/);
  });
});
