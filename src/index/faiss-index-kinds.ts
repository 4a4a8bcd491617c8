import { ServiceError } from '../errors.js';
import { openRegularFile } from '../file-io.js';
import { checkIxfiHeader, type IxfiExpectations } from './ixfi-header.js';

/**
 * What a FAISS index file is, read from its first bytes before FAISS loads it (which can take
 * minutes and tens of GB). Every float index faiss writes starts with a fourcc and the common
 * header: `fourcc | int32 d | int64 ntotal | int64 2^20 | int64 2^20 | uint8 is_trained |
 * int32 metric | [float metric_arg when metric > 1]`; an IndexIDMap(2) is followed by the wrapped
 * index's own fourcc and header.
 */
const COMMON_HEADER_BYTES = 37;
const FAISS_DUMMY = 2n ** 20n;

/** How an index searches, which decides the search parameters that apply to it. */
export type FaissFamily = 'flat' | 'hnsw' | 'ivf' | 'scalar-quantizer' | 'product-quantizer' | 'other';

/** `codes`: what a row is stored as when not as fp32 vectors. */
const KINDS: Record<string, { name: string; family: FaissFamily; codes?: string }> = {
  IxFI: { name: 'IndexFlatIP', family: 'flat' },
  IxF2: { name: 'IndexFlatL2', family: 'flat' },
  IxFl: { name: 'IndexFlat', family: 'flat' },
  IHNf: { name: 'IndexHNSWFlat', family: 'hnsw' },
  IHNs: { name: 'IndexHNSWSQ', family: 'hnsw', codes: 'scalar-quantizer codes' },
  IHNp: { name: 'IndexHNSWPQ', family: 'hnsw', codes: 'PQ codes' },
  IHN2: { name: 'IndexHNSW2Level', family: 'hnsw', codes: 'two-level quantizer codes' },
  IwFl: { name: 'IndexIVFFlat', family: 'ivf' },
  IwFd: { name: 'IndexIVFFlatDedup', family: 'ivf' },
  IwPQ: { name: 'IndexIVFPQ', family: 'ivf', codes: 'PQ codes' },
  IwQR: { name: 'IndexIVFPQR', family: 'ivf', codes: 'PQ codes with refinement codes' },
  IwSq: { name: 'IndexIVFScalarQuantizer', family: 'ivf', codes: 'scalar-quantizer codes' },
  IxSQ: { name: 'IndexScalarQuantizer', family: 'scalar-quantizer', codes: 'scalar-quantizer codes' },
  IxPq: { name: 'IndexPQ', family: 'product-quantizer', codes: 'PQ codes' },
  IxPT: { name: 'IndexPreTransform', family: 'other', codes: 'the codes of a transformed index' },
  IxRF: { name: 'IndexRefineFlat', family: 'other', codes: 'base codes plus fp32 refinement vectors' },
};

const WRAPPERS: Record<string, string> = { IxMp: 'IndexIDMap', IxM2: 'IndexIDMap2' };

const METRIC_NAMES: Record<number, string> = { 0: 'inner_product', 1: 'l2' };

export interface FaissFileHeader {
  /** `IndexHNSWFlat`, or `IndexIDMap2(IndexHNSWFlat)` for a wrapped index. */
  kind: string;
  family: FaissFamily;
  /** What a row is stored as (`PQ codes`); absent for fp32 vectors. */
  codes?: string;
  /** The outer fourcc (`IHNf`, `IxM2`). */
  fourcc: string;
  dimension: number;
  rows: number;
  /** `inner_product`, `l2`, or `metric <n>` for the rarer ones. */
  metric: string;
  fileBytes: number;
}

/** The fourcc and common header at `offset` of `bytes`, or undefined when `bytes` is too short. */
function commonHeader(bytes: Buffer, offset: number) {
  if (bytes.length < offset + COMMON_HEADER_BYTES) return undefined;
  const metricType = bytes.readInt32LE(offset + 33);
  return {
    fourcc: bytes.toString('latin1', offset, offset + 4),
    dimension: bytes.readInt32LE(offset + 4),
    rows: bytes.readBigInt64LE(offset + 8),
    dummiesOk: bytes.readBigInt64LE(offset + 16) === FAISS_DUMMY && bytes.readBigInt64LE(offset + 24) === FAISS_DUMMY,
    isTrained: bytes.readUInt8(offset + 32) !== 0,
    metricType,
    bytes: COMMON_HEADER_BYTES + (metricType > 1 ? 4 : 0),
  };
}

/**
 * Reads and checks an index file's header: a known-looking FAISS header, trained, and the
 * dimension and row count the encoder and corpus expect. IxFI files get the exact-size checks of
 * {@link checkIxfiHeader}; other kinds are checked further by FAISS as it reads them.
 */
export async function readFaissHeader(path: string, expect: IxfiExpectations = {}): Promise<FaissFileHeader> {
  const fail = (why: string): ServiceError => new ServiceError('bad_request', `index ${path}: ${why}`, { indexPath: path });
  const file = await openRegularFile(path, 'index');
  let fileBytes: number;
  let bytes: Buffer;
  try {
    fileBytes = (await file.stat()).size;
    const { buffer, bytesRead } = await file.read(Buffer.alloc(2 * (COMMON_HEADER_BYTES + 4)), 0, 2 * (COMMON_HEADER_BYTES + 4), 0);
    bytes = buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
  const outer = commonHeader(bytes, 0);
  if (!outer) throw fail(`only ${fileBytes} bytes, shorter than a FAISS index header`);
  const wrapper = WRAPPERS[outer.fourcc];
  const inner = wrapper ? commonHeader(bytes, outer.bytes) : outer;
  const known = inner && KINDS[inner.fourcc];
  if (!known || !outer.dummiesOk || !inner.dummiesOk) {
    throw fail(`not a FAISS index this service reads (starts with ${JSON.stringify(outer.fourcc)}${wrapper && inner ? ` wrapping ${JSON.stringify(inner.fourcc)}` : ''})`);
  }
  const kind = wrapper ? `${wrapper}(${known.name})` : known.name;
  if (outer.fourcc === 'IxFI') checkIxfiHeader(path, bytes, fileBytes, expect);
  const rows = Number(outer.rows);
  if (outer.dimension <= 0 || rows < 0 || inner.dimension !== outer.dimension) throw fail(`corrupt ${kind} header (d ${outer.dimension}, ntotal ${rows})`);
  if (!outer.isTrained || !inner.isTrained) throw fail(`the ${kind} is not trained: train it before adding vectors (faiss would refuse to search it)`);
  if (expect.expectDimension !== undefined && outer.dimension !== expect.expectDimension) {
    throw fail(`${kind} dimension ${outer.dimension} does not match the encoder's dimension ${expect.expectDimension}`);
  }
  if (expect.expectRows !== undefined && rows !== expect.expectRows) {
    throw fail(`${kind} holds ${rows} vectors but the corpus has ${expect.expectRows} rows (index row i must be corpus line i)`);
  }
  return {
    kind,
    family: known.family,
    ...(known.codes !== undefined && { codes: known.codes }),
    fourcc: outer.fourcc,
    dimension: outer.dimension,
    rows,
    metric: METRIC_NAMES[outer.metricType] ?? `metric ${outer.metricType}`,
    fileBytes,
  };
}

/** What a loaded FAISS index is, as `/info`, `/ready` and the startup log show it. */
export interface FaissIndexInfo {
  kind: string;
  metric: string;
  rows: number;
  dimension: number;
  /** The search parameters in effect, and the HNSW/IVF shape they apply to. */
  parameters: { efSearch?: number; efConstruction?: number; M?: number; nprobe?: number; nlist?: number };
  /** The IVF lists are mapped from the file (IO_FLAG_MMAP), not read into memory. */
  listsMapped?: boolean;
  /** Estimated memory the index holds: the file, less any mapped lists. */
  residentBytes: number;
}
