import type { SearchPlacement, VectorIndex, VectorSearchResult } from './vector-index.js';
import { ServiceError } from '../errors.js';
import { FaissHost } from './faiss-host.js';
import { readFaissHeader, type FaissFileHeader, type FaissIndexInfo } from './faiss-index-kinds.js';
import { IO_FLAG_MMAP, type NativeDescription } from './faiss-native.js';
import type { IxfiExpectations } from './ixfi-header.js';
import { checkSearchMemory, readHostMemory, type EncoderWeights, type MemoryFiles, type SearchMemoryPlan } from './search-memory.js';

export interface FaissIndexOptions {
  /** HNSW `efSearch` (`--hnsw_ef_search`); default the value stored in the file. */
  efSearch?: number;
  /** IVF `nprobe` (`--ivf_nprobe`); default the value stored in the file. */
  nprobe?: number;
  /** Most bytes the index may hold in memory (mapped IVF lists not counted); 0: no limit beyond the host's available memory. */
  memoryBudgetBytes?: number;
  /** The serving encoder's weights, counted with the index against the budget when the encoder runs on CPU. */
  encoderWeights?: EncoderWeights;
  /** Where the host's memory is read (default: /proc and /sys/fs/cgroup). */
  memoryFiles?: MemoryFiles;
  /** Receives notices about flags that do not apply to this index and about mapped lists past RAM; defaults to `process.emitWarning`. */
  warn?: (message: string) => void;
}

/**
 * The faiss search parameters to set for these options: validated against the index, and only
 * those that apply to it (a flag for another kind of index is reported through `warn`).
 */
function searchParameters(header: FaissFileHeader, core: NativeDescription, options: FaissIndexOptions, warn: (message: string) => void): Record<string, number> {
  const parameters: Record<string, number> = {};
  const fail = (why: string): ServiceError => new ServiceError('bad_request', `index ${header.kind}: ${why}`, { field: why.split(' ')[0] });
  if (options.efSearch !== undefined) {
    if (core.efSearch === undefined) warn(`--hnsw_ef_search ${options.efSearch} ignored: ${header.kind} is not an HNSW index`);
    else if (!Number.isInteger(options.efSearch) || options.efSearch < 1 || options.efSearch > Math.max(header.rows, 1)) {
      throw fail(`--hnsw_ef_search must be an integer from 1 to the index's ${header.rows} vectors, got ${options.efSearch}`);
    } else parameters.efSearch = options.efSearch;
  }
  if (options.nprobe !== undefined) {
    if (core.nlist === undefined) warn(`--ivf_nprobe ${options.nprobe} ignored: ${header.kind} is not an IVF index`);
    else if (!Number.isInteger(options.nprobe) || options.nprobe < 1 || options.nprobe > core.nlist) {
      throw fail(`--ivf_nprobe must be an integer from 1 to the index's ${core.nlist} lists, got ${options.nprobe}`);
    } else parameters.nprobe = options.nprobe;
  }
  return parameters;
}

/** What one row is held as: fp32 or the kind's codes (their size once faiss has read an IVF index), and the structure around them. */
function rowFormat(header: FaissFileHeader, core?: NativeDescription): string {
  const size = core?.codeSize !== undefined ? `${core.codeSize}-byte ` : '';
  const row = header.codes === undefined ? `${header.dimension} fp32` : `${header.dimension} dims as ${size}${header.codes}`;
  if (header.family === 'hnsw') return `${row} plus HNSW graph links`;
  if (header.family === 'ivf') return `${row} in ${core?.nlist === undefined ? '' : `${core.nlist} `}IVF lists`;
  return row;
}

/**
 * What the faiss host holds: `read_index` copies the file into the heap, except IVF lists opened
 * with IO_FLAG_MMAP, which are mapped (`mappedBytes`); a search pages in only the lists it probes.
 * Search buffers are per query (topk heaps, one BLAS block), small beside the index.
 */
function memoryPlan(path: string, header: FaissFileHeader, mapped: { bytes: number; core?: NativeDescription; nprobe?: number }): SearchMemoryPlan {
  const mappedBytes = mapped.bytes;
  const residentBytes = header.fileBytes - mappedBytes;
  return {
    indexPath: path,
    rowFormat: rowFormat(header, mapped.core),
    holding:
      header.family === 'flat'
        ? 'read into memory by the faiss backend'
        : `in an ${header.kind} read into memory by the faiss backend${mappedBytes > 0 ? ', its IVF lists mapped' : ''}`,
    devices: ['cpu'],
    perDevice: { rows: header.rows, vectorBytes: residentBytes, scoreBytes: 0 },
    hostRows: header.rows,
    hostMappedBytes: mappedBytes,
    // Only IVF lists are ever mapped, and only once faiss has read the index (nprobe and nlist known).
    mappedReads: mapped.core?.nlist === undefined ? 'none mapped' : `each query reading only the ${mapped.nprobe} of ${mapped.core.nlist} lists it probes`,
    hostAnonymousBytes: residentBytes,
  };
}

/** Bytes of the file faiss maps instead of reading: IVF lists opened with IO_FLAG_MMAP (codes + ids), which the kernel pages in and out. */
function mappedListBytes(header: FaissFileHeader, core: NativeDescription): number {
  if (!core.listsMapped || core.codeSize === undefined) return 0;
  return Math.min(header.fileBytes, header.rows * (core.codeSize + 8));
}

/** A FAISS index file of any type faiss reads, loaded in a faiss host process of its own. */
export class FaissIndex implements VectorIndex {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly info: FaissIndexInfo,
    private readonly host: FaissHost,
  ) {}

  get dimension(): number {
    return this.info.dimension;
  }

  get rows(): number {
    return this.info.rows;
  }

  get placement(): SearchPlacement {
    return { backend: 'faiss', sessions: [{ provider: 'cpu', precision: 'fp32', firstRow: 0, rows: this.rows }], index: this.info };
  }

  /** What opening it would hold, from the header alone: an IVF index's lists counted as read, the most they can take. */
  static plan(path: string, header: FaissFileHeader): SearchMemoryPlan {
    return memoryPlan(path, header, { bytes: 0 });
  }

  /**
   * Checks the header (kind, training, dimension, rows) and that the host can hold the index
   * (`checkSearchMemory`: the budget and the host's available memory), then loads the file and
   * sets the search parameters; any failure stops the host, so nothing stays loaded.
   */
  static async open(path: string, expect: IxfiExpectations = {}, options: FaissIndexOptions = {}): Promise<FaissIndex> {
    return FaissIndex.openChecked(path, await readFaissHeader(path, expect), options);
  }

  /** Opens `path`, whose header the caller has read and checked ({@link readFaissHeader}). */
  static async openChecked(path: string, header: FaissFileHeader, options: FaissIndexOptions = {}): Promise<FaissIndex> {
    const warn = options.warn ?? ((message: string) => process.emitWarning(message));
    const hostMemory = await readHostMemory(options.memoryFiles);
    const checkMemory = (mapped: Parameters<typeof memoryPlan>[2]): void => checkSearchMemory(memoryPlan(path, header, mapped), options.memoryBudgetBytes ?? 0, hostMemory, warn, options.encoderWeights);
    // Before faiss reads a byte; IVF lists are mapped, so their share of the file is known only once faiss has read the header.
    if (header.family !== 'ivf') checkMemory({ bytes: 0 });
    const host = FaissHost.start();
    try {
      let { description } = await host.request({ op: 'load', path, ioFlags: IO_FLAG_MMAP });
      if (description!.d !== header.dimension || description!.ntotal !== header.rows) {
        throw new ServiceError('internal', `index ${path}: FAISS read ${description!.ntotal}×${description!.d}, header says ${header.rows}×${header.dimension}`);
      }
      const loaded = description!.inner ?? description!;
      const mappedBytes = mappedListBytes(header, loaded);
      const parameters = searchParameters(header, loaded, options, warn);
      if (header.family === 'ivf') checkMemory({ bytes: mappedBytes, core: loaded, nprobe: parameters.nprobe ?? loaded.nprobe });
      if (Object.keys(parameters).length > 0) ({ description } = await host.request({ op: 'configure', parameters }));
      const core = description!.inner ?? description!;
      const info: FaissIndexInfo = {
        kind: header.kind,
        metric: header.metric,
        rows: header.rows,
        dimension: header.dimension,
        parameters: { efSearch: core.efSearch, efConstruction: core.efConstruction, M: core.M, nprobe: core.nprobe, nlist: core.nlist },
        ...(core.listsMapped !== undefined && { listsMapped: core.listsMapped }),
        residentBytes: header.fileBytes - mappedBytes,
      };
      return new FaissIndex(path, info, host);
    } catch (error) {
      await host.stop();
      if (error instanceof ServiceError && error.code === 'internal' && error.message.startsWith('faiss: ')) {
        // faiss's own reading error: the file is damaged (truncated, corrupt) or not what its header says.
        throw new ServiceError('bad_request', `index ${path} (${header.kind}) cannot be read by faiss: ${error.message.slice('faiss: '.length)}`, { indexPath: path });
      }
      throw error;
    }
  }

  async nearest(vectors: Float32Array, topk: number): Promise<VectorSearchResult> {
    if (this.closed) throw new ServiceError('internal', `index ${this.path} is closed`);
    // faiss-node throws when k exceeds ntotal.
    const { queries, k } = searchShape(this, vectors, topk);
    if (queries === 0 || k === 0) return { queries, topk: k, rowIndices: new Int32Array(0), scores: new Float32Array(0) };
    const { rowIndices, scores } = await this.host.request({ op: 'search', vectors, topk: k });
    // An IndexIDMap's ids are corpus rows: one past the corpus would send a row that does not exist.
    const beyond = rowIndices!.find((row) => row >= this.rows);
    if (beyond !== undefined) throw new ServiceError('internal', `index ${this.path} returned row ${beyond}, beyond its ${this.rows} rows`);
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
