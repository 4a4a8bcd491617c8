import { execFile } from 'node:child_process';

/** One GPU's memory as the driver reports it. */
export interface GpuMemory {
  freeBytes: number;
  totalBytes: number;
}

const MIB = 2 ** 20;
const QUERY = ['--query-gpu=index,memory.free,memory.total', '--format=csv,noheader,nounits'];

/**
 * Parses `nvidia-smi --query-gpu=index,memory.free,memory.total --format=csv,noheader,nounits`:
 * one `index, free, total` line per GPU, in MiB. A line that does not read so (`[N/A]` on a GPU
 * the driver cannot query) is left out: that GPU's memory is unknown.
 */
export function parseGpuMemory(text: string): Map<number, GpuMemory> {
  const gpus = new Map<number, GpuMemory>();
  for (const line of text.split('\n')) {
    const fields = line.split(',').map((field) => field.trim());
    if (fields.length !== 3 || !fields.every((field) => /^\d+$/.test(field))) continue;
    const [index, free, total] = fields.map(Number) as [number, number, number];
    gpus.set(index, { freeBytes: free * MIB, totalBytes: total * MIB });
  }
  return gpus;
}

/**
 * The driver's numbering of the GPU CUDA calls `deviceId`: under `CUDA_VISIBLE_DEVICES=2,3` CUDA's
 * device 0 is the driver's 2. Undefined where that list names GPUs by UUID or MIG instance. (CUDA
 * orders GPUs fastest first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`, nvidia-smi by bus: on a host of
 * one GPU model, the usual, the two agree.)
 */
function driverIndex(deviceId: number, visible: string | undefined): number | undefined {
  if (visible === undefined || visible.trim() === '') return deviceId;
  const entry = visible.split(',')[deviceId]?.trim();
  return entry !== undefined && /^\d+$/.test(entry) ? Number(entry) : undefined;
}

export interface GpuMemoryReaderOptions {
  /** Default `nvidia-smi`, looked up on PATH. */
  command?: string;
  /** How long nvidia-smi may take before its memory counts as unknown (default 5 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Told, once per reader, why the driver's figures are unknown. */
  warn?: (message: string) => void;
}

/** Free memory of CUDA devices by ordinal; a device missing from the answer is one whose memory is unknown. */
export type GpuMemoryReader = (deviceIds: readonly number[]) => Promise<Map<number, GpuMemory>>;

/**
 * Reads CUDA devices' free memory from the driver. ONNX Runtime's Node API does not expose it, so
 * this asks `nvidia-smi`, within a bounded time. Without nvidia-smi, when it fails or times out,
 * or for a device it does not list, the memory is unknown: the answer leaves it out, and the
 * first such case is reported through `warn`.
 */
export function gpuMemoryReader(options: GpuMemoryReaderOptions = {}): GpuMemoryReader {
  const { command = 'nvidia-smi', timeoutMs = 5000, env = process.env } = options;
  let warned = false;
  const unknown = (why: string): void => {
    if (warned) return;
    warned = true;
    options.warn?.(`the GPU's free memory is unknown (${why}); the swap plan holds versions against --search_memory_budget alone`);
  };
  return async (deviceIds) => {
    const found = new Map<number, GpuMemory>();
    if (deviceIds.length === 0) return found;
    const answer = await new Promise<{ stdout: string; failure?: string }>((resolve) =>
      execFile(command, QUERY, { timeout: timeoutMs, killSignal: 'SIGKILL', env }, (error, stdout, stderr) => {
        if (!error) return resolve({ stdout });
        const { code, killed } = error as NodeJS.ErrnoException & { killed?: boolean };
        const failure =
          code === 'ENOENT'
            ? `${command} is not on PATH`
            : killed
              ? `${command} did not answer within ${timeoutMs} ms`
              : `${command} failed (exit ${String(code)}): ${stderr.trim() || stdout.trim()}`;
        resolve({ stdout, failure });
      }),
    );
    if (answer.failure !== undefined) {
      unknown(answer.failure);
      return found;
    }
    const gpus = parseGpuMemory(answer.stdout);
    for (const deviceId of deviceIds) {
      const index = driverIndex(deviceId, env.CUDA_VISIBLE_DEVICES);
      const gpu = index === undefined ? undefined : gpus.get(index);
      if (gpu) found.set(deviceId, gpu);
      else unknown(`${command} does not list CUDA device ${deviceId}${env.CUDA_VISIBLE_DEVICES ? ` (CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES})` : ''}`);
    }
    return found;
  };
}
