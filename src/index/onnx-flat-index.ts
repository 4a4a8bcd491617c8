import { Worker } from 'node:worker_threads';
import type { SearchPrecision } from './search-graph.js';
import { emitFallbackWarning } from '../onnx/execution-provider.js';
import type { SearchPlacement, SearchSessionInfo, VectorIndex, VectorSearchResult } from './vector-index.js';
import { ServiceError } from '../errors.js';
import { searchShape } from './faiss-index.js';
import { fp16SidecarPath } from './fp16-sidecar.js';
import { readIxfiHeader, type IxfiExpectations, type IxfiHeader } from './ixfi-header.js';
import { checkSearchMemory, readHostMemory, type EncoderWeights, type MemoryFiles, type SearchMemoryPlan } from './search-memory.js';
import { DEFAULT_SHARD_ROWS, type SearchDevice, type SearchRequest, type SearchWorkerData, type SearchWorkerMessage } from './onnx-search-protocol.js';
import { mergeRanked, type RankedRows } from './rescore.js';
import { threadChannel, WorkerRequests, workerReady } from '../threads/worker-requests.js';

export type { SearchDevice } from './onnx-search-protocol.js';

/** Queries per session run, so a 4,096-query request never needs 8 score matrices at once. */
const QUERY_CHUNK = 512;

export interface OnnxIndexOptions {
  /** One session per entry, each searching an equal slice of the rows (default: one on CPU). */
  devices?: readonly SearchDevice[];
  /** Default: fp16 when a device is CUDA, fp32 otherwise. fp16 reads `<index>.fp16`, built once. */
  precision?: SearchPrecision;
  shardRows?: number;
  /** fp16 candidates per query rescored in fp32 from the index file (0: none); at least topk are. */
  rescore?: number;
  /**
   * Most bytes one device may hold (its vectors and one query chunk's scores); 0: no limit. Set,
   * it also lets a CPU index larger than the host's available memory be mapped (search-memory.ts).
   */
  memoryBudgetBytes?: number;
  /** The serving encoder's weights, counted with the index against the budget where they share a device. */
  encoderWeights?: EncoderWeights;
  /** Where the host's memory is read (default: /proc and /sys/fs/cgroup). */
  memoryFiles?: MemoryFiles;
  /** Where the fp16 copy lives; default `<index>.fp16`. */
  fp16Path?: string;
  /** Fail instead of falling back to CPU when CUDA cannot load. */
  strict?: boolean;
  intraOpNumThreads?: number;
  /** Receives CUDA fallback and memory warnings; defaults to `process.emitWarning`. */
  warn?: (message: string) => void;
  /** Vectors converted to fp16 so far, while the sidecar is built. */
  onProgress?: (done: number, total: number) => void;
}

/** Equal slices, one per device; no device gets an empty one. */
function slices(rows: number, devices: number): Array<{ firstRow: number; rows: number }> {
  const used = Math.max(1, Math.min(devices, rows));
  return Array.from({ length: used }, (_, i) => {
    const firstRow = Math.floor((i * rows) / used);
    return { firstRow, rows: Math.floor(((i + 1) * rows) / used) - firstRow };
  });
}

/**
 * What the sessions will hold. On CPU each maps its slice of the file (or of the fp16 sidecar) and
 * fills one query chunk's scores per shard; on CUDA the vectors are copied to the device and the
 * host keeps nothing of them once the session is made.
 */
function memoryPlan(path: string, index: IxfiHeader, parts: ReadonlyArray<{ rows: number }>, devices: readonly SearchDevice[], precision: SearchPrecision, shardRows: number): SearchMemoryPlan {
  const elementBytes = precision === 'fp16' ? 2 : 4;
  const vectorBytes = (rows: number) => rows * index.dimension * elementBytes;
  const scoreBytes = (rows: number) => QUERY_CHUNK * Math.min(shardRows, rows) * elementBytes;
  const rows = Math.max(...parts.map((part) => part.rows));
  const onCpu = parts.filter((_, i) => devices[i]!.provider === 'cpu');
  const hostRows = onCpu.reduce((sum, part) => sum + part.rows, 0);
  return {
    indexPath: path,
    rowFormat: `${index.dimension} ${precision}`,
    holding: onCpu.length > 0 ? 'mapped by the onnx backend on CPU' : 'copied to each CUDA device by the onnx backend',
    devices: [...new Set(devices.slice(0, parts.length).map((device) => (device.provider === 'cuda' ? `cuda:${device.deviceId}` : 'cpu')))],
    perDevice: { rows, vectorBytes: vectorBytes(rows), scoreBytes: scoreBytes(rows) },
    hostRows,
    hostMappedBytes: vectorBytes(hostRows),
    mappedReads: 'every one read by every query',
    hostAnonymousBytes: onCpu.reduce((sum, part) => sum + scoreBytes(part.rows), 0),
  };
}

/** The sessions an index of this header opens with: devices, precision, shard size, each device's rows, and what they will hold. */
function layout(path: string, header: IxfiHeader, options: OnnxIndexOptions) {
  // Only what the search workers need: a FAISS header's other fields would travel to each of them.
  const index: IxfiHeader = { dimension: header.dimension, rows: header.rows };
  const devices = options.devices ?? [{ provider: 'cpu' }];
  if (devices.length === 0) throw new ServiceError('bad_request', 'the ONNX search backend needs at least one device');
  const precision = options.precision ?? (devices.some((device) => device.provider === 'cuda') ? 'fp16' : 'fp32');
  const shardRows = options.shardRows ?? DEFAULT_SHARD_ROWS;
  if (!Number.isInteger(shardRows) || shardRows < 1) throw new ServiceError('bad_request', `shard rows must be a positive integer, got ${shardRows}`);
  const parts = slices(index.rows, devices.length);
  return { index, devices, precision, shardRows, parts, plan: memoryPlan(path, index, parts, devices, precision, shardRows) };
}

type SearchReply = Extract<SearchWorkerMessage, { kind: 'reply' }>;

/** The client side of one search worker thread (src/workers/onnx-search-worker.ts). */
class SearchWorker {
  private readonly requests: WorkerRequests<SearchRequest, SearchReply>;

  private constructor(
    worker: Worker,
    readonly info: SearchSessionInfo,
  ) {
    this.requests = new WorkerRequests(threadChannel(worker, 'search worker'));
  }

  static async start(data: SearchWorkerData, options: OnnxIndexOptions): Promise<SearchWorker> {
    const worker = new Worker(new URL('../workers/onnx-search-worker.js', import.meta.url), { workerData: data });
    worker.on('message', (message: SearchWorkerMessage) => {
      if (message.kind === 'warning') (options.warn ?? emitFallbackWarning)(message.message);
      if (message.kind === 'progress') options.onProgress?.(message.done, message.total);
    });
    const ready = await workerReady<Extract<SearchWorkerMessage, { kind: 'ready' }>>(worker, 'search worker');
    const { device, firstRow, rows } = data;
    const deviceId = ready.provider === 'cuda' && device.provider === 'cuda' ? { deviceId: device.deviceId } : {};
    return new SearchWorker(worker, { provider: ready.provider, ...deviceId, precision: ready.precision, firstRow, rows });
  }

  async nearest(vectors: Float32Array, k: number): Promise<RankedRows> {
    const { rowIndices, scores } = await this.requests.send({ op: 'search', vectors, k });
    return { rowIndices: rowIndices!, scores: scores! };
  }

  async close(): Promise<void> {
    await this.requests.shutDown({ op: 'close' }, new ServiceError('internal', 'the search session is closed'));
  }
}

/**
 * Exact flat inner-product search over an IxFI file on ONNX Runtime, the same contract as the
 * FAISS {@link FaissIndex} on a Flat file: row indices and float32 scores, best first, ties to the lower row. The
 * vectors are never copied into the process: each session maps its slice of the file (or of the
 * fp16 sidecar) as external initializers. Several devices each search a slice; results are merged.
 */
export class OnnxFlatIndex implements VectorIndex {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly dimension: number,
    readonly rows: number,
    private readonly workers: readonly SearchWorker[],
  ) {}

  /** The sessions, their devices after any fallback, and their rows. */
  get placement(): SearchPlacement {
    return { backend: 'onnx', sessions: this.workers.map((worker) => worker.info) };
  }

  /** What opening `path`, of this header, with these options would hold: nothing is loaded. */
  static plan(path: string, header: IxfiHeader, options: OnnxIndexOptions = {}): SearchMemoryPlan {
    return layout(path, header, options).plan;
  }

  static async open(path: string, expect: IxfiExpectations = {}, options: OnnxIndexOptions = {}): Promise<OnnxFlatIndex> {
    return OnnxFlatIndex.openChecked(path, await readIxfiHeader(path, expect), options);
  }

  /** Opens `path`, whose header the caller has read and checked (its dimension and rows are the encoder's and the corpus's). */
  static async openChecked(path: string, header: IxfiHeader, options: OnnxIndexOptions = {}): Promise<OnnxFlatIndex> {
    const { index, devices, precision, shardRows, parts, plan } = layout(path, header, options);
    checkSearchMemory(plan, options.memoryBudgetBytes ?? 0, await readHostMemory(options.memoryFiles), options.warn ?? emitFallbackWarning, options.encoderWeights);
    const data = (i: number): SearchWorkerData => ({
      indexPath: path,
      index,
      ...parts[i]!,
      shardRows,
      queryChunk: QUERY_CHUNK,
      device: devices[i]!,
      precision,
      rescore: options.rescore ?? 0,
      strict: options.strict ?? false,
      ...(precision === 'fp16' && { fp16Path: options.fp16Path ?? fp16SidecarPath(path) }),
      ...(options.intraOpNumThreads !== undefined && { intraOpNumThreads: options.intraOpNumThreads }),
    });
    if (index.rows === 0) return new OnnxFlatIndex(path, index.dimension, 0, []);
    const workers: SearchWorker[] = [];
    try {
      // The first worker builds a missing fp16 sidecar; the others then find it current.
      workers.push(await SearchWorker.start(data(0), options));
      const others = await Promise.allSettled(parts.slice(1).map((_, i) => SearchWorker.start(data(i + 1), options)));
      for (const started of others) if (started.status === 'fulfilled') workers.push(started.value);
      const failed = others.find((started) => started.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (error) {
      await Promise.allSettled(workers.map((worker) => worker.close()));
      throw error;
    }
    return new OnnxFlatIndex(path, index.dimension, index.rows, workers);
  }

  async nearest(vectors: Float32Array, topk: number): Promise<VectorSearchResult> {
    if (this.closed) throw new ServiceError('internal', `index ${this.path} is closed`);
    const { queries, k } = searchShape(this, vectors, topk);
    if (queries === 0 || k === 0) return { queries, topk: k, rowIndices: new Int32Array(0), scores: new Float32Array(0) };
    // Posting clones the whole underlying buffer, not just the view: send only the queries.
    const compact = vectors.byteLength === vectors.buffer.byteLength ? vectors : vectors.slice();
    const parts = await Promise.all(this.workers.map((worker) => worker.nearest(compact, k)));
    const found = parts.length === 1 ? parts[0]! : mergeRanked(parts, queries, k);
    return { queries, topk: k, ...found };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled(this.workers.map((worker) => worker.close()));
  }
}
