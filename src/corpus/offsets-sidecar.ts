import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { ServiceError } from '../errors.js';
import { openRegularFile, readFully, writeFileAtomically } from '../file-io.js';

/**
 * The persisted line index of a JSONL corpus: `rows + 1` byte offsets, `offsets[i]` the start of
 * line i and `offsets[rows]` the end of the file, so line i spans `[offsets[i], offsets[i+1])`
 * including its newline. Offsets are stored as float64 (exact below 2^53 bytes) so that loading
 * is one read straight into a Float64Array, with no per-row conversion.
 *
 * File layout, little-endian:
 * `"JSONLOFS" | uint32 version | uint32 0 | float64 corpusSize | float64 corpusMtimeMs |
 *  32-byte fingerprint | float64 rows | float64[rows + 1] offsets`
 */
const MAGIC = 'JSONLOFS';
const VERSION = 1;
const HEADER_BYTES = 8 + 4 + 4 + 8 + 8 + 32 + 8;
const FINGERPRINT_SPAN = 64 * 1024;
const SCAN_CHUNK = 16 * 1024 * 1024;
const NEWLINE = 0x0a;

/** What identifies one state of a corpus file: a sidecar is valid only for the same identity. */
export interface CorpusIdentity {
  size: number;
  mtimeMs: number;
  /** sha256 (hex) of the size, the first and the last 64 KiB of the file. */
  fingerprint: string;
}

/** Bytes scanned so far out of the corpus size. */
export type ScanProgress = (bytesDone: number, bytesTotal: number) => void;

export async function corpusIdentity(file: FileHandle): Promise<CorpusIdentity> {
  const stat = await file.stat();
  const hash = createHash('sha256');
  hash.update(String(stat.size));
  const head = Buffer.alloc(Math.min(FINGERPRINT_SPAN, stat.size));
  await readFully(file, head, 0);
  hash.update(head);
  const tailStart = Math.max(0, stat.size - FINGERPRINT_SPAN);
  const tail = Buffer.alloc(stat.size - tailStart);
  await readFully(file, tail, tailStart);
  hash.update(tail);
  return { size: stat.size, mtimeMs: stat.mtimeMs, fingerprint: hash.digest('hex') };
}

export function sameIdentity(a: CorpusIdentity, b: CorpusIdentity): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.fingerprint === b.fingerprint;
}

/**
 * Line start offsets by one sequential pass. A final line without a newline is a row; the empty
 * "line" after a trailing newline is not.
 */
export async function scanLineOffsets(file: FileHandle, size: number, onProgress?: ScanProgress): Promise<Float64Array> {
  let offsets = new Float64Array(Math.max(1024, Math.ceil(size / 512)));
  let count = 0;
  const push = (offset: number): void => {
    if (count === offsets.length) {
      const grown = new Float64Array(offsets.length * 2);
      grown.set(offsets);
      offsets = grown;
    }
    offsets[count++] = offset;
  };
  if (size > 0) push(0);
  const chunk = Buffer.allocUnsafe(SCAN_CHUNK);
  for (let position = 0; position < size; ) {
    const { bytesRead } = await file.read(chunk, 0, Math.min(SCAN_CHUNK, size - position), position);
    if (bytesRead === 0) throw new ServiceError('conflict', `corpus shrank while its offsets were being built, at byte ${position}`);
    const view = chunk.subarray(0, bytesRead);
    for (let at = view.indexOf(NEWLINE); at !== -1; at = view.indexOf(NEWLINE, at + 1)) {
      const next = position + at + 1;
      if (next < size) push(next);
    }
    position += bytesRead;
    onProgress?.(position, size);
  }
  push(size);
  return offsets.slice(0, count);
}

/** The sidecar's offsets if it exists and describes exactly this corpus identity, else undefined. */
export async function readSidecar(sidecarPath: string, identity: CorpusIdentity): Promise<Float64Array | undefined> {
  let file: FileHandle;
  try {
    file = await openRegularFile(sidecarPath, 'offsets sidecar');
  } catch {
    return undefined;
  }
  try {
    const { size } = await file.stat();
    if (size < HEADER_BYTES) return undefined;
    const header = Buffer.alloc(HEADER_BYTES);
    await readFully(file, header, 0);
    if (header.toString('latin1', 0, 8) !== MAGIC || header.readUInt32LE(8) !== VERSION) return undefined;
    const stored: CorpusIdentity = {
      size: header.readDoubleLE(16),
      mtimeMs: header.readDoubleLE(24),
      fingerprint: header.toString('hex', 32, 64),
    };
    if (!sameIdentity(stored, identity)) return undefined;
    const rows = header.readDoubleLE(64);
    if (size !== HEADER_BYTES + (rows + 1) * 8) return undefined;
    const offsets = new Float64Array(rows + 1);
    await readFully(file, new Uint8Array(offsets.buffer), HEADER_BYTES);
    return offsets;
  } finally {
    await file.close();
  }
}

export async function writeSidecar(sidecarPath: string, identity: CorpusIdentity, offsets: Float64Array): Promise<void> {
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(MAGIC, 0, 'latin1');
  header.writeUInt32LE(VERSION, 8);
  header.writeDoubleLE(identity.size, 16);
  header.writeDoubleLE(identity.mtimeMs, 24);
  header.write(identity.fingerprint, 32, 'hex');
  header.writeDoubleLE(offsets.length - 1, 64);
  try {
    await writeFileAtomically(sidecarPath, [header, new Uint8Array(offsets.buffer, offsets.byteOffset, offsets.byteLength)]);
  } catch (error) {
    throw new ServiceError('internal', `cannot write corpus offsets sidecar ${sidecarPath} (give a sidecar path in a writable folder): ${(error as Error).message}`);
  }
}
