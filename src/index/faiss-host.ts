import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseCpuFlags, readCpuinfo } from '../cpu-flags.js';
import { ServiceError } from '../errors.js';
import type { FaissReply, FaissRequest } from './faiss-protocol.js';

type Request = FaissRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Success = Extract<FaissReply, { ok: true }>;

const HOST_ENTRY = fileURLToPath(new URL('../workers/faiss-worker.js', import.meta.url));

/** The CPU's feature flags (none where /proc/cpuinfo cannot be read). */
function cpuFlags(): ReadonlySet<string> {
  return parseCpuFlags(readCpuinfo() ?? '');
}

/**
 * The OpenBLAS kernels for this CPU. OpenBLAS (Debian 12's 0.3.21) picks them from the CPU model
 * and falls back to SSE3 `Prescott` kernels on models newer than itself (Sapphire Rapids), about
 * 4× slower than the AVX2 ones; naming the kernels from the instruction set avoids that.
 */
function openblasCoretype(flags: ReadonlySet<string>): string | undefined {
  if (['avx512f', 'avx512dq', 'avx512bw', 'avx512vl'].every((flag) => flags.has(flag))) return 'SkylakeX';
  if (flags.has('avx2') && flags.has('fma')) return 'Haswell';
  return undefined;
}

/**
 * The environment of a faiss host process. OpenBLAS and OpenMP read these once, at load. FAISS
 * scans for fewer than 20 queries in OpenMP threads, one query each, and searches more as BLAS
 * products, merging per-query heaps in OpenMP threads between them. OpenMP's idle threads spin by
 * default and then take the cores from BLAS's; passive waiting lets both pools have every core
 * (benchmarks/faiss-threads.ts). OpenBLAS's pool is sized explicitly, since it otherwise follows
 * OMP_NUM_THREADS. A value the user set always wins.
 */
export function faissHostEnv(env: NodeJS.ProcessEnv, cores = availableParallelism(), flags = cpuFlags()): NodeJS.ProcessEnv {
  const chosen: Record<string, string | undefined> = {
    OMP_WAIT_POLICY: 'PASSIVE',
    OPENBLAS_NUM_THREADS: String(cores),
    OPENBLAS_CORETYPE: openblasCoretype(flags),
  };
  const unset = Object.entries(chosen).filter(([name, value]) => value !== undefined && env[name] === undefined);
  return { ...env, ...Object.fromEntries(unset) };
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
        env: faissHostEnv(process.env),
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
