import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { access, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import type { RetrieverInfo } from '../../src/engine/types.js';
import { writeSparseIndex } from '../support/index-fixtures.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { CLI_PATH } from '../support/sample-data.js';
import { serveOnce, type ServeRun } from '../support/serve-child.js';

const WARN = 40;

/** `serve` of the tiny model's files on CPU with search flags. */
function serve(files: RetrieverFiles, dataDir: string, flags: string[]): Promise<ServeRun> {
  return serveOnce([
    ...['--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath],
    ...['--data_dir', dataDir, '--device', 'cpu', ...flags],
  ]);
}

describe('serve: search backend flags reach the index (child process, tiny model)', function () {
  let files: RetrieverFiles;
  let dataDir: string;

  before(async function () {
    const shared = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
    dataDir = await mkdtemp(path.join(tmpdir(), 'serve-search-'));
    // Copies: the GPU run writes an fp16 sidecar beside the index, and the fixture's files are shared.
    files = { ...shared, indexPath: path.join(dataDir, 'tiny.index'), corpusPath: path.join(dataDir, 'corpus.jsonl') };
    await copyFile(shared.indexPath, files.indexPath);
    await copyFile(shared.corpusPath, files.corpusPath);
  });

  after(async function () {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('default: the onnx backend, one exact fp32 session on CPU over every row', async function () {
    const run = await serve(files, dataDir, []);
    assert.deepEqual(run.info?.search, { backend: 'onnx', sessions: [{ provider: 'cpu', precision: 'fp32', firstRow: 0, rows: 1000 }] });
  });

  it('--search_backend faiss: faiss-node', async function () {
    const run = await serve(files, dataDir, ['--search_backend', 'faiss']);
    assert.equal(run.info?.search?.backend, 'faiss');
  });

  it('--faiss_gpu where CUDA cannot load (no GPU here): warns, then searches exact fp32 on CPU, in two sessions for --search_devices 0,1', async function () {
    const run = await serve(files, dataDir, ['--faiss_gpu', '--search_devices', '0,1', '--search_shard_rows', '300']);
    const warnings = run.log.filter((line) => /searching on CPU instead/.test(line.msg));
    assert.deepEqual(warnings.map((line) => /\(device (\d)\)/.exec(line.msg)?.[1]).sort(), ['0', '1']);
    assert.deepEqual(run.info?.search, {
      backend: 'onnx',
      sessions: [
        { provider: 'cpu', precision: 'fp32', firstRow: 0, rows: 500 },
        { provider: 'cpu', precision: 'fp32', firstRow: 500, rows: 500 },
      ],
    });
    // CUDA is probed before the fp16 copy is made: no 32 GB conversion for a fallback that reads fp32.
    await assert.rejects(access(`${files.indexPath}.fp16`), { code: 'ENOENT' });
  });

  it('--search_rescore with fp32 search changes nothing: one warning at start-up; --search_memory_budget bounds the faiss backend too', async function () {
    const ignored = (run: ServeRun) => run.log.filter((line) => / is ignored/.test(line.msg)).map((line) => [line.level, line.msg]);
    const onCpu = await serve(files, dataDir, ['--search_rescore', '16']);
    assert.deepEqual(ignored(onCpu), [
      [WARN, '--search_rescore 16 is ignored: this search runs in fp32, already exact; it rescores fp16 candidates (--search_dtype fp16, or auto on the GPU)'],
    ]);
    assert.deepEqual(onCpu.info?.search?.sessions.map((session) => session.precision), ['fp32']);
    const faiss = await serve(files, dataDir, ['--search_backend', 'faiss', '--search_memory_budget', '1kb']);
    assert.equal(faiss.info, undefined);
    assert.equal(faiss.code, 1);
    assert.deepEqual(ignored(faiss), []);
    const refusal = faiss.log.find((line) => line.msg.startsWith('the retriever failed to load: '))?.msg ?? '';
    assert.match(refusal, /does not fit the search memory budget of 1 KB per device: 1000 rows × \d+ fp32/);
  });

  it('an index larger than --search_memory_budget (sparse, 400k rows): serve refuses at load with the sizes and the ways out, exit 1, no crash', async function () {
    // Index row i is corpus line i: a corpus of 400k one-word rows, and a sparse index of as many.
    const rows = 400_000;
    const big = { ...files, indexPath: path.join(dataDir, 'big.index'), corpusPath: path.join(dataDir, 'big.jsonl') };
    await writeFile(big.corpusPath, Array.from({ length: rows }, (_, i) => `{"id": "${i}", "contents": "row ${i}"}\n`).join(''));
    await writeSparseIndex(big.indexPath, { dimension: 32, rows });
    const run = await serve(big, dataDir, ['--search_memory_budget', '16mb']);
    assert.equal(run.info, undefined);
    assert.equal(run.code, 1);
    const fatal = run.log.find((line) => line.msg.startsWith('the retriever failed to load: '));
    assert.match(
      fatal?.msg ?? '',
      /does not fit the search memory budget of 16 MB per device: 400000 rows × 32 fp32 take 48.8 MB plus 781.3 MB of scores \(mapped by the onnx backend on CPU\), beside [\d.]+ [KM]B of encoder weights on cpu; ways out: a compressed index \(convert-index --faiss_type SQ8/,
    );
    assert.doesNotMatch(run.log.map((line) => line.msg).join('\n'), /bad_alloc/);
    // A CPU-only host: more devices would not help, so the refusal does not suggest them.
    assert.doesNotMatch(fatal?.msg ?? '', /more devices/);
  });

  describe('an HNSW index (built from the Flat one by convert-index)', function () {
    let hnsw: RetrieverFiles;

    before(function () {
      hnsw = { ...files, indexPath: path.join(dataDir, 'tiny_HNSW16.index') };
      execFileSync(process.execPath, [CLI_PATH, 'convert-index', '--index', files.indexPath, '--out', hnsw.indexPath, '--faiss_type', 'HNSW16'], { stdio: 'ignore' });
    });

    it('auto serves it on faiss, with kind, metric and --hnsw_ef_search in /info, /ready and the ready log; --faiss_gpu warns once', async function () {
      const run = await serve(hnsw, dataDir, ['--hnsw_ef_search', '48', '--faiss_gpu']);
      const index = { kind: 'IndexHNSWFlat', metric: 'inner_product', rows: 1000, efSearch: 48 };
      const shown = (search: RetrieverInfo['search']) => search && { kind: search.index?.kind, metric: search.index?.metric, rows: search.index?.rows, efSearch: search.index?.parameters.efSearch };
      assert.deepEqual(shown(run.info?.search), index);
      assert.deepEqual(shown(run.ready?.search), index);
      const readyLine = run.log.find((line) => line.msg === 'ready') as unknown as { search: RetrieverInfo['search'] };
      assert.deepEqual(shown(readyLine.search), index);
      assert.equal(run.log.filter((line) => /IndexHNSWFlat: it is searched on CPU/.test(line.msg)).length, 1);
    });

    it('--search_backend onnx: refuses to start, naming the kind', async function () {
      const run = await serve(hnsw, dataDir, ['--search_backend', 'onnx']);
      assert.equal(run.code, 1);
      const fatal = run.log.find((line) => line.msg.startsWith('the retriever failed to load: '));
      assert.match(fatal?.msg ?? '', /is an IndexHNSWFlat \(inner_product\): --search_backend onnx searches inner-product Flat indexes only/);
    });
  });
});
