import type { SearchPrecision } from './search-graph.js';
import type { VectorIndex } from './vector-index.js';
import { FaissFlatIndex } from './faiss-flat-index.js';
import type { IxfiExpectations } from './ixfi-header.js';
import type { SearchMemoryPlan } from './search-memory.js';
import { OnnxFlatIndex, type OnnxIndexOptions, type SearchDevice } from './onnx-flat-index.js';

type SearchBackend = 'faiss' | 'onnx';
export type SearchBackendChoice = SearchBackend | 'auto';
export type SearchPrecisionChoice = SearchPrecision | 'auto';

/** How a version's index is opened for search: which backend, where, in what precision. */
export interface VectorIndexOptions extends Omit<OnnxIndexOptions, 'devices' | 'precision'> {
  /** Default `auto`: see {@link chooseSearchBackend}. */
  backend?: SearchBackendChoice;
  /** Search on CUDA (`--faiss_gpu`, `--device cuda`): one session per entry of `deviceIds`. */
  gpu?: boolean;
  /** CUDA device ordinals, each holding an equal slice of the rows (default `[0]`). */
  deviceIds?: readonly number[];
  /** Default `auto`: fp16 on GPU, fp32 (exact) on CPU. */
  precision?: SearchPrecisionChoice;
}

/**
 * `auto` takes the ONNX backend: it is exact like FAISS Flat, faster on CPU at every query count
 * measured (benchmarks/results/2026-12-01-search-backends.json, faiss host with BLAS on every
 * core: most at few queries, where faiss-node pays a per-call cost), maps the index file instead
 * of reading it into the heap, and is the only one of the two that searches on a GPU (faiss-node
 * is CPU-only).
 */
function chooseSearchBackend(choice: SearchBackendChoice = 'auto'): SearchBackend {
  return choice === 'auto' ? 'onnx' : choice;
}

function searchDevices(options: Pick<VectorIndexOptions, 'gpu' | 'deviceIds'>): SearchDevice[] {
  if (!options.gpu) return [{ provider: 'cpu' }];
  return (options.deviceIds ?? [0]).map((deviceId) => ({ provider: 'cuda', deviceId }));
}

/** The ONNX backend's options for these: its devices and, unless `auto`, its precision. */
function onnxOptions(options: VectorIndexOptions): OnnxIndexOptions {
  const { backend: _chosenAbove, gpu, deviceIds, precision = 'auto', ...onnx } = options;
  return { ...onnx, devices: searchDevices({ gpu, deviceIds }), ...(precision !== 'auto' && { precision }) };
}

/** Opens an IxFI index on the chosen backend; the header is validated against `expect` either way. */
export async function openVectorIndex(path: string, expect: IxfiExpectations = {}, options: VectorIndexOptions = {}): Promise<VectorIndex> {
  if (chooseSearchBackend(options.backend) === 'faiss') {
    return FaissFlatIndex.open(path, expect, { memoryBudgetBytes: options.memoryBudgetBytes, memoryFiles: options.memoryFiles });
  }
  return OnnxFlatIndex.open(path, expect, onnxOptions(options));
}

/** What {@link openVectorIndex} with these options would hold, per device and on this host, from the header alone. */
export function planVectorIndex(path: string, options: VectorIndexOptions = {}): Promise<SearchMemoryPlan> {
  return chooseSearchBackend(options.backend) === 'faiss' ? FaissFlatIndex.plan(path) : OnnxFlatIndex.plan(path, {}, onnxOptions(options));
}
