import type { SearchPrecision } from './search-graph.js';
import type { FailedReply, SerializedError } from '../threads/replies.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { IxfiHeader } from './ixfi-header.js';

/** Rows per Gemm: 512 queries score one shard into a 1 GiB float32 matrix. */
export const DEFAULT_SHARD_ROWS = 524_288;

/** Where one search session runs: the CPU, or one CUDA device. */
export type SearchDevice = { provider: 'cpu' } | { provider: 'cuda'; deviceId: number };

/** `workerData` of an ONNX search worker: one session over rows `firstRow…firstRow+rows-1`. */
export interface SearchWorkerData {
  indexPath: string;
  index: IxfiHeader;
  firstRow: number;
  rows: number;
  shardRows: number;
  /** Most queries per session run: bounds the score matrix to `queryChunk × shardRows`. */
  queryChunk: number;
  device: SearchDevice;
  /** What the device is asked to compute in; a CPU fallback from CUDA always runs fp32. */
  precision: SearchPrecision;
  /** The fp16 copy of the vectors; needed when `precision` is fp16. */
  fp16Path?: string;
  /** fp16 candidates per query rescored exactly from the fp32 file; 0: none. */
  rescore: number;
  /** Fail instead of falling back to CPU when CUDA cannot load. */
  strict: boolean;
  intraOpNumThreads?: number;
}

export type SearchRequest =
  | { id: number; op: 'search'; vectors: Float32Array; k: number }
  | { id: number; op: 'close' };

export type SearchWorkerMessage =
  | { kind: 'ready'; provider: ExecutionProviderName; precision: SearchPrecision }
  | { kind: 'load-failed'; error: SerializedError }
  | { kind: 'warning'; message: string }
  | { kind: 'progress'; done: number; total: number }
  | { kind: 'reply'; id: number; ok: true; rowIndices?: Int32Array; scores?: Float32Array }
  | FailedReply;
