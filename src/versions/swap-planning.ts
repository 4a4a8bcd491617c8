import { encoderMemory } from '../encoder/encoder-memory.js';
import { readManifest } from '../encoder/manifest.js';
import type { EncoderOptions } from '../encoder/onnx-encoder.js';
import type { Retriever, RetrieverFiles } from '../engine/retriever.js';
import { planVectorIndex, type VectorIndexOptions } from '../index/open-index.js';
import { planSwap, readHostMemory, type SwapModeSetting, type SwapPlan } from '../index/search-memory.js';
import { gpuMemoryReader, type GpuMemoryReader } from '../onnx/gpu-memory.js';

/** How a server loads versions and makes room for a new one: the writer and its replicas plan alike. */
export interface SwapPlanning {
  encoder?: EncoderOptions;
  index?: VectorIndexOptions;
  swapMode?: SwapModeSetting;
  gpuMemory: GpuMemoryReader;
}

/** A server's planning from its options: nvidia-smi on PATH unless `gpuMemory` says otherwise, its warnings to `log`. */
export function swapPlanning(
  options: Omit<SwapPlanning, 'gpuMemory'> & {
    gpuMemory?: GpuMemoryReader;
    log?: (message: string, fields?: Record<string, unknown>, level?: 'info' | 'warn' | 'error') => void;
  },
): SwapPlanning {
  const { encoder, index, swapMode, log } = options;
  return { encoder, index, swapMode, gpuMemory: options.gpuMemory ?? gpuMemoryReader({ warn: (message) => log?.(message, {}, 'warn') }) };
}

/** The new version's files could not be planned (its index or model is unreadable): the version is at fault, not the server. */
export class UnplannableVersionError extends Error {
  constructor(cause: unknown) {
    super((cause as Error).message, { cause });
  }
}

/**
 * The memory plan of swapping `current` for the version of `files`, from the index headers, the
 * new encoder's graph file and what the serving encoder holds (as its load counted it), with the
 * driver's free memory of the CUDA devices either holds. The new version runs where the serving
 * one does, after the same fallbacks: same settings, same host.
 * A failure to plan the new version rejects with {@link UnplannableVersionError}.
 */
export async function planVersionSwap(current: Retriever, files: RetrieverFiles, planning: SwapPlanning): Promise<SwapPlan> {
  const { index, encoder = {} } = planning;
  const { provider } = current.encoder;
  const served = current.index.placement;
  const [activeIndex, next, host] = await Promise.all([
    planVectorIndex(current.files.indexPath, index, served),
    Promise.all([planVectorIndex(files.indexPath, index, served), readManifest(files.modelDir).then((manifest) => encoderMemory(files.modelDir, manifest, provider, encoder))])
      .then(([nextIndex, nextEncoder]) => ({ index: nextIndex, encoder: nextEncoder }))
      .catch((error: unknown) => Promise.reject(new UnplannableVersionError(error))),
    readHostMemory(index?.memoryFiles),
  ]);
  const active = { index: activeIndex, encoder: current.encoderMemory };
  const cuda = [...new Set([...active.index.devices, active.encoder.device, ...next.index.devices, next.encoder.device])].flatMap((name) =>
    name.startsWith('cuda:') ? [Number(name.slice('cuda:'.length))] : [],
  );
  const gpus = await planning.gpuMemory(cuda);
  const gpuFree = new Map([...gpus].map(([deviceId, gpu]) => [`cuda:${deviceId}`, gpu.freeBytes]));
  return planSwap(active, next, index?.memoryBudgetBytes ?? 0, host, planning.swapMode ?? 'auto', gpuFree);
}
