import type { RetrieverManifest } from '../encoder/manifest.js';

/**
 * One query as a caller states it. Agentic-R retrievers are queried with
 * `"{question} [SEP] {query}"`: a caller may pass that string pre-joined as `query`, or pass the
 * original `question` beside the sub-query and let the manifest's template join them.
 */
export interface QueryInput {
  query: string;
  question?: string;
}

/** A corpus line as stored: at least `id` and `contents` (`"\"Title\"\ntext"`), other fields kept. */
export interface CorpusRow {
  id: string;
  contents: string;
  [field: string]: unknown;
}

export type ExecutionProviderName = 'cuda' | 'cpu';

/** Turns text into unit vectors with a model folder's manifest (prefixes, lengths, pooling). */
export interface EmbeddingEncoder {
  readonly manifest: RetrieverManifest;
  /** The provider that actually runs, after any fallback. */
  readonly provider: ExecutionProviderName;
  /** The ONNX file running, relative to the model folder (e.g. `model.int8.onnx`), where there is one. */
  readonly modelFile?: string;
  /** Row-major `inputs.length × dimension`. Adds the query prefix and composes Agentic-R input. */
  encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array>;
  /** Row-major `texts.length × dimension`. Adds the passage prefix; texts are corpus `contents`. */
  encodePassages(texts: readonly string[]): Promise<Float32Array>;
  close(): Promise<void>;
}

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
}

export interface VectorIndex {
  readonly dimension: number;
  readonly rows: number;
  readonly placement: SearchPlacement;
  /** `vectors` is row-major `n × dimension`; topk above `rows` is clamped to `rows`. */
  search(vectors: Float32Array, topk: number): Promise<VectorSearchResult>;
  close(): Promise<void>;
}

export interface SearchHit {
  rowIndex: number;
  /** Inner product of unit vectors (cosine), as FAISS returns it. */
  score: number;
  document: CorpusRow;
}

export interface RetrievalTimings {
  encodeMs: number;
  searchMs: number;
  fetchMs: number;
}

export interface RetrievalResult {
  /** One list per input, in input order, each best first and of length min(topk, index rows). */
  hits: SearchHit[][];
  /** The retriever version that served this call (sent to clients as a header). */
  version: string;
  timings: RetrievalTimings;
}

/** What the HTTP layer talks to: the active retriever, whichever version that is now. */
export interface RetrievalService {
  /** Throws ServiceError('not_ready') before a retriever is loaded. */
  search(inputs: readonly QueryInput[], topk: number, options?: SearchOptions): Promise<RetrievalResult>;
  readiness(): Readiness;
  info(): RetrieverInfo | undefined;
  /** Subscribes to batching, cache and overload events (services without a batcher have none). */
  observeThroughput?(observer: ThroughputObserver): void;
  throughput?(): ThroughputState;
}

export interface Readiness {
  ready: boolean;
  /** What is loading now and how far along, for `/ready`'s 503 body. */
  stage: string;
  progress?: number;
  error?: string;
}

export interface RetrieverInfo {
  version: string;
  modelName: string;
  modelDir: string;
  manifest: RetrieverManifest;
  dimension: number;
  provider: ExecutionProviderName;
  /** The encoder's ONNX file, relative to modelDir. */
  modelFile?: string;
  indexPath: string;
  indexRows: number;
  /** The search backend and its sessions' devices. */
  search?: SearchPlacement;
  corpusPath: string;
  corpusRows: number;
}

/** Per-call options of {@link RetrievalService.search}. */
export interface SearchOptions {
  /** Aborting it (deadline passed, client gone) drops the call from the queue with ServiceError('timeout'). */
  signal?: AbortSignal;
}

/** One batch the cross-request batcher ran: what was merged into a single encode + search + fetch. */
export interface BatchStats {
  requests: number;
  /** Queries of all merged requests, duplicates included. */
  queries: number;
  /** Distinct final query texts: what was encoded and searched. */
  uniqueQueries: number;
  /** Token estimate (characters / 4 per query) that the batch budget is counted in. */
  estimatedTokens: number;
  /** How long each merged request waited in the queue. */
  waitMs: readonly number[];
}

/** Receives throughput events of whichever version serves. */
export interface ThroughputObserver {
  batch(stats: BatchStats): void;
  cacheLookups(hits: number, misses: number): void;
  /** A request refused because the queue was full. */
  overloaded(queries: number): void;
}

/** Queue and cache state now, for gauges. */
export interface ThroughputState {
  queuedQueries: number;
  queuedRequests: number;
  cacheEntries: number;
  cacheBytes: number;
}
