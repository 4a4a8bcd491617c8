import type { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.js';
import { deserializeError, type SerializedError, type WorkerReply } from './replies.js';

export type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/**
 * Requests to a worker thread, matched to their replies by id; a failed reply rejects with the
 * worker's ServiceError. Once the worker crashes, exits or is closed, every pending and later
 * request fails with one ServiceError saying so.
 */
export class WorkerRequests<Request extends { id: number }, Reply extends WorkerReply> {
  private readonly pending = new Map<number, { resolve: (reply: Extract<Reply, { ok: true }>) => void; reject: (error: ServiceError) => void }>();
  private nextId = 1;
  private unavailable?: ServiceError;

  /** `what` names the worker in failures ("encoder worker"). */
  constructor(
    private readonly worker: Worker,
    what: string,
  ) {
    worker.on('message', (message: { kind?: string }) => {
      if (message.kind === 'reply') this.settle(message as Reply);
    });
    worker.on('error', (error) => this.fail(`${what} crashed: ${error.message}`));
    worker.on('exit', (code) => this.fail(`${what} exited (code ${code})`));
  }

  send(request: WithoutId<Request>): Promise<Extract<Reply, { ok: true }>> {
    if (this.unavailable) return Promise.reject(this.unavailable);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id });
    });
  }

  /**
   * Sends the worker its close request (which lets work in flight finish), then ends it; every
   * later request fails with `closedError`. Closing twice does nothing.
   */
  async shutDown(closeRequest: WithoutId<Request>, closedError: ServiceError): Promise<void> {
    if (this.unavailable) return;
    try {
      await this.send(closeRequest);
    } finally {
      this.unavailable = closedError;
      await this.worker.terminate();
    }
  }

  /**
   * Fails pending and later requests with `reason` at once, without waiting for the work in
   * flight; the worker closes (`closeRequest`) once that work ends, and is terminated then.
   * Terminating it mid-run instead lets ONNX Runtime's run complete into a torn-down thread, which
   * aborts the whole process.
   */
  abandon(reason: string, closeRequest: WithoutId<Request>): void {
    if (this.unavailable) return;
    const id = this.nextId++;
    const onClosed = (message: { kind?: string; id?: number }) => {
      if (message.kind !== 'reply' || message.id !== id) return;
      this.worker.off('message', onClosed);
      this.worker.terminate().catch(() => undefined);
    };
    this.worker.on('message', onClosed);
    this.worker.postMessage({ ...closeRequest, id });
    this.fail(reason);
  }

  private settle(reply: Reply): void {
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (reply.ok) waiter.resolve(reply as Extract<Reply, { ok: true }>);
    else waiter.reject(deserializeError((reply as Extract<WorkerReply, { ok: false }>).error));
  }

  private fail(reason: string): void {
    this.unavailable ??= new ServiceError('internal', reason);
    for (const waiter of this.pending.values()) waiter.reject(this.unavailable);
    this.pending.clear();
  }
}

/**
 * Waits for a new worker's `ready` message. `load-failed`, a crash or an exit before it reject with
 * a ServiceError, and the worker is terminated then. `what` names the worker ("encoder worker").
 */
export async function workerReady<Ready extends { kind: 'ready' }>(worker: Worker, what: string): Promise<Ready> {
  try {
    return await new Promise<Ready>((resolve, reject) => {
      worker.on('message', (message: { kind?: string; error?: SerializedError }) => {
        if (message.kind === 'ready') resolve(message as Ready);
        if (message.kind === 'load-failed') reject(deserializeError(message.error!));
      });
      worker.once('error', (error) => reject(new ServiceError('internal', `${what} crashed: ${error.message}`)));
      worker.once('exit', (code) => reject(new ServiceError('internal', `${what} exited (code ${code}) while loading`)));
    });
  } catch (error) {
    await worker.terminate();
    throw error;
  }
}
