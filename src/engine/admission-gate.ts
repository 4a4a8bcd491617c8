import { deadlineError, overloadedError } from './merging-queue.js';
import type { ThroughputObserver } from './types.js';

interface Waiter {
  queries: number;
  resolve: () => void;
  reject: (error: unknown) => void;
  detach: () => void;
}

/**
 * Holds requests while no version may search (one version is replaced by another), with the
 * batcher's rules: at most `maxQueuedQueries` queries wait, more are refused with 503 and
 * Retry-After, and a request whose deadline passes or whose client leaves drops out (503).
 */
export class AdmissionGate {
  private readonly waiting = new Set<Waiter>();
  private queries = 0;

  constructor(
    private readonly maxQueuedQueries: number,
    private readonly observer?: ThroughputObserver,
  ) {}

  /** Resolves when the gate opens; rejects when it fails, the queue is full or `signal` fires. */
  wait(queries: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(deadlineError(queries));
    // As in the batcher: a request bigger than the whole queue is admitted when nothing waits.
    if (this.queries > 0 && this.queries + queries > this.maxQueuedQueries) {
      this.observer?.overloaded(queries);
      return Promise.reject(overloadedError(this.queries, this.maxQueuedQueries));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { queries, resolve, reject, detach: () => undefined };
      if (signal) {
        const onAbort = () => this.settle(waiter, () => reject(deadlineError(queries)));
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.waiting.add(waiter);
      this.queries += queries;
    });
  }

  get queued(): { queries: number; requests: number } {
    return { queries: this.queries, requests: this.waiting.size };
  }

  /** Lets every waiting request go on. */
  open(): void {
    for (const waiter of this.waiting) this.settle(waiter, waiter.resolve);
  }

  /** Refuses every waiting request with `error`. */
  fail(error: Error): void {
    for (const waiter of this.waiting) this.settle(waiter, () => waiter.reject(error));
  }

  private settle(waiter: Waiter, outcome: () => void): void {
    if (!this.waiting.delete(waiter)) return;
    this.queries -= waiter.queries;
    waiter.detach();
    outcome();
  }
}
