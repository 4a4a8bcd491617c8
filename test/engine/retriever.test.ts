import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { OnnxEncoder } from '../../src/encoder/onnx-encoder.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { IXFI_HEADER_BYTES } from '../../src/index/ixfi-header.js';
import { OnnxFlatIndex } from '../../src/index/onnx-flat-index.js';
import { showBytes } from '../../src/index/search-memory.js';
import { isServiceError } from '../support/assert-service-error.js';
import { bruteForceTopk } from '../support/index-fixtures.js';
import { buildRetrieverFiles, DEMO_CORPUS, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { CLI_PATH } from '../support/sample-data.js';

const QUERIES: QueryInput[] = [
  { query: 'who was the lobbyist for genentech' },
  { question: 'Where did Horatio Hale study?', query: 'united states exploring expedition ethnologist' },
  { query: 'pavia cathedral [SEP] construction date' },
];

async function indexVectors(indexPath: string): Promise<Float32Array> {
  const bytes = await readFile(indexPath);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset + IXFI_HEADER_BYTES, bytes.byteOffset + bytes.length));
}

describe('Retriever: one version of encoder + FAISS index + corpus (tiny model, 1k wiki18 sample)', function () {
  let files: RetrieverFiles;
  let retriever: Retriever;
  let lines: string[];

  before(async function () {
    files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
    retriever = await Retriever.load(files, { version: 'v-test' });
    lines = (await readFile(files.corpusPath, 'utf8')).trimEnd().split('\n');
  });

  after(async function () {
    await retriever?.close();
  });

  it('an IVF index probing lists that hold fewer than topk rows: shorter lists of real rows, best first, never a -1 row', async function () {
    const dir = await mkdtemp(path.join(tmpdir(), 'retriever-ivf-'));
    const ivf = path.join(dir, 'ivf.index');
    try {
      // 1,000 rows in 64 lists: one probed list holds about 16 rows, far fewer than topk 100.
      await promisify(execFile)(process.execPath, [CLI_PATH, 'convert-index', '--index', files.indexPath, '--out', ivf, '--faiss_type', 'IVF64,Flat', '--train-rows', '1000']);
      const approximate = await Retriever.load({ ...files, indexPath: ivf }, { version: 'v-ivf', index: { nprobe: 1 } });
      try {
        const { hits } = await approximate.encodeSearchFetch(QUERIES, 100);
        assert.equal(hits.length, QUERIES.length);
        for (const list of hits) {
          assert.ok(list.length > 0 && list.length < 100, `a list of ${list.length}`);
          assert.ok(list.every((hit) => hit.rowIndex >= 0 && hit.document.id === String(hit.rowIndex)));
          assert.deepEqual(list.map((hit) => hit.score), list.map((hit) => hit.score).sort((a, b) => b - a));
        }
      } finally {
        await approximate.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('returns what a brute-force inner product over the index vectors returns, with the corpus rows at those positions', async function () {
    const encoder = await OnnxEncoder.load(files.modelDir, { device: 'cpu' });
    const queryVectors = await encoder.encodeQueries(QUERIES);
    await encoder.close();
    const expected = bruteForceTopk(await indexVectors(files.indexPath), queryVectors, retriever.index.dimension, 5);

    const result = await retriever.encodeSearchFetch(QUERIES, 5);
    assert.equal(result.version, 'v-test');
    assert.equal(result.hits.length, QUERIES.length);
    result.hits.forEach((hits, query) => {
      assert.deepEqual(
        hits.map((hit) => hit.rowIndex),
        expected.rowIndices.slice(query * 5, query * 5 + 5),
      );
      hits.forEach((hit, rank) => {
        assert.ok(Math.abs(hit.score - expected.scores[query * 5 + rank]!) < 1e-5);
        assert.deepEqual(hit.document, JSON.parse(lines[hit.rowIndex]!));
        assert.equal(hit.document.id, String(hit.rowIndex));
        if (rank > 0) assert.ok(hit.score <= hits[rank - 1]!.score, 'best first');
      });
    });
    assert.ok(result.timings.encodeMs > 0 && result.timings.searchMs > 0 && result.timings.fetchMs >= 0);
  });

  it('searches on the ONNX backend by default, and the faiss backend returns the same hits', async function () {
    assert.ok(retriever.index instanceof OnnxFlatIndex);
    const faiss = await Retriever.load(files, { version: 'v-faiss', index: { backend: 'faiss' } });
    try {
      assert.ok(faiss.index instanceof FaissIndex);
      const [onnxHits, faissHits] = [(await retriever.encodeSearchFetch(QUERIES, 5)).hits, (await faiss.encodeSearchFetch(QUERIES, 5)).hits];
      assert.deepEqual(onnxHits.map((hits) => hits.map((hit) => hit.rowIndex)), faissHits.map((hits) => hits.map((hit) => hit.rowIndex)));
      onnxHits.flat().forEach((hit, i) => assert.ok(Math.abs(hit.score - faissHits.flat()[i]!.score) < 1e-5));
    } finally {
      await faiss.close();
    }
  });

  it('clamps topk to the index rows and answers an empty batch without encoding', async function () {
    const clamped = await retriever.encodeSearchFetch([{ query: 'hamlet' }], 5000);
    assert.equal(clamped.hits[0]!.length, 1000);
    assert.equal(new Set(clamped.hits[0]!.map((hit) => hit.rowIndex)).size, 1000);
    const empty = await retriever.encodeSearchFetch([], 3);
    assert.deepEqual(empty.hits, []);
    assert.deepEqual(empty.timings, { encodeMs: 0, searchMs: 0, fetchMs: 0 });
  });

  it('refuses an index whose row count is not the corpus row count', async function () {
    const shorter = files.corpusPath.replace(/\.jsonl$/, '-999.jsonl');
    await writeFile(shorter, lines.slice(0, 999).join('\n') + '\n');
    await assert.rejects(
      Retriever.load({ ...files, corpusPath: shorter }, { version: 'bad' }),
      isServiceError('bad_request', /1000 rows.*999|999.*1000/),
    );
  });

  it('refuses an index built by a model of another dimension', async function () {
    const demo = await buildRetrieverFiles({ preset: 'demo', seed: 0, corpus: DEMO_CORPUS });
    await assert.rejects(
      Retriever.load({ ...demo, modelDir: files.modelDir }, { version: 'bad' }),
      isServiceError('bad_request', /dimension/),
    );
  });

  it('reports which step of each stage runs and how far, corpus scan included, for /ready', async function () {
    const dir = await mkdtemp(path.join(tmpdir(), 'retriever-steps-'));
    const seen: Array<{ stage: string; progress?: number; step?: string }> = [];
    try {
      // A sidecar path of its own: the corpus is scanned for offsets, as at a first start.
      const loaded = await Retriever.load(
        { ...files, sidecarPath: path.join(dir, 'corpus.offsets') },
        { version: 'v-steps', onStage: (stage, progress, step) => seen.push({ stage, ...(progress !== undefined && { progress }), ...(step !== undefined && { step }) }) },
      );
      await loaded.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.deepEqual([...new Set(seen.map((state) => state.stage))], ['corpus', 'encoder', 'index', 'warm-up']);
    const size = (await stat(files.corpusPath)).size;
    const scanned = seen.filter((state) => state.step?.startsWith('building the row offsets'));
    assert.ok(scanned.length > 0);
    assert.deepEqual(scanned.at(-1), {
      stage: 'corpus',
      progress: 1,
      step: `building the row offsets: ${showBytes(size)} of ${showBytes(size)} of the corpus scanned`,
    });
    assert.deepEqual(seen.at(-1), { stage: 'warm-up', step: 'one search over all 1000 rows (reads every page of the index)' });
  });
});
