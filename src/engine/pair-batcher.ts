import { performance } from 'node:perf_hooks';
import type { CrossEncoder, TextPair } from '../encoder/cross-encoder.js';
import { MergingQueue } from './merging-queue.js';
import { estimateTokens } from './query-batcher.js';
import type { RerankObserver } from './types.js';

/** How concurrent rerank requests are merged into one scoring call, and how many pairs may wait. */
export interface PairBatching {
  /** Most pairs merged into one call; a larger request runs alone, whole. */
  maxBatchPairs: number;
  /** Most estimated tokens (characters / 4) merged into one call. */
  maxBatchTokens: number;
  /** Pairs allowed to wait; a request that would exceed it is refused with 'overloaded'. */
  maxQueuedPairs: number;
}

interface QueuedPairs {
  pairs: readonly TextPair[];
  /** Pairs to score: `pairs.length`. */
  size: number;
  tokens: number;
}

/**
 * Merges the pairs of concurrent requests into one call of the cross-encoder, as the query
 * batcher merges queries: 120 single-query clients' ten candidates each then run as full
 * length-sorted runs of `--reranker_batch_size` rows inside the worker, not as 120 runs of ten.
 * One call runs at a time; requests arriving meanwhile form the next one.
 */
export class PairBatcher {
  private readonly queue: MergingQueue<QueuedPairs, Float32Array>;

  constructor(
    private readonly encoder: Pick<CrossEncoder, 'score'>,
    options: PairBatching,
    private readonly observer?: RerankObserver,
  ) {
    this.queue = new MergingQueue(
      { maxRunSize: options.maxBatchPairs, maxRunTokens: options.maxBatchTokens, maxQueued: options.maxQueuedPairs, maxWaitMs: 0 },
      (batch) => this.runBatch(batch),
      undefined,
      { task: 'reranking', units: 'pairs' },
    );
  }

  /** One score per pair, in order; rejects with 503 `overloaded` when the queue is full, `timeout` when `signal` fires first. */
  score(pairs: readonly TextPair[], signal?: AbortSignal): Promise<Float32Array> {
    if (pairs.length === 0) return Promise.resolve(new Float32Array(0));
    const tokens = pairs.reduce((sum, [query, passage]) => sum + estimateTokens(query) + estimateTokens(passage), 0);
    return this.queue.enqueue({ pairs, size: pairs.length, tokens }, signal);
  }

  private async runBatch(batch: QueuedPairs[]): Promise<Float32Array[]> {
    const started = performance.now();
    const scores = await this.encoder.score(batch.flatMap((entry) => entry.pairs));
    this.observer?.rerankBatch({ requests: batch.length, pairs: scores.length, seconds: (performance.now() - started) / 1000 });
    let offset = 0;
    return batch.map((entry) => {
      offset += entry.size;
      return scores.slice(offset - entry.size, offset);
    });
  }
}
