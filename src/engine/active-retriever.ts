import { performance } from 'node:perf_hooks';
import { ServiceError } from '../errors.js';
import type { SwapPlan } from '../index/search-memory.js';
import { AdmissionGate } from './admission-gate.js';
import { DEFAULT_BATCHING, QueryBatcher, type BatchingOptions } from './query-batcher.js';
import { ResultCache } from './result-cache.js';
import type { Retriever } from './retriever.js';
import type { QueryInput } from '../encoder/embedding-encoder.js';
import {
  keyCount,
  type BatchStats,
  type DocumentKeys,
  type DocumentsResult,
  type Readiness,
  type RetrievalResult,
  type RetrievalService,
  type RetrieverInfo,
  type RetrieveOptions,
  type ThroughputObserver,
  type ThroughputState,
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

/** A replacement in progress: the version being replaced, and the requests waiting for the next one. */
interface Replacing {
  previous: Retriever;
  gate: AdmissionGate;
}

/** How a replacement ended: the version serving afterwards and, when the new one failed to load, why. */
interface Replacement {
  retriever: Retriever;
  failure?: Error;
  /** From the pause until the replaced version's last request ended and it was closed. */
  releaseMs: number;
}

/**
 * The one reference serving swaps. A request keeps the version it started on until it ends; a
 * replaced version is closed (its encoder worker, index and corpus released) once its last
 * request has finished.
 */
export class ActiveRetriever implements RetrievalService {
  private serving?: Serving;
  private replacing?: Replacing;
  /** How the serving version took over, for `/info`. */
  private swap?: SwapPlan;
  private state: Readiness = { ready: false, stage: 'starting' };
  private readonly batching: BatchingOptions;
  private readonly cache?: ResultCache;
  private readonly observers = new Set<ThroughputObserver>();
  /** Fans events out to every subscribed metrics registry. */
  private readonly events: ThroughputObserver = {
    batch: (stats: BatchStats) => this.observers.forEach((observer) => observer.batch(stats)),
    cacheLookups: (hits, misses) => this.observers.forEach((observer) => observer.cacheLookups(hits, misses)),
    overloaded: (queries) => this.observers.forEach((observer) => observer.overloaded(queries)),
    swapped: (mode) => this.observers.forEach((observer) => observer.swapped(mode)),
    paused: (seconds) => this.observers.forEach((observer) => observer.paused(seconds)),
  };

  constructor(options: ServingOptions = {}) {
    // Merged batches pad queries to their batch-mates' lengths, which moves scores in the last
    // float bits; a bare ActiveRetriever keeps each request's results bit-identical to a direct search.
    this.batching = options.batching ? { ...DEFAULT_BATCHING, ...options.batching } : { ...DEFAULT_BATCHING, maxBatchQueries: 1 };
    if (options.resultCacheBytes) this.cache = new ResultCache(options.resultCacheBytes);
  }

  /** While a version is replaced, the one being replaced: its files and corpus still describe what serves. */
  get current(): Retriever | undefined {
    return this.serving?.retriever ?? this.replacing?.previous;
  }

  /** Loading progress for `/ready`; ignored once a version serves (a background load must not hide it). */
  loading(stage: string, progress?: number, step?: string): void {
    if (!this.serving) this.state = { ready: false, stage, ...(step !== undefined && { step }), ...(progress !== undefined && { progress }) };
  }

  failed(error: Error): void {
    if (!this.serving) this.state = { ready: false, stage: 'failed', error: error.message };
  }

  /**
   * Makes `retriever` serve new requests (side by side: it is loaded beside the serving one);
   * resolves when the version it replaced is released. `swap` is how it took over, for `/info`.
   */
  activate(retriever: Retriever, swap?: SwapPlan): Promise<void> {
    const previous = this.serving;
    // Results of the replaced version must never answer for the new one.
    this.cache?.clear();
    this.serving = { retriever, batcher: new QueryBatcher(retriever, this.batching, this.cache, this.events), inFlight: 0 };
    this.swap = swap;
    this.state = { ready: true, stage: 'serving', search: retriever.index.placement };
    // A replacement counts itself once it knows whether the new version or the old one serves.
    if (previous && swap?.mode === 'side-by-side') this.events.swapped('side-by-side');
    return previous ? this.retire(previous) : Promise.resolve();
  }

  /**
   * Replaces the serving version when two do not fit in memory: admits no new request to the
   * search stage (they wait, as in the batcher's queue, up to their deadline), lets those already
   * admitted finish on the old version, closes it, then `load`s the new one. When that fails,
   * `reload` brings the old version back. Either way the waiting requests then go on to the
   * version serving; none is ever answered by a version that is still loading.
   */
  async replace(load: () => Promise<Retriever>, reload: () => Promise<Retriever>, swap: SwapPlan): Promise<Replacement> {
    const serving = this.serving;
    if (!serving) throw new ServiceError('not_ready', `no version is serving to replace (stage: ${this.state.stage})`);
    const gate = new AdmissionGate(this.batching.maxQueuedQueries, this.events);
    this.replacing = { previous: serving.retriever, gate };
    this.serving = undefined;
    // Still ready: requests are taken, and answered once the new version serves.
    this.state = { ready: true, stage: 'replacing', step: `closing version ${serving.retriever.version} to load its replacement` };
    const started = performance.now();
    let failure: Error | undefined;
    try {
      await this.retire(serving);
      const releaseMs = performance.now() - started;
      let retriever: Retriever;
      try {
        retriever = await load();
      } catch (error) {
        failure = error as Error;
        retriever = await reload();
      }
      if (this.state.stage === 'closed') {
        await retriever.close();
        throw new ServiceError('not_ready', 'the server shut down while a version was replaced');
      }
      void this.activate(retriever, swap);
      gate.open();
      this.events.paused((performance.now() - started) / 1000);
      if (!failure) this.events.swapped('replace');
      return { retriever, releaseMs, ...(failure && { failure }) };
    } catch (error) {
      // close() has already turned the waiting requests away.
      if (this.state.stage === 'closed') throw error;
      // Neither version serves: waiting requests get 503 at once rather than at their deadline.
      const reason = `no version serves: ${failure ? `${failure.message}; reloading the replaced version failed too: ` : ''}${(error as Error).message}`;
      gate.fail(new ServiceError('not_ready', reason));
      this.state = { ready: false, stage: 'failed', error: reason };
      throw new ServiceError('internal', reason);
    } finally {
      this.replacing = undefined;
    }
  }

  retrieve(inputs: readonly QueryInput[], topk: number, options?: RetrieveOptions): Promise<RetrievalResult> {
    return this.onServing(inputs.length, options?.signal, (serving) => serving.batcher.submit(inputs, topk, options));
  }

  /** Read from the serving version's corpus, which every version shares (versions register against it). */
  documents(keys: DocumentKeys, options?: RetrieveOptions): Promise<DocumentsResult> {
    return this.onServing(keyCount(keys), options?.signal, async ({ retriever }) => ({ documents: await retriever.documents(keys), version: retriever.version }));
  }

  /**
   * Runs `work` on the version serving now, which is not closed until it ends; while a version is
   * replaced, `work` waits (counted as `queries` in the queue limit) for the one that serves next.
   */
  private async onServing<T>(queries: number, signal: AbortSignal | undefined, work: (serving: Serving) => Promise<T>): Promise<T> {
    if (!this.serving && this.replacing) await this.replacing.gate.wait(queries, signal);
    const serving = this.serving;
    if (!serving) throw new ServiceError('not_ready', `the retriever is not loaded yet (stage: ${this.state.stage})`);
    serving.inFlight++;
    try {
      return await work(serving);
    } finally {
      serving.inFlight--;
      if (serving.retirement && serving.inFlight === 0) serving.retirement.release();
    }
  }

  observeThroughput(observer: ThroughputObserver): void {
    this.observers.add(observer);
  }

  throughput(): ThroughputState {
    const queued = this.serving?.batcher.queued ?? this.replacing?.gate.queued ?? { queries: 0, requests: 0 };
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
    const info = this.current?.info();
    return info && { ...info, ...(this.swap && { swap: this.swap }), ...(this.replacing && { replacing: true }) };
  }

  /** Stops serving; resolves once every request on the last version has finished and it is closed. */
  async close(): Promise<void> {
    const serving = this.serving;
    this.serving = undefined;
    this.state = { ready: false, stage: 'closed' };
    this.replacing?.gate.fail(new ServiceError('not_ready', 'the server is shutting down'));
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
