import { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.js';
import type { FaissReply, FaissRequest } from './faiss-protocol.js';

type Request = FaissRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Success = Extract<FaissReply, { ok: true }>;

/**
 * The process's one faiss thread. faiss-node blocks its thread for a whole search and crashes
 * when loaded in two threads, so every index of every retriever version lives in this worker.
 */
class FaissWorkerClient {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve: (reply: Success) => void; reject: (error: Error) => void }>();
  private nextId = 1;

  request(request: Request): Promise<Success> {
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    // The worker stays unref'd while idle so a loaded index never keeps the process alive.
    if (this.pending.size === 0) worker.ref();
    return new Promise<Success>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...request, id });
    });
  }

  private start(): Worker {
    // OpenBLAS reads its thread count once, when the addon loads; its pool on top of OpenMP's
    // oversubscribes small machines (setup notes: 0.8 s instead of 1.1 s for 512 queries on 2 cores).
    process.env.OPENBLAS_NUM_THREADS ??= '1';
    const worker = new Worker(new URL('../workers/faiss-worker.js', import.meta.url));
    worker.unref();
    worker.on('message', (reply: FaissReply) => this.settle(reply));
    worker.on('error', (error) => this.fail(error));
    worker.on('exit', (code) => this.fail(new Error(`faiss worker exited with code ${code}`)));
    this.worker = worker;
    return worker;
  }

  private settle(reply: FaissReply): void {
    const waiter = this.pending.get(reply.id);
    if (!waiter) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.worker?.unref();
    if (reply.ok) waiter.resolve(reply);
    else waiter.reject(new ServiceError('internal', `faiss: ${reply.message}`));
  }

  private fail(error: Error): void {
    // Every loaded index died with the thread; the next request starts a fresh, empty worker.
    this.worker = undefined;
    for (const waiter of this.pending.values()) waiter.reject(new ServiceError('internal', `faiss worker failed: ${error.message}`));
    this.pending.clear();
  }
}

export const faissWorker = new FaissWorkerClient();
