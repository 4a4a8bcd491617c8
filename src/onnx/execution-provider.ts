import { execFileSync } from 'node:child_process';
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
  return existsSync(path.join(ortBinaryDir(), CUDA_PROVIDER));
}

/** Where onnxruntime-node's binding and libonnxruntime.so.1 live, and where ORT looks for provider libraries. */
function ortBinaryDir(): string {
  const packageDir = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  return path.join(packageDir, 'bin', 'napi-v6', process.platform, process.arch);
}

const CUDA_PROVIDER = 'libonnxruntime_providers_cuda.so';
/** What ORT loads to run the CUDA provider, beside its core library. */
const PROVIDER_LIBRARIES = ['libonnxruntime_providers_shared.so', CUDA_PROVIDER];

/**
 * ORT's error for a CUDA provider that cannot load is only "Failed to load shared library"; this
 * adds which library is missing and how to install it: a provider library absent from `binaryDir`,
 * or a CUDA/cuDNN library the provider links to that the dynamic loader cannot find (as `ldd` says).
 */
export function cudaLoadFailure(reason: string, binaryDir = ortBinaryDir()): string {
  const absent = PROVIDER_LIBRARIES.filter((file) => !existsSync(path.join(binaryDir, file)));
  if (absent.length > 0) {
    return (
      `${reason}: ${absent.join(' and ')} ${absent.length > 1 ? 'are' : 'is'} not in ${binaryDir} (onnxruntime-node ships CPU only); ` +
      'install the CUDA provider with ONNXRUNTIME_NODE_INSTALL=cuda12 bash scripts/install.sh, or on a host without NuGet access ' +
      'the GPU bundle (ONNXRUNTIME_NODE_INSTALL=bundle:<tarball>, scripts/install-gpu-bundle.sh); see README "GPU notes"'
    );
  }
  const unresolved = librariesNotFound(path.join(binaryDir, CUDA_PROVIDER));
  if (unresolved.length === 0) return reason;
  return (
    `${reason}: ${CUDA_PROVIDER} needs ${unresolved.join(', ')}, which the dynamic loader cannot find; ` +
    'put the CUDA and cuDNN 9 libraries it was built for on LD_LIBRARY_PATH (README "GPU notes")'
  );
}

/** The shared libraries `file` links to that are not found (`ldd`'s "=> not found"); none when ldd cannot tell. */
function librariesNotFound(file: string): string[] {
  let listing: string;
  try {
    listing = execFileSync('ldd', [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return [];
  }
  return [...listing.matchAll(/^\s*(\S+) => not found$/gm)].map((match) => match[1]!);
}

/** Whether `device` leads to trying CUDA: `cuda`, or `auto` where its provider is installed. */
export function triesCuda(device: DevicePreference): boolean {
  return device === 'cuda' || (device === 'auto' && cudaProviderInstalled());
}

/**
 * Runs `openOnCuda` when the settings ask for CUDA (or `auto` and its provider is installed);
 * undefined means "run on CPU instead", after the one fallback warning. A ServiceError from
 * `openOnCuda` (a missing file) is not a CUDA failure and is rethrown; `strict` turns the
 * fallback into an error. `work` names what falls back, for the messages.
 */
export async function tryCuda<T>(settings: DeviceSettings, work: string, openOnCuda: () => Promise<T>): Promise<T | undefined> {
  const { device = 'cpu', deviceId = 0, strict = false } = settings;
  if (!triesCuda(device)) return undefined;
  try {
    return await openOnCuda();
  } catch (error) {
    if (error instanceof ServiceError) throw error;
    const reason = cudaLoadFailure((error as Error).message);
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
