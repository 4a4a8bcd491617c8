import { ServiceError } from '../errors.js';
import { DEFAULT_BATCHING, QueryBatcher, type BatchingOptions } from './query-batcher.js';
import { ResultCache } from './result-cache.js';
import type { Retriever } from './retriever.js';
import type { QueryInput } from '../encoder/embedding-encoder.js';
import type {
  BatchStats,
  Readiness,
  RetrievalResult,
  RetrievalService,
  RetrieverInfo,
  RetrieveOptions,
  ThroughputObserver,
  ThroughputState,
} from './types.js';

export interface ServingOptions {
  /** Absent: no merging across requests (each runs alone, in arrival order). */
  batching?: Partial<BatchingOptions>;
  /** Memory bound of the result cache in bytes; 0 (the default here) means no cache. */
  resultCacheBytes?: number;
}

/** A version being served, with the requests still running on it. */
interface Serving {
  retriever: Retriever;
  /** Merges this version's concurrent requests; requests queued on it stay on it. */
  batcher: QueryBatcher;
  inFlight: number;
  /** Set when the version is replaced: settles once it is closed. */
  retirement?: { released: Promise<void>; release: () => void };
}

/**
 * The one reference serving swaps. A request keeps the version it started on until it ends; a
 * replaced version is closed (its encoder worker, index and corpus released) once its last
 * request has finished.
 */
export class ActiveRetriever implements RetrievalService {
  private serving?: Serving;
  private state: Readiness = { ready: false, stage: 'starting' };
  private readonly batching: BatchingOptions;
  private readonly cache?: ResultCache;
  private readonly observers = new Set<ThroughputObserver>();
  /** Fans events out to every subscribed metrics registry. */
  private readonly events: ThroughputObserver = {
    batch: (stats: BatchStats) => this.observers.forEach((observer) => observer.batch(stats)),
    cacheLookups: (hits, misses) => this.observers.forEach((observer) => observer.cacheLookups(hits, misses)),
    overloaded: (queries) => this.observers.forEach((observer) => observer.overloaded(queries)),
  };

  constructor(options: ServingOptions = {}) {
    // Merged batches pad queries to their batch-mates' lengths, which moves scores in the last
    // float bits; a bare ActiveRetriever keeps each request's results bit-identical to a direct search.
    this.batching = options.batching ? { ...DEFAULT_BATCHING, ...options.batching } : { ...DEFAULT_BATCHING, maxBatchQueries: 1 };
    if (options.resultCacheBytes) this.cache = new ResultCache(options.resultCacheBytes);
  }

  get current(): Retriever | undefined {
    return this.serving?.retriever;
  }

  /** Loading progress for `/ready`; ignored once a version serves (a background load must not hide it). */
  loading(stage: string, progress?: number, step?: string): void {
    if (!this.serving) this.state = { ready: false, stage, ...(step !== undefined && { step }), ...(progress !== undefined && { progress }) };
  }

  failed(error: Error): void {
    if (!this.serving) this.state = { ready: false, stage: 'failed', error: error.message };
  }

  /** Makes `retriever` serve new requests; resolves when the version it replaced is released. */
  activate(retriever: Retriever): Promise<void> {
    const previous = this.serving;
    // Results of the replaced version must never answer for the new one.
    this.cache?.clear();
    this.serving = { retriever, batcher: new QueryBatcher(retriever, this.batching, this.cache, this.events), inFlight: 0 };
    this.state = { ready: true, stage: 'serving', search: retriever.index.placement };
    return previous ? this.retire(previous) : Promise.resolve();
  }

  async retrieve(inputs: readonly QueryInput[], topk: number, options?: RetrieveOptions): Promise<RetrievalResult> {
    const serving = this.serving;
    if (!serving) throw new ServiceError('not_ready', `the retriever is not loaded yet (stage: ${this.state.stage})`);
    serving.inFlight++;
    try {
      return await serving.batcher.submit(inputs, topk, options);
    } finally {
      serving.inFlight--;
      if (serving.retirement && serving.inFlight === 0) serving.retirement.release();
    }
  }

  observeThroughput(observer: ThroughputObserver): void {
    this.observers.add(observer);
  }

  throughput(): ThroughputState {
    const queued = this.serving?.batcher.queued ?? { queries: 0, requests: 0 };
    return {
      queuedQueries: queued.queries,
      queuedRequests: queued.requests,
      cacheEntries: this.cache?.size ?? 0,
      cacheBytes: this.cache?.bytes ?? 0,
    };
  }

  readiness(): Readiness {
    return this.state;
  }

  info(): RetrieverInfo | undefined {
    return this.serving?.retriever.info();
  }

  /** Stops serving; resolves once every request on the last version has finished and it is closed. */
  async close(): Promise<void> {
    const serving = this.serving;
    this.serving = undefined;
    this.state = { ready: false, stage: 'closed' };
    if (serving) await this.retire(serving);
  }

  private retire(serving: Serving): Promise<void> {
    if (!serving.retirement) {
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        let closing: Promise<void> | undefined;
        release = () => {
          closing ??= serving.retriever.close().then(resolve);
        };
      });
      serving.retirement = { released, release };
    }
    if (serving.inFlight === 0) serving.retirement.release();
    return serving.retirement.released;
  }
}
