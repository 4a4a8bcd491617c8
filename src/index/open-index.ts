import type { SearchPrecision } from './search-graph.js';
import type { SearchPlacement, VectorIndex } from './vector-index.js';
import { ServiceError } from '../errors.js';
import { FaissIndex, type FaissIndexOptions } from './faiss-index.js';
import { readFaissHeader, type FaissFileHeader } from './faiss-index-kinds.js';
import type { IxfiExpectations } from './ixfi-header.js';
import type { SearchMemoryPlan } from './search-memory.js';
import { OnnxFlatIndex, type OnnxIndexOptions, type SearchDevice } from './onnx-flat-index.js';

type SearchBackend = 'faiss' | 'onnx';
export type SearchBackendChoice = SearchBackend | 'auto';
export type SearchPrecisionChoice = SearchPrecision | 'auto';

/** How a version's index is opened for search: which backend, where, in what precision. */
export interface VectorIndexOptions extends Omit<OnnxIndexOptions, 'devices' | 'precision'>, Pick<FaissIndexOptions, 'efSearch' | 'nprobe'> {
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
 * `auto` takes the ONNX backend for an inner-product Flat (IxFI) file: it is exact like FAISS Flat,
 * faster on CPU at every query count measured (benchmarks/results/2026-12-01-search-backends.json,
 * faiss host with BLAS on every core: most at few queries, where faiss-node pays a per-call cost),
 * maps the index file instead of reading it into the heap, and is the only one of the two that
 * searches on a GPU (faiss-node is CPU-only). Every other kind (HNSW, IVF, SQ, PQ, L2 Flat, ID
 * maps) only FAISS searches.
 */
function chooseSearchBackend(path: string, header: FaissFileHeader, choice: SearchBackendChoice = 'auto'): SearchBackend {
  if (header.fourcc === 'IxFI') return choice === 'auto' ? 'onnx' : choice;
  if (choice === 'onnx') {
    throw new ServiceError(
      'bad_request',
      `index ${path} is an ${header.kind} (${header.metric}): --search_backend onnx searches inner-product Flat indexes only; use --search_backend faiss or auto`,
      { indexPath: path, field: '--search_backend' },
    );
  }
  return 'faiss';
}

function searchDevices(options: Pick<VectorIndexOptions, 'gpu' | 'deviceIds'>): SearchDevice[] {
  if (!options.gpu) return [{ provider: 'cpu' }];
  return (options.deviceIds ?? [0]).map((deviceId) => ({ provider: 'cuda', deviceId }));
}

/** The ONNX backend's options for these: its devices and, unless `auto`, its precision. */
function onnxOptions(options: VectorIndexOptions): OnnxIndexOptions {
  const { backend: _chosenAbove, gpu, deviceIds, precision = 'auto', efSearch: _faissOnly, nprobe: _ivfOnly, ...onnx } = options;
  return { ...onnx, devices: searchDevices({ gpu, deviceIds }), ...(precision !== 'auto' && { precision }) };
}

/**
 * Opens an index file on the chosen backend after checking its header against `expect`: an IxFI
 * file on either backend, any other FAISS index on the faiss backend, on CPU. The header is read
 * once, here, and handed to the backend.
 */
export async function openVectorIndex(path: string, expect: IxfiExpectations = {}, options: VectorIndexOptions = {}): Promise<VectorIndex> {
  const { backend, gpu, efSearch, nprobe, memoryBudgetBytes, encoderWeights, memoryFiles, warn } = options;
  const header = await readFaissHeader(path, expect);
  if (chooseSearchBackend(path, header, backend) === 'faiss') {
    // With an explicit faiss backend, config's startup notices already said faiss-node is CPU-only.
    if (gpu && backend !== 'faiss') {
      (warn ?? process.emitWarning)(
        `index ${path} is an ${header.kind}: it is searched on CPU (faiss backend); only Flat inner-product indexes search on the GPU`,
      );
    }
    return FaissIndex.openChecked(path, header, { efSearch, nprobe, memoryBudgetBytes, encoderWeights, memoryFiles, warn });
  }
  return OnnxFlatIndex.openChecked(path, header, onnxOptions(options));
}

/**
 * What {@link openVectorIndex} with these options would hold, per device and on this host, from the
 * header alone. With `served`, the placement of an index open now with the same options, a CUDA
 * device whose session fell back to CPU is planned on CPU in the precision it fell back to: the
 * next index opened with these options lands where the serving one did.
 */
export async function planVectorIndex(path: string, options: VectorIndexOptions = {}, served?: SearchPlacement): Promise<SearchMemoryPlan> {
  const header = await readFaissHeader(path);
  if (chooseSearchBackend(path, header, options.backend) === 'faiss') return FaissIndex.plan(path, header);
  const onnx = onnxOptions(options);
  return OnnxFlatIndex.plan(path, header, served ? asServed(onnx, served) : onnx);
}

function asServed(options: OnnxIndexOptions, { sessions }: SearchPlacement): OnnxIndexOptions {
  if (sessions.length === 0) return options;
  const allOnCpu = sessions.every((session) => session.provider === 'cpu');
  const devices = (options.devices ?? []).map((device, i): SearchDevice =>
    device.provider === 'cuda' && (allOnCpu || sessions[i]?.provider === 'cpu') ? { provider: 'cpu' } : device,
  );
  return { ...options, devices, ...(allOnCpu && { precision: sessions[0]!.precision }) };
}
