import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ServiceError } from '../errors.js';
import type { FaissReply, FaissRequest } from './faiss-protocol.js';

type Request = FaissRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Success = Extract<FaissReply, { ok: true }>;

const HOST_ENTRY = fileURLToPath(new URL('../workers/faiss-worker.js', import.meta.url));

/**
 * OpenBLAS reads its thread count once, at load. On two cores its pool on top of OpenMP's
 * oversubscribes (setup notes: 512 queries over 100k×768 took 0.8 s with one thread, 1.1 s
 * by default); on larger hosts the pool is what makes big query batches fast, so keep it.
 * A value the user set always wins.
 */
function openblasThreads(): Record<string, string> {
  if (process.env.OPENBLAS_NUM_THREADS !== undefined || availableParallelism() > 2) return {};
  return { OPENBLAS_NUM_THREADS: '1' };
}

/** The client side of one faiss host process (see src/workers/faiss-worker.ts). */
export class FaissHost {
  private readonly pending = new Map<number, { resolve: (reply: Success) => void; reject: (error: Error) => void }>();
  private nextId = 1;
  private failure: ServiceError | undefined;
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (reply: FaissReply) => this.settle(reply));
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.fail(`faiss host process exited (${signal ?? `code ${code}`})`);
        resolve();
      });
    });
    child.on('error', (error) => this.fail(`faiss host process failed: ${error.message}`));
    this.idle();
  }

  static start(): FaissHost {
    return new FaissHost(
      fork(HOST_ENTRY, [], {
        execArgv: [],
        serialization: 'advanced',
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        env: { ...process.env, ...openblasThreads() },
      }),
    );
  }

  request(request: Request): Promise<Success> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.pending.size === 0) this.busy();
    return new Promise<Success>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ ...request, id });
    });
  }

  /** Ends the process (and so frees its index); resolves once it has exited. */
  async stop(): Promise<void> {
    // Referenced, so that waiting for the exit keeps an otherwise idle process alive.
    this.child.ref();
    if (this.child.connected) this.child.disconnect();
    await this.exited;
  }

  // An idle host must not keep the service's process alive; one with requests in flight must.
  private busy(): void {
    this.child.ref();
    this.child.channel?.ref();
  }

  private idle(): void {
    this.child.unref();
    this.child.channel?.unref();
  }

  private settle(reply: FaissReply): void {
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.idle();
    if (reply.ok) waiter.resolve(reply);
    else waiter.reject(new ServiceError('internal', `faiss: ${reply.message}`));
  }

  private fail(why: string): void {
    this.failure ??= new ServiceError('internal', why);
    for (const waiter of this.pending.values()) waiter.reject(this.failure);
    this.pending.clear();
  }
}
