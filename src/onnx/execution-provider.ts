import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';
import { ServiceError } from '../errors.js';

export type ExecutionProviderName = 'cuda' | 'cpu';

/** `auto` takes CUDA when it loads and CPU otherwise; `cuda` is the same unless `strict`. */
export type DevicePreference = 'cuda' | 'cpu' | 'auto';

export interface DeviceSettings {
  device?: DevicePreference;
  deviceId?: number;
  /** Fail instead of falling back to CPU when CUDA cannot load. */
  strict?: boolean;
  intraOpNumThreads?: number;
  interOpNumThreads?: number;
  graphOptimizationLevel?: InferenceSession.SessionOptions['graphOptimizationLevel'];
  /** Receives the one warning of a CPU fallback or a missing int8 graph; defaults to `process.emitWarning`. */
  warn?: (message: string) => void;
}

/** Where a fallback warning (CUDA to CPU, int8 to fp32) goes when the caller gives no `warn`. */
export function emitFallbackWarning(message: string): void {
  process.emitWarning(message, { code: 'ENCODER_FALLBACK' });
}

/**
 * Whether onnxruntime-node's CUDA provider library was installed beside its binding (the
 * package ships CPU only; `ONNXRUNTIME_NODE_INSTALL=cuda12` adds it). Without it, `auto` does not
 * try CUDA: the attempt could only fail, and ORT logs that failure as an error.
 */
export function cudaProviderInstalled(): boolean {
  const packageDir = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  const binaryDir = path.join(packageDir, 'bin', 'napi-v6', process.platform, process.arch);
  return existsSync(path.join(binaryDir, 'libonnxruntime_providers_cuda.so'));
}

/**
 * Runs `openOnCuda` when the settings ask for CUDA (or `auto` and its provider is installed);
 * undefined means "run on CPU instead", after the one fallback warning. A ServiceError from
 * `openOnCuda` (a missing file) is not a CUDA failure and is rethrown; `strict` turns the
 * fallback into an error. `work` names what falls back, for the messages.
 */
export async function tryCuda<T>(settings: DeviceSettings, work: string, openOnCuda: () => Promise<T>): Promise<T | undefined> {
  const { device = 'cpu', deviceId = 0, strict = false } = settings;
  if (!(device === 'cuda' || (device === 'auto' && cudaProviderInstalled()))) return undefined;
  try {
    return await openOnCuda();
  } catch (error) {
    if (error instanceof ServiceError) throw error;
    const reason = (error as Error).message;
    if (strict) {
      throw new ServiceError('internal', `CUDA was demanded (strict) but its provider cannot load: ${reason}`, {
        device,
        deviceId,
      });
    }
    (settings.warn ?? emitFallbackWarning)(`CUDA execution provider unavailable (device ${deviceId}), ${work} on CPU instead: ${reason}`);
    return undefined;
  }
}
