import path from 'node:path';
import { InferenceSession } from 'onnxruntime-node';
import { checkRegularFile } from '../file-io.js';
import { emitFallbackWarning, tryCuda, type DeviceSettings, type ExecutionProviderName } from '../onnx/execution-provider.js';
import type { RetrieverManifest } from './manifest.js';

/** `int8` runs a model folder's `model.int8.onnx` when encoding on CPU; CUDA runs fp16/fp32 either way. */
export type CpuPrecision = 'fp32' | 'int8';

export interface SessionSettings extends DeviceSettings {
  /** The graph CPU encoding runs (default fp32). */
  precision?: CpuPrecision;
}

export interface EncoderSession {
  session: InferenceSession;
  /** The provider actually running, after any fallback. */
  provider: ExecutionProviderName;
  /** The ONNX file loaded, relative to the model folder. */
  modelFile: string;
}

/**
 * Opens the model folder's ONNX graph on the preferred device. onnxruntime-node rejects a
 * session asking for CUDA when the CUDA provider libraries cannot load (it does not fall back on
 * its own), so the fallback to CPU happens here, with the fp32 file. The CUDA success path runs
 * only on a GPU host with the CUDA build of onnxruntime-node installed.
 */
export async function createEncoderSession(
  modelDir: string,
  manifest: Pick<RetrieverManifest, 'name' | 'files'>,
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

  const gpuFile = sessionModelFile(manifest, 'cuda', settings);
  const cuda = await tryCuda(settings, 'encoding', () => open(gpuFile, [{ name: 'cuda', deviceId }, 'cpu']));
  if (cuda) return { session: cuda, provider: 'cuda', modelFile: gpuFile };
  const cpuFile = sessionModelFile(manifest, 'cpu', settings);
  if (settings.precision === 'int8' && cpuFile !== manifest.files.int8) {
    (settings.warn ?? emitFallbackWarning)(
      `precision int8 was asked for, but model ${manifest.name} has no int8 graph (build it with make-model --int8); encoding with ${manifest.files.fp32}`,
    );
  }
  const session = await open(cpuFile, ['cpu']);
  return { session, provider: 'cpu', modelFile: cpuFile };
}

/**
 * The graph a session on `provider` runs: on CUDA the half-precision one when the folder has it;
 * on CPU the int8 one when asked for and present (a folder built without one serves fp32).
 */
export function sessionModelFile(manifest: Pick<RetrieverManifest, 'files'>, provider: ExecutionProviderName, settings: Pick<SessionSettings, 'precision'>): string {
  if (provider === 'cuda') return manifest.files.fp16 ?? manifest.files.fp32;
  return settings.precision === 'int8' ? (manifest.files.int8 ?? manifest.files.fp32) : manifest.files.fp32;
}
