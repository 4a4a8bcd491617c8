import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { FaissIndexInfo } from './faiss-index-kinds.js';

/** Nearest rows of `queries` vectors, flattened row-major as `queries × topk`, best first. */
export interface VectorSearchResult {
  queries: number;
  topk: number;
  rowIndices: Int32Array;
  scores: Float32Array;
}

/** One search session of an index: what it runs on (after any fallback) and which rows it holds. */
export interface SearchSessionInfo {
  provider: ExecutionProviderName;
  /** The CUDA device, when it runs on one. */
  deviceId?: number;
  precision: 'fp32' | 'fp16';
  firstRow: number;
  rows: number;
}

/** Where and how an index searches. */
export interface SearchPlacement {
  backend: 'faiss' | 'onnx';
  sessions: SearchSessionInfo[];
  /** The faiss backend's index: kind, metric and search parameters. */
  index?: FaissIndexInfo;
}

export interface VectorIndex {
  readonly dimension: number;
  readonly rows: number;
  readonly placement: SearchPlacement;
  /** `vectors` is row-major `n × dimension`; topk above `rows` is clamped to `rows`. */
  nearest(vectors: Float32Array, topk: number): Promise<VectorSearchResult>;
  close(): Promise<void>;
}
