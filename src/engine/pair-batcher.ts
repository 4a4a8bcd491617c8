import { performance } from 'node:perf_hooks';
import type { CrossEncoder, TextPair } from '../encoder/cross-encoder.js';
import { deadlineError, estimateTokens, overloadedError } from './query-batcher.js';
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
  tokens: number;
  resolve: (scores: Float32Array) => void;
  reject: (error: unknown) => void;
  detach: () => void;
}

/**
 * Merges the pairs of concurrent requests into one call of the cross-encoder, as the query
 * batcher merges queries: 120 single-query clients' ten candidates each then run as full
 * length-sorted runs of `--reranker_batch_size` rows inside the worker, not as 120 runs of ten.
 * One call runs at a time; requests arriving meanwhile form the next one.
 */
export class PairBatcher {
  private readonly queue: QueuedPairs[] = [];
  private queuedPairs = 0;
  private running = false;

  constructor(
    private readonly encoder: Pick<CrossEncoder, 'score'>,
    private readonly options: PairBatching,
    private readonly observer?: RerankObserver,
  ) {}

  /** One score per pair, in order; rejects with 503 `overloaded` when the queue is full, `timeout` when `signal` fires first. */
  score(pairs: readonly TextPair[], signal?: AbortSignal): Promise<Float32Array> {
    if (pairs.length === 0) return Promise.resolve(new Float32Array(0));
    if (signal?.aborted) return Promise.reject(deadlineError(pairs.length));
    if (this.queuedPairs > 0 && this.queuedPairs + pairs.length > this.options.maxQueuedPairs) {
      return Promise.reject(overloadedError(this.queuedPairs, this.options.maxQueuedPairs));
    }
    return new Promise<Float32Array>((resolve, reject) => {
      const tokens = pairs.reduce((sum, [query, passage]) => sum + estimateTokens(query) + estimateTokens(passage), 0);
      const entry: QueuedPairs = { pairs, tokens, resolve, reject, detach: () => undefined };
      if (signal) {
        const onAbort = () => {
          const at = this.queue.indexOf(entry);
          if (at < 0) return;
          this.queue.splice(at, 1);
          this.queuedPairs -= pairs.length;
          reject(deadlineError(pairs.length));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        entry.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.queue.push(entry);
      this.queuedPairs += pairs.length;
      if (!this.running) void this.runBatch();
    });
  }

  /** Whole requests, oldest first, while they fit; the first is always taken. */
  private take(): QueuedPairs[] {
    const taken: QueuedPairs[] = [];
    let pairs = 0;
    let tokens = 0;
    for (const next of this.queue) {
      const fits = pairs + next.pairs.length <= this.options.maxBatchPairs && tokens + next.tokens <= this.options.maxBatchTokens;
      if (taken.length > 0 && !fits) break;
      taken.push(next);
      pairs += next.pairs.length;
      tokens += next.tokens;
    }
    this.queue.splice(0, taken.length);
    this.queuedPairs -= pairs;
    return taken;
  }

  private async runBatch(): Promise<void> {
    this.running = true;
    const batch = this.take();
    for (const entry of batch) entry.detach();
    const started = performance.now();
    try {
      const scores = await this.encoder.score(batch.flatMap((entry) => entry.pairs));
      this.observer?.rerankBatch({ requests: batch.length, pairs: scores.length, seconds: (performance.now() - started) / 1000 });
      let offset = 0;
      for (const entry of batch) {
        entry.resolve(scores.slice(offset, offset + entry.pairs.length));
        offset += entry.pairs.length;
      }
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    } finally {
      this.running = false;
      if (this.queue.length > 0) void this.runBatch();
    }
  }
}
