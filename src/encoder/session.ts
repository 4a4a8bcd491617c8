import { existsSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { InferenceSession } from 'onnxruntime-node';
import { ServiceError } from '../errors.js';
import type { ExecutionProviderName } from '../engine/types.js';
import type { RetrieverManifest } from './manifest.js';

/** `auto` takes CUDA when it loads and CPU otherwise; `cuda` is the same unless `strict`. */
export type DevicePreference = 'cuda' | 'cpu' | 'auto';

export interface SessionSettings {
  device?: DevicePreference;
  deviceId?: number;
  /** Fail instead of falling back to CPU when CUDA cannot load. */
  strict?: boolean;
  intraOpNumThreads?: number;
  interOpNumThreads?: number;
  graphOptimizationLevel?: InferenceSession.SessionOptions['graphOptimizationLevel'];
  /** Receives the one warning of a CPU fallback; defaults to `process.emitWarning`. */
  warn?: (message: string) => void;
}

export interface EncoderSession {
  session: InferenceSession;
  /** The provider actually running, after any fallback. */
  provider: ExecutionProviderName;
  /** The ONNX file loaded, relative to the model folder. */
  modelFile: string;
}

/** Where a fallback warning goes when the caller gives no `warn`. */
export function emitFallbackWarning(message: string): void {
  process.emitWarning(message, { code: 'ENCODER_CUDA_FALLBACK' });
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
 * Opens the model folder's ONNX graph on the preferred device. onnxruntime-node rejects a
 * session asking for CUDA when the CUDA provider libraries cannot load (it does not fall back on
 * its own), so the fallback to CPU happens here, with the fp32 file. The CUDA success path runs
 * only on a GPU host with the CUDA build of onnxruntime-node installed.
 */
export async function createEncoderSession(
  modelDir: string,
  manifest: RetrieverManifest,
  settings: SessionSettings = {},
): Promise<EncoderSession> {
  const { deviceId = 0 } = settings;
  // onnxruntime-node throws, outside the returned promise, on an option present but undefined.
  const common: InferenceSession.SessionOptions = {
    graphOptimizationLevel: settings.graphOptimizationLevel ?? 'all',
    ...(settings.intraOpNumThreads !== undefined && { intraOpNumThreads: settings.intraOpNumThreads }),
    ...(settings.interOpNumThreads !== undefined && { interOpNumThreads: settings.interOpNumThreads }),
  };
  const open = async (modelFile: string, executionProviders: InferenceSession.ExecutionProviderConfig[]) => {
    const file = path.join(modelDir, modelFile);
    // A missing file must not read as "CUDA unavailable" below.
    await access(file).catch(() => {
      throw new ServiceError('not_found', `model file ${file} does not exist`);
    });
    return InferenceSession.create(file, { ...common, executionProviders });
  };

  const gpuFile = manifest.files.fp16 ?? manifest.files.fp32;
  const cuda = await tryCuda(settings, 'encoding', () => open(gpuFile, [{ name: 'cuda', deviceId }, 'cpu']));
  if (cuda) return { session: cuda, provider: 'cuda', modelFile: gpuFile };
  const session = await open(manifest.files.fp32, ['cpu']);
  return { session, provider: 'cpu', modelFile: manifest.files.fp32 };
}

/**
 * Runs `openOnCuda` when the settings ask for CUDA (or `auto` and its provider is installed);
 * undefined means "run on CPU instead", after the one fallback warning. A ServiceError from
 * `openOnCuda` (a missing file) is not a CUDA failure and is rethrown; `strict` turns the
 * fallback into an error. `work` names what falls back, for the messages.
 */
export async function tryCuda<T>(settings: SessionSettings, work: string, openOnCuda: () => Promise<T>): Promise<T | undefined> {
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
