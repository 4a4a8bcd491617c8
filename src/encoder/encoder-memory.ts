import { stat } from 'node:fs/promises';
import path from 'node:path';
import { checkRegularFile } from '../file-io.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { RetrieverManifest } from './manifest.js';
import { sessionModelFile, type SessionSettings } from './session.js';

/** What an encoder session holds and where: its graph's weights, on a CUDA device or in this host's memory. */
export interface EncoderMemory {
  /** `cpu` or `cuda:<ordinal>`, as the search memory plan names devices. */
  device: string;
  /** The ONNX file it runs, relative to the model folder. */
  modelFile: string;
  /** The file's size: a BERT graph is nearly all initializers, so this is what its weights take once loaded. */
  bytes: number;
}

/**
 * The memory an encoder of `modelDir` holds running `modelFile` on `provider` (the file
 * {@link sessionModelFile} picks when none is given): fp16 weights on CUDA when the folder has
 * them, int8 on CPU when asked for, each file the size of its weights.
 */
export async function encoderMemory(
  modelDir: string,
  manifest: RetrieverManifest,
  provider: ExecutionProviderName,
  settings: Pick<SessionSettings, 'precision' | 'deviceId'>,
  modelFile = sessionModelFile(manifest, provider, settings),
): Promise<EncoderMemory> {
  const file = path.join(modelDir, modelFile);
  await checkRegularFile(file, 'model file', { missing: `model file ${file} does not exist` });
  const { size } = await stat(file);
  return { device: provider === 'cuda' ? `cuda:${settings.deviceId ?? 0}` : 'cpu', modelFile, bytes: size };
}
