/**
 * Entry of an ONNX search worker thread: one ONNX Runtime session searching one slice of an
 * index's rows (see src/index/search-graph.ts). `session.run` computes synchronously, so it runs
 * here and blocks only this thread.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import type { SearchPrecision } from '../index/search-graph.js';
import { tryCuda } from '../onnx/execution-provider.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import { ensureFp16Sidecar, FP16_DATA_OFFSET } from '../index/fp16-sidecar.js';
import { IXFI_HEADER_BYTES } from '../index/ixfi-header.js';
import type { SearchRequest, SearchWorkerData, SearchWorkerMessage } from '../index/onnx-search-protocol.js';
import { buildProbeOnnx, buildSearchOnnx, SEARCH_INPUTS, SEARCH_OUTPUTS, type VectorSlice } from '../index/search-graph.js';
import { rescoreExactly } from '../index/rescore.js';
import { failedReply, serializeError } from '../threads/replies.js';

const port = parentPort!;
const data = workerData as SearchWorkerData;

function post(message: SearchWorkerMessage, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** The graph over this worker's rows, reading fp32 from the IxFI file or fp16 from its sidecar. */
function sliceOf(precision: SearchPrecision): { file: string; slice: VectorSlice } {
  const file = precision === 'fp16' ? data.fp16Path! : data.indexPath;
  const [headerBytes, elementBytes] = precision === 'fp16' ? [FP16_DATA_OFFSET, 2] : [IXFI_HEADER_BYTES, 4];
  return {
    file,
    slice: {
      location: path.basename(file),
      offset: headerBytes + data.firstRow * data.index.dimension * elementBytes,
      firstRow: data.firstRow,
      rows: data.rows,
      dimension: data.index.dimension,
      precision,
      shardRows: data.shardRows,
    },
  };
}

/**
 * External data locations must be relative to a folder: the model comes as bytes with that
 * folder named. Prepacking would copy every shard into a packed heap buffer; without it the
 * weights stay the file's mapped pages. The memory pattern planner reserves one anonymous block
 * the size of all initializers (never touched: the shards are mapped) before the file is opened;
 * an index larger than RAM then fails that reservation with `std::bad_alloc` under the kernel's
 * default overcommit heuristic (README, "Memory and start-up at wiki18 scale"), so it is off.
 */
function createSession(precision: SearchPrecision, executionProviders: InferenceSession.ExecutionProviderConfig[]): Promise<InferenceSession> {
  const { file, slice } = sliceOf(precision);
  return InferenceSession.create(buildSearchOnnx(slice), {
    executionProviders,
    graphOptimizationLevel: 'all',
    enableMemPattern: false,
    ...(data.intraOpNumThreads !== undefined && { intraOpNumThreads: data.intraOpNumThreads }),
    extra: {
      session: {
        disable_prepacking: '1',
        model_external_initializers_file_folder_path: path.dirname(path.resolve(file)),
      },
    },
  });
}

async function openSession(): Promise<{ session: InferenceSession; provider: ExecutionProviderName; precision: SearchPrecision }> {
  const { device } = data;
  const prepare = async (): Promise<void> => {
    if (data.precision === 'fp16') {
      await ensureFp16Sidecar(data.indexPath, data.fp16Path!, data.index, (done, total) => post({ kind: 'progress', done, total }));
    }
  };
  if (device.provider === 'cuda') {
    const settings = { device: 'cuda' as const, deviceId: device.deviceId, strict: data.strict, warn: (message: string) => post({ kind: 'warning', message }) };
    const providers: InferenceSession.ExecutionProviderConfig[] = [{ name: 'cuda', deviceId: device.deviceId }, 'cpu'];
    const cuda = await tryCuda(settings, 'searching', async () => {
      // Probed first: a provider that cannot load must not cost a 32 GB fp16 conversion beforehand.
      await (await InferenceSession.create(buildProbeOnnx(), { executionProviders: providers })).release();
      await prepare();
      return createSession(data.precision, providers);
    });
    if (cuda) return { session: cuda, provider: 'cuda', precision: data.precision };
    // fp16 products on a CPU are slower than fp32 ones and inexact: the fallback searches the file as it is.
    return { session: await createSession('fp32', ['cpu']), provider: 'cpu', precision: 'fp32' };
  }
  await prepare();
  return { session: await createSession(data.precision, ['cpu']), provider: 'cpu', precision: data.precision };
}

/** Nearest `k` rows of each query, in chunks of `queryChunk` queries per run. */
async function search(session: InferenceSession, vectors: Float32Array, k: number): Promise<{ rowIndices: Int32Array; scores: Float32Array }> {
  const { dimension } = data.index;
  const queries = vectors.length / dimension;
  const rowIndices = new Int32Array(queries * k);
  const scores = new Float32Array(queries * k);
  const kTensor = new Tensor('int64', BigInt64Array.of(BigInt(k)), [1]);
  for (let first = 0; first < queries; first += data.queryChunk) {
    const count = Math.min(data.queryChunk, queries - first);
    const chunk = vectors.subarray(first * dimension, (first + count) * dimension);
    const outputs = await session.run({
      [SEARCH_INPUTS.queries]: new Tensor('float32', chunk, [count, dimension]),
      [SEARCH_INPUTS.k]: kTensor,
    });
    scores.set(outputs[SEARCH_OUTPUTS.scores]!.data as Float32Array, first * k);
    const rows = outputs[SEARCH_OUTPUTS.rows]!.data as BigInt64Array;
    for (let i = 0; i < rows.length; i++) rowIndices[first * k + i] = Number(rows[i]!);
  }
  return { rowIndices, scores };
}

try {
  const { session, provider, precision } = await openSession();
  // Exact rescoring reads candidates' fp32 rows from the index file.
  const rescore = precision === 'fp16' && data.rescore > 0 ? openSync(data.indexPath, 'r') : undefined;
  const readRow = (row: number, into: Float32Array): void => {
    readSync(rescore!, new Uint8Array(into.buffer), 0, into.byteLength, IXFI_HEADER_BYTES + row * into.byteLength);
  };
  let running = Promise.resolve();
  port.on('message', (request: SearchRequest) => {
    // One run at a time: a session's intra-op pool already takes every core it was given.
    running = running.then(async () => {
      try {
        if (request.op === 'close') {
          if (rescore !== undefined) closeSync(rescore);
          await session.release();
          post({ kind: 'reply', id: request.id, ok: true });
          return;
        }
        const k = Math.min(request.k, data.rows);
        const candidates = rescore === undefined ? k : Math.min(Math.max(k, data.rescore), data.rows);
        let found = await search(session, request.vectors, candidates);
        if (rescore !== undefined) found = rescoreExactly(request.vectors, data.index.dimension, found, candidates, k, readRow);
        post({ kind: 'reply', id: request.id, ok: true, ...found }, [found.rowIndices.buffer as ArrayBuffer, found.scores.buffer as ArrayBuffer]);
      } catch (error) {
        post(failedReply(request.id, error));
      }
    });
  });
  post({ kind: 'ready', provider, precision });
} catch (error) {
  post({ kind: 'load-failed', error: serializeError(error) });
}
