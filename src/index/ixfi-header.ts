import type { FileHandle } from 'node:fs/promises';
import { openRegularFile, readFully } from '../file-io.js';
import { ServiceError } from '../errors.js';

/**
 * FAISS `IndexFlat` files with the inner-product metric, as `faiss.write_index` writes them:
 * `"IxFI" | int32 d | int64 ntotal | int64 2^20 | int64 2^20 | uint8 is_trained |
 *  int32 metric | uint64 ntotal*d | float32[ntotal*d]`, little-endian.
 */
export const IXFI_HEADER_BYTES = 45;
const FAISS_DUMMY = 2 ** 20;
const METRIC_INNER_PRODUCT = 0;
const FLAT_FOURCC: Record<string, string> = {
  IxF2: 'an IndexFlatL2 (L2 metric)',
  IxFl: 'an IndexFlat with a metric other than inner product or L2',
};

export interface IxfiHeader {
  dimension: number;
  rows: number;
}

export interface IxfiExpectations {
  /** The encoder's output dimension. */
  expectDimension?: number;
  /** The corpus row count: index row i must be corpus line i. */
  expectRows?: number;
}

export function encodeIxfiHeader({ dimension, rows }: IxfiHeader): Buffer {
  const header = Buffer.alloc(IXFI_HEADER_BYTES);
  header.write('IxFI', 0, 'latin1');
  header.writeInt32LE(dimension, 4);
  header.writeBigInt64LE(BigInt(rows), 8);
  header.writeBigInt64LE(BigInt(FAISS_DUMMY), 16);
  header.writeBigInt64LE(BigInt(FAISS_DUMMY), 24);
  header.writeUInt8(1, 32);
  header.writeInt32LE(METRIC_INNER_PRODUCT, 33);
  header.writeBigUInt64LE(BigInt(rows) * BigInt(dimension), 37);
  return header;
}

export function ixfiFileBytes({ dimension, rows }: IxfiHeader): number {
  return IXFI_HEADER_BYTES + rows * dimension * 4;
}

/**
 * Checks an index file before FAISS reads it: faiss-node answers a bad file with an unusable
 * index (or reads an L2 file happily and searches by distance), so every mismatch is caught here.
 */
export async function readIxfiHeader(path: string, expect: IxfiExpectations = {}): Promise<IxfiHeader> {
  const file = await openRegularFile(path, 'index');
  try {
    return await readIxfiHeaderOf(file, path, (await file.stat()).size, expect);
  } finally {
    await file.close();
  }
}

/**
 * {@link readIxfiHeader} of an open file whose IxFI bytes end at `size` (an index part carries
 * its description after them); `path` names it in errors.
 */
export async function readIxfiHeaderOf(file: FileHandle, path: string, size: number, expect: IxfiExpectations = {}): Promise<IxfiHeader> {
  const bytes = Buffer.alloc(IXFI_HEADER_BYTES);
  if (size >= IXFI_HEADER_BYTES) await readFully(file, bytes, 0);
  return checkIxfiHeader(path, bytes, size, expect);
}

/**
 * {@link readIxfiHeader}'s checks on a file's first bytes (at least {@link IXFI_HEADER_BYTES} of
 * them when the file has that many) and its size, for a caller that has read them already.
 */
export function checkIxfiHeader(path: string, bytes: Buffer, size: number, expect: IxfiExpectations = {}): IxfiHeader {
  const fail = (why: string): ServiceError => new ServiceError('bad_request', `index ${path}: ${why}`, { indexPath: path });
  if (size < IXFI_HEADER_BYTES) throw fail(`only ${size} bytes, shorter than a FAISS IndexFlat header`);
  const fourcc = bytes.toString('latin1', 0, 4);
  if (fourcc !== 'IxFI') {
    const known = FLAT_FOURCC[fourcc];
    throw fail(known ? `is ${known}, not an inner-product IndexFlatIP ("IxFI")` : `not a FAISS IndexFlatIP file (starts with ${JSON.stringify(fourcc)}, expected "IxFI")`);
  }
  const dimension = bytes.readInt32LE(4);
  const rows = Number(bytes.readBigInt64LE(8));
  const metric = bytes.readInt32LE(33);
  if (
    bytes.readBigInt64LE(16) !== BigInt(FAISS_DUMMY) ||
    bytes.readBigInt64LE(24) !== BigInt(FAISS_DUMMY) ||
    dimension <= 0 ||
    rows < 0
  ) {
    throw fail('corrupt IxFI header');
  }
  if (metric !== METRIC_INNER_PRODUCT) throw fail(`metric ${metric} is not inner product (0)`);
  if (bytes.readBigUInt64LE(37) !== BigInt(rows) * BigInt(dimension)) {
    throw fail(`vector count ${bytes.readBigUInt64LE(37)} does not match ${rows} rows × ${dimension}`);
  }
  const expected = ixfiFileBytes({ dimension, rows });
  if (size < expected) throw fail(`truncated: ${size} bytes, ${rows} rows × ${dimension} need ${expected}`);
  if (size > expected) {
    throw fail(`${size - expected} unexpected bytes after ${rows} rows × ${dimension} (a part from build-index --rows or --shard? merge-index joins parts into an index)`);
  }
  if (expect.expectDimension !== undefined && dimension !== expect.expectDimension) {
    throw fail(`dimension ${dimension} does not match the encoder's dimension ${expect.expectDimension}`);
  }
  if (expect.expectRows !== undefined && rows !== expect.expectRows) {
    throw fail(`${rows} rows but the corpus has ${expect.expectRows} rows (index row i must be corpus line i)`);
  }
  return { dimension, rows };
}
