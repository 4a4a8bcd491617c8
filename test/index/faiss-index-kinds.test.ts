import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { openVectorIndex } from '../../src/index/open-index.js';
import { childPids } from '../support/child-processes.js';
import { isServiceError } from '../support/assert-service-error.js';
import { fixtureHost } from '../support/host-memory.js';
import { CLUSTERED_PY, runPython } from '../support/index-fixtures.js';

const DIMENSION = 32;
const ROWS = 3000;
const QUERIES = 20;
const TOPK = 10;

/**
 * Python faiss writes one file per kind from the same clustered unit vectors (the shape of real
 * passage embeddings: HNSW and IVF recall means something there), then searches each with the
 * same queries at the file's own parameters and at the ones a test sets, and dumps what it found.
 * PQ without polysemous training (`np`): it takes seconds and changes nothing a search here sees.
 */
const FIXTURES = `${CLUSTERED_PY}
# Built on one thread (OpenMP's spinning threads are slow on a shared machine), searched on as
# many as a faiss host uses: IVF-SQ distances differ in the last bit between thread counts.
threads = faiss.omp_get_max_threads()
out, d, rows, nq, topk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(5)
x, q = clustered(rng, rows, d, nq)
q.tofile(f'{out}/queries.f32')
IP, L2 = faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2
kinds = {
  'hnsw': ('HNSW16', IP, {'efSearch': 64}), 'hnsw-sq': ('HNSW16,SQ8', IP, {'efSearch': 64}),
  'ivf-flat': ('IVF32,Flat', IP, {'nprobe': 8}), 'ivf-pq': ('IVF32,PQ8x4np', IP, {'nprobe': 8}),
  'ivf-sq': ('IVF32,SQ8', IP, {'nprobe': 8}), 'sq8': ('SQ8', IP, {}), 'sqfp16': ('SQfp16', IP, {}),
  'pq': ('PQ8x4np', IP, {}), 'idmap-flat': ('IDMap,Flat', IP, {}), 'idmap2-hnsw': ('IDMap2,HNSW16', IP, {'efSearch': 64}),
  'hnsw-l2': ('HNSW16', L2, {'efSearch': 64}),
}
import json
answers = {}
for name, (spec, metric, params) in kinds.items():
    faiss.omp_set_num_threads(1)
    index = faiss.index_factory(d, spec, metric)
    index.train(x)
    if 'IDMap' in spec: index.add_with_ids(x, np.arange(rows, dtype='int64'))
    else: index.add(x)
    faiss.write_index(index, f'{out}/{name}.index')
    faiss.omp_set_num_threads(threads)
    for label, setting in (('stored', {}), ('set', params)):
        loaded = faiss.read_index(f'{out}/{name}.index')
        for key, value in setting.items(): faiss.ParameterSpace().set_index_parameter(loaded, key, value)
        D, I = loaded.search(q, topk)
        answers[f'{name}/{label}'] = {'labels': I.ravel().tolist(), 'distances': D.ravel().tolist()}
untrained = faiss.index_factory(d, 'IVF32,Flat', IP)
faiss.write_index(untrained, f'{out}/untrained-ivf.index')
json.dump(answers, open(f'{out}/answers.json', 'w'))
`;

interface Answer {
  labels: number[];
  distances: number[];
}

/** fixture name → [kind in the header, the search parameters its `set` answers used] */
const KINDS: Record<string, [string, { efSearch?: number; nprobe?: number }]> = {
  hnsw: ['IndexHNSWFlat', { efSearch: 64 }],
  'hnsw-sq': ['IndexHNSWSQ', { efSearch: 64 }],
  'ivf-flat': ['IndexIVFFlat', { nprobe: 8 }],
  'ivf-pq': ['IndexIVFPQ', { nprobe: 8 }],
  'ivf-sq': ['IndexIVFScalarQuantizer', { nprobe: 8 }],
  sq8: ['IndexScalarQuantizer', {}],
  sqfp16: ['IndexScalarQuantizer', {}],
  pq: ['IndexPQ', {}],
  'idmap-flat': ['IndexIDMap(IndexFlatIP)', {}],
  'idmap2-hnsw': ['IndexIDMap2(IndexHNSWFlat)', { efSearch: 64 }],
  'hnsw-l2': ['IndexHNSWFlat', { efSearch: 64 }],
};

describe('FaissIndex: every index kind Python faiss writes, same answers as Python faiss', function () {
  let dir: string;
  let queries: Float32Array;
  let answers: Record<string, Answer>;
  const opened: FaissIndex[] = [];
  const file = (name: string): string => path.join(dir, `${name}.index`);

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'faiss-kinds-'));
    runPython(FIXTURES, dir, String(DIMENSION), String(ROWS), String(QUERIES), String(TOPK));
    const raw = await readFile(path.join(dir, 'queries.f32'));
    queries = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    answers = JSON.parse(await readFile(path.join(dir, 'answers.json'), 'utf8')) as Record<string, Answer>;
  });

  afterEach(async function () {
    await Promise.all(opened.splice(0).map((index) => index.close()));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function open(name: string, options: { efSearch?: number; nprobe?: number; warn?: (message: string) => void } = {}): Promise<FaissIndex> {
    const index = await FaissIndex.open(file(name), { expectDimension: DIMENSION, expectRows: ROWS }, options);
    opened.push(index);
    return index;
  }

  function assertSameAsPython(found: { rowIndices: Int32Array; scores: Float32Array }, expected: Answer): void {
    assert.deepEqual([...found.rowIndices], expected.labels);
    // The same library on the same bytes: the same float32 distances, bit for bit.
    assert.deepEqual([...found.scores], expected.distances.map((distance) => Math.fround(distance)));
  }

  for (const [name, [kind, parameters]] of Object.entries(KINDS)) {
    it(`${name}: reads the kind from the header and answers as Python faiss at the file's and at set parameters`, async function () {
      const stored = await open(name);
      assert.equal(stored.info.kind, kind);
      assert.equal(stored.info.metric, name.endsWith('-l2') ? 'l2' : 'inner_product');
      assertSameAsPython(await stored.nearest(queries, TOPK), answers[`${name}/stored`]!);
      if (Object.keys(parameters).length === 0) return;
      // The parameter changes the answer on this fixture, so applying it (or not) shows.
      assert.notDeepEqual(answers[`${name}/set`], answers[`${name}/stored`]);
      const set = await open(name, parameters);
      if (parameters.efSearch !== undefined) assert.equal(set.info.parameters.efSearch, parameters.efSearch);
      if (parameters.nprobe !== undefined) assert.equal(set.info.parameters.nprobe, parameters.nprobe);
      assertSameAsPython(await set.nearest(queries, TOPK), answers[`${name}/set`]!);
    });
  }

  it('shows the stored search parameters (efSearch 16, nprobe 1 as written) and maps IVF lists instead of reading them', async function () {
    const hnsw = await open('hnsw');
    assert.deepEqual(hnsw.info.parameters, { efSearch: 16, efConstruction: 40, M: 16, nprobe: undefined, nlist: undefined });
    const ivf = await open('ivf-flat');
    assert.equal(ivf.info.parameters.nprobe, 1);
    assert.equal(ivf.info.parameters.nlist, 32);
    assert.equal(ivf.info.listsMapped, true);
    // Mapped lists (3,000 × (128 B codes + 8 B ids)) are not counted as resident.
    assert.ok(ivf.info.residentBytes < 20_000, `resident ${ivf.info.residentBytes}`);
  });

  it('L2 HNSW: faiss distances as the reference returns them, smallest first', async function () {
    const index = await open('hnsw-l2');
    const { scores } = await index.nearest(queries, TOPK);
    for (let q = 0; q < QUERIES; q++) {
      const row = [...scores.subarray(q * TOPK, (q + 1) * TOPK)];
      assert.deepEqual(row, [...row].sort((a, b) => a - b));
    }
  });

  it('warns about a search flag that does not apply to the kind, and searches at the file\'s values', async function () {
    const warnings: string[] = [];
    const index = await open('sq8', { efSearch: 32, nprobe: 4, warn: (message) => warnings.push(message) });
    assert.deepEqual(warnings, [
      '--hnsw_ef_search 32 ignored: IndexScalarQuantizer is not an HNSW index',
      '--ivf_nprobe 4 ignored: IndexScalarQuantizer is not an IVF index',
    ]);
    assertSameAsPython(await index.nearest(queries, TOPK), answers['sq8/stored']!);
  });

  describe('bad input: a clear error before serving, and no faiss host left running', function () {
    let before: Set<string>;

    beforeEach(async function () {
      before = new Set(await childPids());
    });

    afterEach(async function () {
      assert.deepEqual((await childPids()).filter((pid) => !before.has(pid)), [], 'a faiss host outlived the failed load');
    });

    it('a truncated HNSW file', async function () {
      const truncated = file('hnsw-truncated');
      await writeFile(truncated, await readFile(file('hnsw')));
      await truncate(truncated, 50_000);
      await assert.rejects(open('hnsw-truncated'), isServiceError('bad_request', /hnsw-truncated\.index \(IndexHNSWFlat\) cannot be read by faiss: .*read error/));
    });

    it('a file that is not a FAISS index, and one whose header is corrupt', async function () {
      await writeFile(file('json'), JSON.stringify({ id: '0', contents: 'x'.repeat(200) }));
      await assert.rejects(open('json'), isServiceError('bad_request', /not a FAISS index this service reads \(starts with "\{\\"id"\)/));
      const corrupt = await readFile(file('ivf-flat'));
      corrupt.writeBigInt64LE(12345n, 16);
      await writeFile(file('corrupt'), corrupt);
      await assert.rejects(open('corrupt'), isServiceError('bad_request', /not a FAISS index this service reads \(starts with "IwFl"\)/));
    });

    it('an untrained IVF index', async function () {
      await assert.rejects(
        FaissIndex.open(file('untrained-ivf'), {}),
        isServiceError('bad_request', /the IndexIVFFlat is not trained/),
      );
    });

    it("a dimension other than the encoder's, and a row count other than the corpus's", async function () {
      await assert.rejects(FaissIndex.open(file('hnsw'), { expectDimension: 768 }), isServiceError('bad_request', /IndexHNSWFlat dimension 32 does not match the encoder's dimension 768/));
      await assert.rejects(
        FaissIndex.open(file('idmap2-hnsw'), { expectRows: 2999 }),
        isServiceError('bad_request', /IndexIDMap2\(IndexHNSWFlat\) holds 3000 vectors but the corpus has 2999 rows/),
      );
    });

    it('efSearch beyond the index and nprobe beyond its lists', async function () {
      await assert.rejects(open('hnsw', { efSearch: ROWS + 1 }), isServiceError('bad_request', /--hnsw_ef_search must be an integer from 1 to the index's 3000 vectors, got 3001/));
      await assert.rejects(open('ivf-pq', { nprobe: 33 }), isServiceError('bad_request', /--ivf_nprobe must be an integer from 1 to the index's 32 lists, got 33/));
    });

    it('an index over the search memory budget, with both sizes in the message', async function () {
      await assert.rejects(
        FaissIndex.open(file('hnsw'), {}, { memoryBudgetBytes: 100_000 }),
        isServiceError(
          'bad_request',
          /does not fit the search memory budget of 97\.7 KB per device: 3000 rows × 32 fp32 plus HNSW graph links take [\d.]+ KB plus 0 B of scores \(in an IndexHNSWFlat read into memory by the faiss backend\)/,
        ),
      );
    });

    it('past the host\'s memory: the refusal says what each kind holds a row as, and that IVF queries read only the lists they probe', async function () {
      const host = await fixtureHost(dir, 1024 ** 3, 4096);
      const refusal = async (name: string, nprobe?: number): Promise<string> => {
        const error = await FaissIndex.open(file(name), {}, { memoryFiles: host, ...(nprobe !== undefined && { nprobe }) }).then(
          () => assert.fail(`${name} opened`),
          (error: Error) => error.message,
        );
        return error.replace(/^index \S+ /, '');
      };
      assert.match(await refusal('hnsw'), /: 3000 rows × 32 fp32 plus HNSW graph links in an IndexHNSWFlat read into memory by the faiss backend and [\d.]+ KB of the process's own memory; ways out/);
      assert.match(await refusal('hnsw-sq'), /: 3000 rows × 32 dims as scalar-quantizer codes plus HNSW graph links in an IndexHNSWSQ read into memory/);
      assert.match(await refusal('sq8'), /: 3000 rows × 32 dims as scalar-quantizer codes in an IndexScalarQuantizer read into memory/);
      assert.match(await refusal('pq'), /: 3000 rows × 32 dims as PQ codes in an IndexPQ read into memory/);
      // Python wrote IVF32,PQ8x4: 8 sub-quantizers of 4 bits, 4 bytes a row; SQ8 a byte a dimension; Flat 4.
      assert.match(
        await refusal('ivf-pq', 8),
        /: 3000 rows × 32 dims as 4-byte PQ codes in 32 IVF lists in an IndexIVFPQ read into memory by the faiss backend, its IVF lists mapped \([\d.]+ KB of file pages, each query reading only the 8 of 32 lists it probes\) and [\d.]+ KB of the process's own memory/,
      );
      assert.match(await refusal('ivf-sq', 4), /: 3000 rows × 32 dims as 32-byte scalar-quantizer codes in 32 IVF lists .*each query reading only the 4 of 32 lists it probes/);
      assert.match(await refusal('ivf-flat'), /: 3000 rows × 32 fp32 in 32 IVF lists .*each query reading only the 1 of 32 lists it probes/);
      assert.doesNotMatch(await refusal('ivf-flat'), /every one read by every query/);
    });
  });

  describe('backend choice (openVectorIndex)', function () {
    it('auto searches a non-Flat index on faiss; --faiss_gpu warns once and searches on CPU', async function () {
      const warnings: string[] = [];
      const index = await openVectorIndex(file('hnsw'), {}, { gpu: true, warn: (message) => warnings.push(message) });
      try {
        assert.equal(index.placement.backend, 'faiss');
        assert.equal(index.placement.index?.kind, 'IndexHNSWFlat');
        assert.equal(warnings.length, 1);
        assert.match(warnings[0]!, /is an IndexHNSWFlat: it is searched on CPU \(faiss backend\)/);
      } finally {
        await index.close();
      }
    });

    it('--search_backend onnx with a non-Flat index is refused, naming the kind', async function () {
      await assert.rejects(
        openVectorIndex(file('ivf-pq'), {}, { backend: 'onnx' }),
        isServiceError('bad_request', /is an IndexIVFPQ \(inner_product\): --search_backend onnx searches inner-product Flat indexes only/),
      );
    });
  });
});
