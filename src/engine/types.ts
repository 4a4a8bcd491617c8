import type { CorpusRow } from '../corpus/corpus-row.js';
import type { QueryInput } from '../encoder/embedding-encoder.js';
import type { RetrieverManifest } from '../encoder/manifest.js';
import type { SwapPlan } from '../index/search-memory.js';
import type { SearchPlacement } from '../index/vector-index.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';

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
  /** One list per input, in input order, each best first and of length min(topk, index rows), shorter where an approximate index (IVF) found fewer. */
  hits: SearchHit[][];
  /** The retriever version that served this call (sent to clients as a header). */
  version: string;
  timings: RetrievalTimings;
}

/** Which corpus rows to fetch: by their `id` field, or by row number (FlashRAG's passage ids). */
export type DocumentKeys = { by: 'id'; ids: readonly string[] } | { by: 'row'; rows: readonly number[] };

/** How many rows `keys` asks for: what a lookup counts against the queue, as a retrieval counts its queries. */
export function keyCount(keys: DocumentKeys): number {
  return keys.by === 'id' ? keys.ids.length : keys.rows.length;
}

export interface DocumentsResult {
  /** One per key, in the order asked; undefined where the corpus has no such id or row. */
  documents: (CorpusRow | undefined)[];
  /** The version whose corpus answered (every version serves the same corpus). */
  version: string;
}

/** What the HTTP layer talks to: the active retriever, whichever version that is now. */
export interface RetrievalService {
  /** Throws ServiceError('not_ready') before a retriever is loaded. */
  retrieve(inputs: readonly QueryInput[], topk: number, options?: RetrieveOptions): Promise<RetrievalResult>;
  /** Corpus rows by id or row number; throws ServiceError('not_ready') before a retriever is loaded. */
  documents(keys: DocumentKeys, options?: RetrieveOptions): Promise<DocumentsResult>;
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
  /** The step within the stage, in words with its sizes, e.g. how much of the corpus is scanned. */
  step?: string;
  progress?: number;
  error?: string;
  /** Once serving: the search backend and, on faiss, the index kind, metric and search parameters. */
  search?: SearchPlacement;
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
  /** How this version took over from the one before it: swap mode, why, and the memory plan. */
  swap?: SwapPlan;
  /** Set while this version is being replaced: requests wait for the next one. */
  replacing?: boolean;
  corpusPath: string;
  corpusRows: number;
}

/** Per-call options of {@link RetrievalService.retrieve}. */
export interface RetrieveOptions {
  /**
   * The caller's deadline: aborting it drops a call still queued with ServiceError('timeout'). A call
   * whose batch already runs completes; the caller stops waiting on the same signal.
   */
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
  /** A version took over from another, beside it or in its place (see `SwapPlan`). */
  swapped(mode: 'side-by-side' | 'replace'): void;
  /** A replacement ended (the new version serving, or the old one loaded again): no version searched for `seconds`. */
  paused(seconds: number): void;
}

/** Queue and cache state now, for gauges. */
export interface ThroughputState {
  queuedQueries: number;
  queuedRequests: number;
  cacheEntries: number;
  cacheBytes: number;
}

/** One scoring call of the reranker: the pairs of the requests merged into it. */
export interface RerankBatchStats {
  requests: number;
  pairs: number;
  seconds: number;
}

/** Receives the reranker's batches, for metrics. */
export interface RerankObserver {
  rerankBatch(stats: RerankBatchStats): void;
}
