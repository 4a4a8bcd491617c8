import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { access, copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import type { Readiness, RetrieverInfo } from '../../src/engine/types.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { CLI_PATH } from '../support/sample-data.js';


interface Run {
  /** `/info`'s retriever once ready; undefined when serve exited first. */
  info?: RetrieverInfo;
  /** `/ready`'s body once ready. */
  ready?: Readiness;
  log: Array<{ level: number; msg: string }>;
  code: number | null;
}

/** `serve` in a child process with search flags: its /info when it gets ready (then SIGTERM), or its exit. */
async function serve(files: RetrieverFiles, dataDir: string, flags: string[]): Promise<Run> {
  const child = spawn(process.execPath, [
    CLI_PATH,
    'serve',
    ...['--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath],
    ...['--data_dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--device', 'cpu', ...flags],
  ]);
  child.stderr.resume();
  const log: Run['log'] = [];
  let port: number | undefined;
  const closed = once(child, 'close');
  const ready = await new Promise<boolean>((resolve) => {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as Run['log'][number] & { port?: number };
      log.push(line);
      if (line.port !== undefined) port = line.port;
      if (line.msg === 'ready') resolve(true);
    });
    void closed.then(() => resolve(false));
  });
  let answers: Pick<Run, 'info' | 'ready'> = {};
  if (ready) {
    answers = {
      info: ((await (await fetch(`http://127.0.0.1:${port}/info`)).json()) as { retriever: RetrieverInfo }).retriever,
      ready: (await (await fetch(`http://127.0.0.1:${port}/ready`)).json()) as Readiness,
    };
    child.kill('SIGTERM');
  }
  const [code] = await closed;
  return { ...answers, log, code: code as number | null };
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

  it('--search_memory_budget too small for the index: serve refuses to start and says why', async function () {
    const run = await serve(files, dataDir, ['--search_memory_budget', '64kb']);
    assert.equal(run.info, undefined);
    assert.equal(run.code, 1);
    const fatal = run.log.find((line) => line.msg.startsWith('the retriever failed to load: '));
    assert.match(fatal?.msg ?? '', /does not fit the search memory budget of 64 KB per device: 1000 rows × \d+ fp32/);
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
