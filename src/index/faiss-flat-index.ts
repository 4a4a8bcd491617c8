import type { SearchPlacement, VectorIndex, VectorSearchResult } from './vector-index.js';
import { ServiceError } from '../errors.js';
import { FaissHost } from './faiss-host.js';
import { readIxfiHeader, type IxfiExpectations } from './ixfi-header.js';
import { checkSearchMemory, readHostMemory, type MemoryFiles, type SearchMemoryPlan } from './search-memory.js';

export interface FaissMemoryOptions {
  /** Most bytes the faiss host may hold; 0: no limit beyond the host's available memory. */
  memoryBudgetBytes?: number;
  /** Where the host's memory is read (default: /proc and /sys/fs/cgroup). */
  memoryFiles?: MemoryFiles;
}

/** A FAISS IndexFlatIP file loaded in a faiss host process of its own. */
export class FaissFlatIndex implements VectorIndex {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly dimension: number,
    readonly rows: number,
    private readonly host: FaissHost,
  ) {}

  get placement(): SearchPlacement {
    return { backend: 'faiss', sessions: [{ provider: 'cpu', precision: 'fp32', firstRow: 0, rows: this.rows }] };
  }

  /** What opening `path` would hold, read from its header alone: nothing is loaded. */
  static async plan(path: string, expect: IxfiExpectations = {}): Promise<SearchMemoryPlan> {
    const { dimension, rows } = await readIxfiHeader(path, expect);
    const vectorBytes = rows * dimension * 4;
    return {
      indexPath: path,
      dimension,
      precision: 'fp32',
      holding: 'read into memory by the faiss backend',
      // Search buffers are per query (topk heaps, one BLAS block), small beside the vectors.
      perDevice: { rows, vectorBytes, scoreBytes: 0 },
      hostRows: rows,
      hostMappedBytes: 0,
      hostAnonymousBytes: vectorBytes,
    };
  }

  /**
   * Validates the header (type, metric, dimension, rows, size) and checks that the host can hold
   * the vectors before FAISS reads the file: `read_index` copies all of it into the heap (Debian's
   * faiss 1.7.3 maps only IVF lists with `IO_FLAG_MMAP`, and faiss-node passes no flags).
   */
  static async open(path: string, expect: IxfiExpectations = {}, memory: FaissMemoryOptions = {}): Promise<FaissFlatIndex> {
    const plan = await FaissFlatIndex.plan(path, expect);
    const { dimension, perDevice: { rows } } = plan;
    // Nothing is mapped, so nothing streams: there is never a warning to give.
    checkSearchMemory(plan, memory.memoryBudgetBytes ?? 0, await readHostMemory(memory.memoryFiles), () => undefined);
    const host = FaissHost.start();
    try {
      const loaded = await host.request({ op: 'load', path });
      if (loaded.dimension !== dimension || loaded.rows !== rows) {
        throw new ServiceError('internal', `index ${path}: FAISS read ${loaded.rows}×${loaded.dimension}, header says ${rows}×${dimension}`);
      }
    } catch (error) {
      await host.stop();
      throw error;
    }
    return new FaissFlatIndex(path, dimension, rows, host);
  }

  async nearest(vectors: Float32Array, topk: number): Promise<VectorSearchResult> {
    if (this.closed) throw new ServiceError('internal', `index ${this.path} is closed`);
    // faiss-node throws when k exceeds ntotal.
    const { queries, k } = searchShape(this, vectors, topk);
    if (queries === 0 || k === 0) return { queries, topk: k, rowIndices: new Int32Array(0), scores: new Float32Array(0) };
    const { rowIndices, scores } = await this.host.request({ op: 'search', vectors, topk: k });
    return { queries, topk: k, rowIndices: rowIndices!, scores: scores! };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.host.stop();
  }
}

/** Checks a search's arguments; `k` is `topk` clamped to the index's rows. */
export function searchShape(index: VectorIndex, vectors: Float32Array, topk: number): { queries: number; k: number } {
  if (!Number.isInteger(topk) || topk < 1) throw new ServiceError('bad_request', `topk must be a positive integer, got ${topk}`);
  if (vectors.length % index.dimension !== 0) {
    throw new ServiceError('bad_request', `${vectors.length} floats are not whole vectors of dimension ${index.dimension}`);
  }
  return { queries: vectors.length / index.dimension, k: Math.min(topk, index.rows) };
}

export function openFaissFlatIndex(path: string, expect: IxfiExpectations = {}): Promise<FaissFlatIndex> {
  return FaissFlatIndex.open(path, expect);
}
