import { ServiceError } from '../errors.js';

/** What a queued request brings to a merged run: its units (queries, or pairs) and their estimated tokens. */
export interface Mergeable {
  size: number;
  tokens: number;
}

/** How requests are merged into runs and how many units may wait. */
export interface MergeLimits {
  /** Most units merged into one run; a larger request runs alone, whole. */
  maxRunSize: number;
  /** Most estimated tokens merged into one run. */
  maxRunTokens: number;
  /** Units allowed to wait; a request that would exceed it is refused with 'overloaded'. */
  maxQueued: number;
  /**
   * How long an idle queue lingers for more requests before running what it has. 0 runs at once:
   * requests that arrive while a run is under way are merged into the next one anyway.
   */
  maxWaitMs: number;
}

/** What a queue's units are, for its refusals: `retrieval` of `queries`, `reranking` of `pairs`. */
export interface QueuedWork {
  task: string;
  units: string;
}

const RETRIEVAL: QueuedWork = { task: 'retrieval', units: 'queries' };

interface Queued<Entry, Result> {
  entry: Entry;
  resolve: (result: Result) => void;
  reject: (error: unknown) => void;
  detach: () => void;
}

/**
 * Concurrent requests merged into shared runs, one run at a time: whole requests, oldest first,
 * while they fit the limits (the first always does). `run` answers each entry of a run, in order;
 * should it fail, every request of the run fails with its error. A request whose signal fires
 * while it waits leaves the queue with 503 `timeout`.
 */
export class MergingQueue<Entry extends Mergeable, Result> {
  private readonly queue: Queued<Entry, Result>[] = [];
  private queuedSize = 0;
  private running = false;
  private lingering?: NodeJS.Timeout;

  constructor(
    private readonly limits: MergeLimits,
    private readonly run: (entries: Entry[]) => Promise<Result[]>,
    private readonly onOverloaded?: (size: number) => void,
    private readonly work: QueuedWork = RETRIEVAL,
  ) {}

  get queued(): { size: number; requests: number } {
    return { size: this.queuedSize, requests: this.queue.length };
  }

  enqueue(entry: Entry, signal?: AbortSignal): Promise<Result> {
    if (signal?.aborted) return Promise.reject(deadlineError(entry.size, this.work));
    // A request bigger than the whole queue is still admitted when nothing waits, else it could never run.
    if (this.queuedSize > 0 && this.queuedSize + entry.size > this.limits.maxQueued) {
      this.onOverloaded?.(entry.size);
      return Promise.reject(overloadedError(this.queuedSize, this.limits.maxQueued, this.work));
    }
    return new Promise<Result>((resolve, reject) => {
      const queued: Queued<Entry, Result> = { entry, resolve, reject, detach: () => undefined };
      if (signal) {
        const onAbort = () => this.expire(queued);
        signal.addEventListener('abort', onAbort, { once: true });
        queued.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.queue.push(queued);
      this.queuedSize += entry.size;
      this.schedule();
    });
  }

  private expire(queued: Queued<Entry, Result>): void {
    const at = this.queue.indexOf(queued);
    if (at < 0) return;
    this.queue.splice(at, 1);
    this.queuedSize -= queued.entry.size;
    queued.reject(deadlineError(queued.entry.size, this.work));
  }

  private schedule(): void {
    if (this.running || this.queue.length === 0 || this.lingering) return;
    if (this.limits.maxWaitMs <= 0 || this.full()) {
      void this.runNext();
      return;
    }
    this.lingering = setTimeout(() => {
      this.lingering = undefined;
      this.schedule();
    }, this.limits.maxWaitMs);
  }

  private full(): boolean {
    const tokens = this.queue.reduce((sum, queued) => sum + queued.entry.tokens, 0);
    return this.queuedSize >= this.limits.maxRunSize || tokens >= this.limits.maxRunTokens;
  }

  private take(): Queued<Entry, Result>[] {
    const taken: Queued<Entry, Result>[] = [];
    let size = 0;
    let tokens = 0;
    while (this.queue.length > 0) {
      const { entry } = this.queue[0]!;
      const fits = size + entry.size <= this.limits.maxRunSize && tokens + entry.tokens <= this.limits.maxRunTokens;
      if (taken.length > 0 && !fits) break;
      const next = this.queue.shift()!;
      this.queuedSize -= entry.size;
      next.detach();
      taken.push(next);
      size += entry.size;
      tokens += entry.tokens;
    }
    return taken;
  }

  private async runNext(): Promise<void> {
    if (this.lingering) clearTimeout(this.lingering);
    this.lingering = undefined;
    this.running = true;
    const taken = this.take();
    try {
      const results = await this.run(taken.map((queued) => queued.entry));
      taken.forEach((queued, i) => queued.resolve(results[i]!));
    } catch (error) {
      for (const queued of taken) queued.reject(error);
    } finally {
      this.running = false;
      this.schedule();
    }
  }
}

/** A request the queue has no room for: 503 with Retry-After, which Search-R1's and verl's clients retry. */
export function overloadedError(queued: number, limit: number, { units }: QueuedWork = RETRIEVAL): ServiceError {
  return new ServiceError('overloaded', `${queued} ${units} are already waiting (limit ${limit}); retry shortly`, { retryAfterSeconds: 1 });
}

export function deadlineError(size: number, { task, units }: QueuedWork = RETRIEVAL): ServiceError {
  return new ServiceError('timeout', `${task} of ${size} ${units} left the queue: its deadline passed or its client went away`);
}
