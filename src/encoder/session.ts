import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { InferenceSession } from 'onnxruntime-node';
import { ServiceError } from '../errors.js';
import { checkRegularFile } from '../file-io.js';
import type { ExecutionProviderName } from '../engine/types.js';
import type { RetrieverManifest } from './manifest.js';

/** `auto` takes CUDA when it loads and CPU otherwise; `cuda` is the same unless `strict`. */
export type DevicePreference = 'cuda' | 'cpu' | 'auto';

/** `int8` runs a model folder's `model.int8.onnx` when encoding on CPU; CUDA runs fp16/fp32 either way. */
export type CpuPrecision = 'fp32' | 'int8';

export interface SessionSettings {
  device?: DevicePreference;
  deviceId?: number;
  /** Fail instead of falling back to CPU when CUDA cannot load. */
  strict?: boolean;
  /** The graph CPU encoding runs (default fp32). */
  precision?: CpuPrecision;
  intraOpNumThreads?: number;
  interOpNumThreads?: number;
  graphOptimizationLevel?: InferenceSession.SessionOptions['graphOptimizationLevel'];
  /** Receives the one warning of a CPU fallback or a missing int8 graph; defaults to `process.emitWarning`. */
  warn?: (message: string) => void;
}

export interface EncoderSession {
  session: InferenceSession;
  /** The provider actually running, after any fallback. */
  provider: ExecutionProviderName;
  /** The ONNX file loaded, relative to the model folder. */
  modelFile: string;
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
    await checkRegularFile(file, 'model file', { missing: `model file ${file} does not exist` });
    return InferenceSession.create(file, { ...common, executionProviders });
  };

  const gpuFile = manifest.files.fp16 ?? manifest.files.fp32;
  const cuda = await tryCuda(settings, 'encoding', () => open(gpuFile, [{ name: 'cuda', deviceId }, 'cpu']));
  if (cuda) return { session: cuda, provider: 'cuda', modelFile: gpuFile };
  const cpuFile = cpuModelFile(manifest, settings);
  const session = await open(cpuFile, ['cpu']);
  return { session, provider: 'cpu', modelFile: cpuFile };
}

/** The int8 graph when asked for and present; a folder built without one serves fp32, with a warning. */
function cpuModelFile(manifest: RetrieverManifest, settings: SessionSettings): string {
  if (settings.precision !== 'int8') return manifest.files.fp32;
  if (manifest.files.int8) return manifest.files.int8;
  (settings.warn ?? emitFallbackWarning)(
    `precision int8 was asked for, but model ${manifest.name} has no int8 graph (build it with make-model --int8); encoding with ${manifest.files.fp32}`,
  );
  return manifest.files.fp32;
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
