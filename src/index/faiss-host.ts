import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { hostCpuFlags } from '../cpu-flags.js';
import { processChannel, WorkerRequests, type Channel, type WithoutId } from '../threads/worker-requests.js';
import type { FaissReply, FaissRequest } from './faiss-protocol.js';

const HOST_ENTRY = fileURLToPath(new URL('../workers/faiss-worker.js', import.meta.url));

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
export function faissHostEnv(env: NodeJS.ProcessEnv, cores = availableParallelism(), flags = hostCpuFlags()): NodeJS.ProcessEnv {
  const chosen: Record<string, string | undefined> = {
    OMP_WAIT_POLICY: 'PASSIVE',
    OPENBLAS_NUM_THREADS: String(cores),
    OPENBLAS_CORETYPE: openblasCoretype(flags),
  };
  const unset = Object.entries(chosen).filter(([name, value]) => value !== undefined && env[name] === undefined);
  return { ...env, ...Object.fromEntries(unset) };
}

/** A process that loads faiss-node (`entry`, a compiled worker), with the environment faiss runs best in and an IPC channel. */
export function forkFaissProcess(entry: string): ChildProcess {
  return fork(entry, [], { execArgv: [], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: faissHostEnv(process.env) });
}

/** The client side of one faiss host process (see src/workers/faiss-worker.ts). */
export class FaissHost {
  private readonly requests: WorkerRequests<FaissRequest, FaissReply>;

  private constructor(private readonly channel: Channel) {
    this.requests = new WorkerRequests(channel);
  }

  static start(): FaissHost {
    return new FaissHost(processChannel(forkFaissProcess(HOST_ENTRY), 'faiss host process'));
  }

  request(request: WithoutId<FaissRequest>): Promise<Extract<FaissReply, { ok: true }>> {
    return this.requests.send(request);
  }

  /** Ends the process (and so frees its index); resolves once it has exited. */
  stop(): Promise<void> {
    return this.channel.end();
  }
}
