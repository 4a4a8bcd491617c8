import type { ChildProcess } from 'node:child_process';
import type { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.js';
import { deserializeError, type SerializedError, type WorkerReply } from './replies.js';

export type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/** The other end of requests: a worker thread or a child process. */
export interface Channel {
  post(message: object): void;
  /** `onFailure` gets why the other end is gone (crashed, exited); every listener sees every message. */
  listen(onMessage: (message: unknown) => void, onFailure: (reason: string) => void): void;
  /** Ends the other end; resolves once it has. */
  end(): Promise<void>;
  /** Called as the first request of a run goes out, and as the last reply comes back. */
  busy?(): void;
  idle?(): void;
}

/**
 * `what` names the thread in failures ("encoder worker"). `exited` words its exit where the caller
 * knows more than the code: a worker that dies while loading, a one-shot thread that never answered.
 */
export function threadChannel(worker: Worker, what: string, exited = (code: number) => `${what} exited (code ${code})`): Channel {
  return {
    post: (message) => worker.postMessage(message),
    listen(onMessage, onFailure) {
      worker.on('message', onMessage);
      worker.on('error', (error) => onFailure(`${what} crashed: ${error.message}`));
      worker.on('exit', (code) => onFailure(exited(code)));
    },
    end: async () => {
      await worker.terminate();
    },
  };
}

/**
 * A child process with an IPC channel; `what` names it in failures ("faiss host process"). An idle
 * process must not keep the service's process alive; one with requests in flight must. Ending it
 * closes the channel, which the process answers by exiting.
 */
export function processChannel(child: ChildProcess, what: string): Channel {
  // A process that never started (fork failing with EAGAIN or ENOMEM) emits 'error' and no 'exit'.
  const exited = new Promise<void>((resolve) => {
    child.on('exit', () => resolve());
    child.on('error', () => {
      if (child.pid === undefined) resolve();
    });
  });
  const idle = (): void => {
    child.unref();
    child.channel?.unref();
  };
  idle();
  return {
    post: (message) => child.send(message),
    listen(onMessage, onFailure) {
      child.on('message', onMessage);
      child.on('exit', (code, signal) => onFailure(`${what} exited (${signal ?? `code ${code}`})`));
      child.on('error', (error) => onFailure(`${what} failed: ${error.message}`));
    },
    async end() {
      // Referenced, so that waiting for the exit keeps an otherwise idle process alive.
      child.ref();
      if (child.connected) child.disconnect();
      await exited;
    },
    busy() {
      child.ref();
      child.channel?.ref();
    },
    idle,
  };
}

function isReply(message: unknown): message is WorkerReply {
  return (message as { kind?: string }).kind === 'reply';
}

/**
 * Requests over a channel, matched to their replies by id; a failed reply rejects with the
 * worker's ServiceError. Once the other end crashes, exits or is closed, every pending and later
 * request fails with one ServiceError saying so.
 */
export class WorkerRequests<Request extends { id: number }, Reply extends WorkerReply> {
  private readonly pending = new Map<number, { resolve: (reply: Extract<Reply, { ok: true }>) => void; reject: (error: ServiceError) => void }>();
  private nextId = 1;
  private unavailable?: ServiceError;

  constructor(private readonly channel: Channel) {
    channel.listen(
      (message) => {
        if (isReply(message)) this.settle(message as Reply);
      },
      (reason) => this.fail(reason),
    );
  }

  send(request: WithoutId<Request>): Promise<Extract<Reply, { ok: true }>> {
    if (this.unavailable) return Promise.reject(this.unavailable);
    const id = this.nextId++;
    if (this.pending.size === 0) this.channel.busy?.();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.channel.post({ ...request, id });
    });
  }

  /**
   * Sends the close request (which lets work in flight finish), then ends the other end; every
   * later request fails with `closedError`. Closing twice does nothing.
   */
  async shutDown(closeRequest: WithoutId<Request>, closedError: ServiceError): Promise<void> {
    if (this.unavailable) return;
    try {
      await this.send(closeRequest);
    } finally {
      this.unavailable = closedError;
      await this.channel.end();
    }
  }

  /**
   * Fails pending and later requests with `reason` at once, without waiting for the work in
   * flight; the other end closes (`closeRequest`) once that work ends, and is ended then.
   * Terminating a worker thread mid-run instead lets ONNX Runtime's run complete into a torn-down
   * thread, which aborts the whole process.
   */
  abandon(reason: string, closeRequest: WithoutId<Request>): void {
    if (this.unavailable) return;
    this.fail(reason);
    const id = this.nextId++;
    const end = (): void => void this.channel.end().catch(() => undefined);
    // Pending after the failure above, so that the close's reply, whatever it says, still ends the other end.
    this.pending.set(id, { resolve: end, reject: end });
    this.channel.post({ ...closeRequest, id });
  }

  private settle(reply: Reply): void {
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.channel.idle?.();
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
  const channel = threadChannel(worker, what, (code) => `${what} exited (code ${code}) while loading`);
  try {
    return await new Promise<Ready>((resolve, reject) => {
      channel.listen(
        (message) => {
          const { kind, error } = message as { kind?: string; error?: SerializedError };
          if (kind === 'ready') resolve(message as Ready);
          if (kind === 'load-failed') reject(deserializeError(error!));
        },
        (reason) => reject(new ServiceError('internal', reason)),
      );
    });
  } catch (error) {
    await channel.end();
    throw error;
  }
}
