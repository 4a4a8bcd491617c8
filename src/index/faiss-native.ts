/**
 * The faiss-node binding as scripts/patches/faiss-node-any-index.patch extends it: its generic
 * `Index` class reads any index type with io flags, searches typed arrays, and sets and reports
 * faiss's search parameters. faiss-node's own typings know only the unpatched methods.
 */
import { createRequire } from 'node:module';

/** faiss's `IO_FLAG_MMAP`: maps an IVF file's inverted lists instead of reading them (1.7.3 maps nothing else). */
export const IO_FLAG_MMAP = 0x646f0008;

/** `faiss::MetricType` values of the two metrics an index of this service can have. */
export const METRIC_INNER_PRODUCT = 0;
export const METRIC_L2 = 1;

/** What `describe()` answers; the HNSW and IVF fields are present on those indexes only. */
export interface NativeDescription {
  /** The C++ class, demangled (`faiss::IndexHNSWFlat`). */
  className: string;
  d: number;
  ntotal: number;
  isTrained: boolean;
  metricType: number;
  /** The index an IndexIDMap(2) wraps. */
  inner?: NativeDescription;
  efSearch?: number;
  efConstruction?: number;
  M?: number;
  nprobe?: number;
  nlist?: number;
  /** Bytes per vector in an IVF list (ids take 8 more). */
  codeSize?: number;
  /** The IVF lists are mapped from the file rather than read into memory. */
  listsMapped?: boolean;
}

export interface NativeIndex {
  ntotal(): number;
  searchVectors(queries: Float32Array, k: number): { distances: Float32Array; labels: BigInt64Array };
  addVectors(vectors: Float32Array): void;
  trainVectors(vectors: Float32Array): void;
  /** Through faiss::ParameterSpace (`efSearch`, `nprobe`, ...), plus `efConstruction`. */
  setParameter(name: string, value: number): void;
  describe(): NativeDescription;
  write(path: string): void;
}

export interface NativeIndexClass {
  read(path: string, ioFlags?: number): NativeIndex;
  /** `description` is a faiss index_factory string (`HNSW64`, `IVF4096,PQ64`). */
  fromFactory(dimension: number, description: string, metric: number): NativeIndex;
}

/** The patched binding's generic index class (faiss-node is CommonJS with a native addon). */
export function faissIndexClass(): NativeIndexClass {
  return (createRequire(import.meta.url)('faiss-node') as { Index: NativeIndexClass }).Index;
}
