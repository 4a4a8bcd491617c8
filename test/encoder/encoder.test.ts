import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { isServiceError } from '../support/assert-service-error.js';
import { composeQueryText, type EmbeddingEncoder, type QueryInput } from '../../src/encoder/embedding-encoder.js';
import { makeModel } from '../../src/encoder/make-model.js';
import type { RetrieverManifest } from '../../src/encoder/manifest.js';
import { OnnxEncoder } from '../../src/encoder/onnx-encoder.js';
import { cudaLoadFailure, cudaProviderInstalled } from '../../src/onnx/execution-provider.js';
import { WorkerEncoder } from '../../src/encoder/worker-encoder.js';
import { SAMPLE_CORPUS } from '../support/sample-data.js';


const QUESTION = 'who wrote hamlet';
const SUB_QUERY = 'shakespeare birth year';

/** Queries of very different token lengths, shuffled so that input order is not length order. */
const MIXED_QUERIES: QueryInput[] = [
  { query: 'the history of the roman empire from augustus to the fall of constantinople in 1453' },
  { query: 'paris' },
  { question: QUESTION, query: SUB_QUERY },
  { query: '' },
  { query: 'which river flows through the capital city of hungary and what is its length' },
  { query: 'évian-les-bains café 中文 😀' },
  { query: 'lobbyist genentech' },
  { question: 'when did the cathedral of pavia start construction', query: 'pavia cathedral 1488' },
];

function row(vectors: Float32Array, index: number, dimension: number): Float32Array {
  return vectors.subarray(index * dimension, (index + 1) * dimension);
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  return a.reduce((max, value, i) => Math.max(max, Math.abs(value - b[i]!)), 0);
}

async function encodeEachAlone(encoder: EmbeddingEncoder, inputs: readonly QueryInput[]): Promise<Float32Array[]> {
  const vectors: Float32Array[] = [];
  for (const input of inputs) vectors.push(await encoder.encodeQueries([input]));
  return vectors;
}

describe('query composition', () => {
  const manifest = { queryPrefix: 'query: ', queryTemplate: '{question} [SEP] {query}' } as RetrieverManifest;

  it('joins question and sub-query with the template, then adds the prefix', () => {
    assert.equal(composeQueryText({ question: QUESTION, query: SUB_QUERY }, manifest), `query: ${QUESTION} [SEP] ${SUB_QUERY}`);
  });

  it('takes a query without a question as sent, possibly already joined', () => {
    assert.equal(composeQueryText({ query: `${QUESTION} [SEP] ${SUB_QUERY}` }, manifest), `query: ${QUESTION} [SEP] ${SUB_QUERY}`);
  });

  it('does not expand template fields that appear inside the question or query', () => {
    assert.equal(composeQueryText({ question: 'a {query}', query: 'b {question}' }, manifest), 'query: a {query} [SEP] b {question}');
  });
});

describe('OnnxEncoder and WorkerEncoder on a tiny model (real ONNX Runtime, CPU)', () => {
  let workDir: string;
  let modelDir: string;
  let manifest: RetrieverManifest;
  let encoder: OnnxEncoder;
  let dimension: number;

  before(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'encoder-test-'));
    modelDir = path.join(workDir, 'tiny');
    manifest = await makeModel({ outDir: modelDir, preset: 'tiny', seed: 7, vocabularyCorpus: SAMPLE_CORPUS, vocabularyPassages: 1000 });
    dimension = manifest.dimension;
    encoder = await OnnxEncoder.load(modelDir);
  });
  after(async () => {
    await encoder?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it('returns one unit vector per query, on CPU', async () => {
    assert.equal(encoder.provider, 'cpu');
    const vectors = await encoder.encodeQueries(MIXED_QUERIES);
    assert.equal(vectors.length, MIXED_QUERIES.length * dimension);
    for (let i = 0; i < MIXED_QUERIES.length; i++) {
      const norm = Math.hypot(...row(vectors, i, dimension));
      assert.ok(Math.abs(norm - 1) < 1e-5, `row ${i} has norm ${norm}`);
    }
  });

  it('gives the same embedding for (question, query) as for the pre-joined "question [SEP] query"', async () => {
    const composed = await encoder.encodeQueries([{ question: QUESTION, query: SUB_QUERY }]);
    const joined = await encoder.encodeQueries([{ query: `${QUESTION} [SEP] ${SUB_QUERY}` }]);
    const withWordSep = await encoder.encodeQueries([{ query: `${QUESTION} sep ${SUB_QUERY}` }]);
    assert.deepEqual(composed, joined);
    assert.ok(maxAbsDifference(composed, withWordSep) > 1e-3, '[SEP] must not read as the word "sep"');
  });

  it('embeds a short query alone the same as inside a padded batch of longer queries (within 1e-5)', async () => {
    const short: QueryInput = { query: 'paris' };
    const alone = await encoder.encodeQueries([short]);
    const longer = MIXED_QUERIES.filter((input) => input.query.length > 40);
    const batch = await encoder.encodeQueries([...longer, short]);
    assert.ok(maxAbsDifference(alone, row(batch, longer.length, dimension)) < 1e-5);
  });

  it('returns rows in input order when length batching reorders and splits the work', async () => {
    const small = await OnnxEncoder.load(modelDir, { batchLimits: { maxBatchSize: 3, maxBatchTokens: 64 } });
    try {
      const batched = await small.encodeQueries(MIXED_QUERIES);
      const alone = await encodeEachAlone(encoder, MIXED_QUERIES);
      alone.forEach((vector, i) => assert.ok(maxAbsDifference(vector, row(batched, i, dimension)) < 1e-5, `row ${i}`));
    } finally {
      await small.close();
    }
  });

  it('gives the same rows with length batching off (batches in input order)', async () => {
    const inOrder = await OnnxEncoder.load(modelDir, { lengthBatching: false, batchLimits: { maxBatchSize: 2 } });
    try {
      const a = await inOrder.encodeQueries(MIXED_QUERIES);
      const b = await encoder.encodeQueries(MIXED_QUERIES);
      assert.ok(maxAbsDifference(a, b) < 1e-5);
    } finally {
      await inOrder.close();
    }
  });

  it('encodes no queries as an empty array, and empty and Unicode strings as finite vectors', async () => {
    assert.equal((await encoder.encodeQueries([])).length, 0);
    const vectors = await encoder.encodeQueries([{ query: '' }, { query: 'évian-les-bains café 中文 😀' }]);
    assert.equal(vectors.length, 2 * dimension);
    assert.ok(vectors.every(Number.isFinite));
    assert.ok(maxAbsDifference(row(vectors, 0, dimension), row(vectors, 1, dimension)) > 1e-3);
  });

  it('truncates text beyond the max length instead of failing, keeping the head', async () => {
    const head = 'the roman empire '.repeat(100);
    const [a, b] = [head + 'paris '.repeat(300), head + 'london '.repeat(300)];
    const vectors = await encoder.encodeQueries([{ query: a }, { query: b }]);
    assert.deepEqual(row(vectors, 0, dimension), row(vectors, 1, dimension));
  });

  it('encodes passages with the passage prefix, not the query prefix', async () => {
    const text = '"Pavia Cathedral"\nThe Cathedral of Pavia is a church in Pavia.';
    const passage = await encoder.encodePassages([text]);
    const asQuery = await encoder.encodeQueries([{ query: text }]);
    assert.equal(passage.length, dimension);
    assert.ok(Math.abs(Math.hypot(...passage) - 1) < 1e-5);
    assert.ok(maxAbsDifference(passage, asQuery) > 1e-3);
  });

  it("falls back to CPU with exactly one warning when asked for CUDA on this CPU-only machine (CUDA's real load failure)", async () => {
    const warnings: string[] = [];
    const fallback = await OnnxEncoder.load(modelDir, { device: 'cuda', warn: (message) => warnings.push(message) });
    try {
      assert.equal(fallback.provider, 'cpu');
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /CUDA execution provider unavailable \(device 0\), encoding on CPU instead/);
      assert.deepEqual(await fallback.encodeQueries(MIXED_QUERIES), await encoder.encodeQueries(MIXED_QUERIES));
    } finally {
      await fallback.close();
    }
  });

  it("CUDA not present here: the fallback warning names the provider libraries ORT could not load and the two ways to install them", async function () {
    if (cudaProviderInstalled()) this.skip();
    const warnings: string[] = [];
    const fallback = await OnnxEncoder.load(modelDir, { device: 'cuda', warn: (message) => warnings.push(message) });
    await fallback.close();
    const binaryDir = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    assert.deepEqual(warnings, [
      'CUDA execution provider unavailable (device 0), encoding on CPU instead: ' +
        // ORT's own words, which name no library:
        'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library: ' +
        `libonnxruntime_providers_shared.so and libonnxruntime_providers_cuda.so are not in ${binaryDir}/bin/napi-v6/${process.platform}/${process.arch} ` +
        '(onnxruntime-node ships CPU only); install the CUDA provider with ONNXRUNTIME_NODE_INSTALL=cuda12 bash scripts/install.sh, ' +
        'or on a host without NuGet access the GPU bundle (ONNXRUNTIME_NODE_INSTALL=bundle:<tarball>, scripts/install-gpu-bundle.sh); see README "GPU notes"',
    ]);
  });

  it('CUDA not present here: a provider library whose CUDA dependency the loader cannot find is named with that dependency (stand-in provider built by gcc)', async function () {
    const binaryDir = path.join(workDir, 'provider-without-cublas');
    await mkdir(binaryDir);
    const gcc = (...args: string[]) => execFileSync('gcc', ['-shared', '-fPIC', '-x', 'c', '/dev/null', ...args], { cwd: binaryDir });
    gcc('-o', 'libcublasLt.so.12', '-Wl,-soname,libcublasLt.so.12');
    gcc('-o', 'libonnxruntime_providers_cuda.so', '-L.', '-Wl,--no-as-needed', '-l:libcublasLt.so.12');
    gcc('-o', 'libonnxruntime_providers_shared.so');
    await rm(path.join(binaryDir, 'libcublasLt.so.12'));
    const reason = 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library';
    assert.equal(
      cudaLoadFailure(reason, binaryDir),
      `${reason}: libonnxruntime_providers_cuda.so needs libcublasLt.so.12, which the dynamic loader cannot find; ` +
        'put the CUDA and cuDNN 9 libraries it was built for on LD_LIBRARY_PATH (README "GPU notes")',
    );
  });

  it('takes CPU without trying CUDA or warning under device auto when the CUDA provider is not installed (as here)', async function () {
    if (cudaProviderInstalled()) this.skip();
    const warnings: string[] = [];
    const auto = await OnnxEncoder.load(modelDir, { device: 'auto', warn: (message) => warnings.push(message) });
    try {
      assert.equal(auto.provider, 'cpu');
      assert.deepEqual(warnings, []);
    } finally {
      await auto.close();
    }
  });

  it('fails with a clear ServiceError when CUDA is demanded (strict) on this CPU-only machine', async () => {
    const warnings: string[] = [];
    await assert.rejects(
      OnnxEncoder.load(modelDir, { device: 'cuda', strict: true, warn: (message) => warnings.push(message) }),
      isServiceError('internal', /CUDA was demanded \(strict\) but its provider cannot load/),
    );
    assert.deepEqual(warnings, []);
  });

  it('runs model.onnx by default and with precision int8 on a folder built without an int8 graph, warning once for the latter', async () => {
    assert.equal(encoder.modelFile, 'model.onnx');
    const warnings: string[] = [];
    const fallback = await OnnxEncoder.load(modelDir, { device: 'cpu', precision: 'int8', warn: (message) => warnings.push(message) });
    try {
      assert.equal(fallback.modelFile, 'model.onnx');
      assert.deepEqual(warnings, [
        'precision int8 was asked for, but model tiny has no int8 graph (build it with make-model --int8); encoding with model.onnx',
      ]);
      assert.deepEqual(await fallback.encodeQueries(MIXED_QUERIES), await encoder.encodeQueries(MIXED_QUERIES));
    } finally {
      await fallback.close();
    }
  });

  it('runs model.int8.onnx with precision int8 on CPU, and model.onnx without it, in a worker too', async () => {
    const int8Dir = path.join(workDir, 'tiny-int8');
    await makeModel({ outDir: int8Dir, preset: 'tiny', seed: 7, vocabularyCorpus: SAMPLE_CORPUS, vocabularyPassages: 1000, int8: 'auto' });
    const int8 = await WorkerEncoder.load(int8Dir, { device: 'cpu', precision: 'int8' });
    const fp32 = await WorkerEncoder.load(int8Dir, { device: 'cpu' });
    try {
      assert.equal(int8.modelFile, 'model.int8.onnx');
      assert.equal(fp32.modelFile, 'model.onnx');
      const reference = await encoder.encodeQueries(MIXED_QUERIES);
      assert.deepEqual(await fp32.encodeQueries(MIXED_QUERIES), reference);
      const quantized = await int8.encodeQueries(MIXED_QUERIES);
      assert.notDeepEqual(quantized, reference);
      assert.ok(maxAbsDifference(quantized, reference) < 0.02, `int8 vs fp32 ${maxAbsDifference(quantized, reference)}`);
    } finally {
      await Promise.all([int8.close(), fp32.close()]);
    }
  });

  it('names the missing manifest of a folder that is not a model', async () => {
    await assert.rejects(
      OnnxEncoder.load(workDir),
      isServiceError('not_found', /retriever\.json/),
    );
  });

  describe('WorkerEncoder', () => {
    let worker: WorkerEncoder;
    before(async () => {
      worker = await WorkerEncoder.load(modelDir);
    });
    after(async () => worker?.close());

    it('equals the in-process encoder on queries and passages', async () => {
      assert.equal(worker.provider, 'cpu');
      assert.deepEqual(worker.manifest, manifest);
      assert.ok(maxAbsDifference(await worker.encodeQueries(MIXED_QUERIES), await encoder.encodeQueries(MIXED_QUERIES)) < 1e-6);
      const passages = ['"Evan Morris"\nEvan Morris was a lobbyist.', ''];
      assert.ok(maxAbsDifference(await worker.encodePassages(passages), await encoder.encodePassages(passages)) < 1e-6);
    });

    it('answers concurrent requests each with its own rows', async () => {
      const [a, b] = await Promise.all([
        worker.encodeQueries(MIXED_QUERIES.slice(0, 4)),
        worker.encodeQueries(MIXED_QUERIES.slice(4)),
      ]);
      const all = await encoder.encodeQueries(MIXED_QUERIES);
      assert.ok(maxAbsDifference(a, all.subarray(0, 4 * dimension)) < 1e-6);
      assert.ok(maxAbsDifference(b, all.subarray(4 * dimension)) < 1e-6);
    });

    it('runs beside a second worker on the same model (as during a hot swap)', async () => {
      const second = await WorkerEncoder.load(modelDir);
      try {
        assert.deepEqual(await second.encodeQueries(MIXED_QUERIES), await worker.encodeQueries(MIXED_QUERIES));
      } finally {
        await second.close();
      }
    });

    it('propagates a load failure from the worker as the same ServiceError', async () => {
      await assert.rejects(
        WorkerEncoder.load(workDir),
        isServiceError('not_found', /retriever\.json/),
      );
    });

    it('forwards the one CUDA fallback warning to the caller (CPU-only machine)', async () => {
      const warnings: string[] = [];
      const fallback = await WorkerEncoder.load(modelDir, { device: 'cuda', warn: (message) => warnings.push(message) });
      try {
        assert.equal(fallback.provider, 'cpu');
        assert.equal(warnings.length, 1);
        assert.match(warnings[0]!, /CUDA execution provider unavailable/);
      } finally {
        await fallback.close();
      }
    });

    it('propagates strict CUDA failure from the worker (CPU-only machine)', async () => {
      await assert.rejects(
        WorkerEncoder.load(modelDir, { device: 'cuda', strict: true }),
        isServiceError('internal', /CUDA was demanded/),
      );
    });

    it('rejects requests after close with not_ready, and closes twice without error', async () => {
      const closing = await WorkerEncoder.load(modelDir);
      const inFlight = closing.encodeQueries(MIXED_QUERIES);
      await closing.close();
      assert.equal((await inFlight).length, MIXED_QUERIES.length * dimension);
      await assert.rejects(
        closing.encodeQueries([{ query: 'paris' }]),
        isServiceError('not_ready', /closed/),
      );
      await closing.close();
    });

    it('abandon fails the encode in flight at once instead of answering it, and later calls too', async () => {
      const stopped = await WorkerEncoder.load(modelDir);
      const inFlight = stopped.encodePassages(Array.from({ length: 64 }, (_, row) => `passage ${row} about the history of Pavia`));
      stopped.abandon();
      await assert.rejects(inFlight, isServiceError('internal', /the encoder was stopped/));
      await assert.rejects(stopped.encodeQueries([{ query: 'paris' }]), isServiceError('internal', /the encoder was stopped/));
      await stopped.close();
    });
  });
});
