import { performance } from 'node:perf_hooks';
import { composeQueryText, type QueryInput } from '../encoder/embedding-encoder.js';
import { MergingQueue } from './merging-queue.js';
import type { ResultCache } from './result-cache.js';
import type { Retriever } from './retriever.js';
import type {
  RetrievalResult,
  RetrievalTimings,
  SearchHit,
  RetrieveOptions,
  ThroughputObserver,
} from './types.js';

/** How requests are merged into batches and how many queries may wait. */
export interface BatchingOptions {
  /** Most queries merged into one batch; 1 turns cross-request merging off. A larger request runs alone, whole. */
  maxBatchQueries: number;
  /** Most estimated tokens (characters / 4) merged into one batch. */
  maxBatchTokens: number;
  /**
   * How long an idle batcher lingers for more requests before running what it has. 0 runs at
   * once: requests that arrive while a batch runs are merged into the next one anyway.
   */
  maxWaitMs: number;
  /** Queries allowed to wait; a request that would exceed it is refused with 'overloaded'. */
  maxQueuedQueries: number;
}

export const DEFAULT_BATCHING: BatchingOptions = {
  maxBatchQueries: 256,
  maxBatchTokens: 16_384,
  maxWaitMs: 0,
  maxQueuedQueries: 8192,
};

/**
 * Estimated WordPiece tokens of a query, plus [CLS] and [SEP]. The exact count is known only
 * inside the encoder worker; tokenizing on the main thread too would double the tokenizer cost
 * on the thread that serves HTTP. The estimate only sizes batches: the encoder still groups by
 * exact length under its own exact token budget.
 */
export function estimateTokens(queryText: string): number {
  return Math.ceil(queryText.length / 4) + 2;
}

interface QueuedRequest {
  inputs: readonly QueryInput[];
  /** Each input's final text: inputs with equal texts are one query, searched and cached once. */
  texts: string[];
  topk: number;
  /** Filled from the cache at arrival, the rest when the batch ends. */
  hits: (SearchHit[] | undefined)[];
  /** Positions still to search. */
  missing: number[];
  /** Queries to search: `missing.length`. */
  size: number;
  tokens: number;
  enqueuedAt: number;
}

const NO_TIME: RetrievalTimings = { encodeMs: 0, searchMs: 0, fetchMs: 0 };

/**
 * Merges concurrent requests on one retriever version into shared batches: one encode, one
 * FAISS search and one row fetch per batch, over the distinct final query texts, with results
 * scattered back to each request in its own order. One batch runs at a time; the encoder and the
 * faiss host each use every core while it does.
 */
export class QueryBatcher {
  private readonly queue: MergingQueue<QueuedRequest, RetrievalResult>;

  constructor(
    private readonly retriever: Pick<Retriever, 'version' | 'encoder' | 'encodeSearchFetch'>,
    options: BatchingOptions,
    private readonly cache?: ResultCache,
    private readonly observer?: ThroughputObserver,
  ) {
    this.queue = new MergingQueue(
      { maxRunSize: options.maxBatchQueries, maxRunTokens: options.maxBatchTokens, maxQueued: options.maxQueuedQueries, maxWaitMs: options.maxWaitMs },
      (batch) => this.runBatch(batch),
      (queries) => this.observer?.overloaded(queries),
    );
  }

  get queued(): { queries: number; requests: number } {
    const { size, requests } = this.queue.queued;
    return { queries: size, requests };
  }

  /** Answers from the cache what it can and queues the rest for a shared batch; settles when that batch ends. */
  submit(inputs: readonly QueryInput[], topk: number, options: RetrieveOptions = {}): Promise<RetrievalResult> {
    const { version, encoder } = this.retriever;
    const texts = inputs.map((input) => composeQueryText(input, encoder.manifest));
    const hits = texts.map((text) => this.cache?.get(version, text, topk));
    const missing = hits.flatMap((found, position) => (found ? [] : [position]));
    if (this.cache) this.observer?.cacheLookups(texts.length - missing.length, missing.length);
    // Nothing to search (all cached, or an empty request) is answered at once, never queued.
    if (missing.length === 0) return Promise.resolve({ hits: hits as SearchHit[][], version, timings: NO_TIME });
    const tokens = missing.reduce((sum, position) => sum + estimateTokens(texts[position]!), 0);
    return this.queue.enqueue({ inputs, texts, topk, hits, missing, size: missing.length, tokens, enqueuedAt: performance.now() }, options.signal);
  }

  private async runBatch(batch: QueuedRequest[]): Promise<RetrievalResult[]> {
    const started = performance.now();
    // One input per distinct final text, searched at the largest topk any request asks of it.
    const slots = new Map<string, number>();
    const inputs: QueryInput[] = [];
    let topk = 1;
    for (const request of batch) {
      topk = Math.max(topk, request.topk);
      for (const position of request.missing) {
        const text = request.texts[position]!;
        if (slots.has(text)) continue;
        slots.set(text, inputs.length);
        inputs.push(request.inputs[position]!);
      }
    }
    const result = await this.retriever.encodeSearchFetch(inputs, topk);
    this.observer?.batch({
      requests: batch.length,
      queries: batch.reduce((sum, request) => sum + request.size, 0),
      uniqueQueries: inputs.length,
      estimatedTokens: batch.reduce((sum, request) => sum + request.tokens, 0),
      waitMs: batch.map((request) => started - request.enqueuedAt),
    });
    return batch.map((request) => {
      for (const position of request.missing) {
        const text = request.texts[position]!;
        const found = result.hits[slots.get(text)!]!.slice(0, request.topk);
        request.hits[position] = found;
        this.cache?.set(result.version, text, request.topk, found);
      }
      return { hits: request.hits as SearchHit[][], version: result.version, timings: result.timings };
    });
  }
}
