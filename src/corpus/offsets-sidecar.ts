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
 *  32-byte fingerprint | float64 rows | float64[rows + 1] offsets`; other sidecars of a corpus
 * share the header, with their own magic and count (see {@link SidecarFormat}).
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

/** What tells one kind of corpus sidecar from another: its first 8 bytes and its format version. */
export interface SidecarFormat {
  magic: string;
  version: number;
  /** How many 8-byte entries follow the header for the count it records. */
  entries(count: number): number;
}

const OFFSETS_FORMAT: SidecarFormat = { magic: MAGIC, version: VERSION, entries: (rows) => rows + 1 };

/**
 * The payload of a sidecar of `format` if it exists and describes exactly this corpus identity,
 * else undefined. `allocate` makes an array of the entries its header's count calls for, once the
 * file's size is found to hold exactly those.
 */
export async function readCorpusSidecar<Payload extends Float64Array | BigUint64Array>(
  sidecarPath: string,
  format: SidecarFormat,
  identity: CorpusIdentity,
  allocate: (entries: number) => Payload,
): Promise<Payload | undefined> {
  let file: FileHandle;
  try {
    file = await openRegularFile(sidecarPath, 'corpus sidecar');
  } catch {
    return undefined;
  }
  try {
    const { size } = await file.stat();
    if (size < HEADER_BYTES) return undefined;
    const header = Buffer.alloc(HEADER_BYTES);
    await readFully(file, header, 0);
    if (header.toString('latin1', 0, 8) !== format.magic || header.readUInt32LE(8) !== format.version) return undefined;
    const stored: CorpusIdentity = {
      size: header.readDoubleLE(16),
      mtimeMs: header.readDoubleLE(24),
      fingerprint: header.toString('hex', 32, 64),
    };
    if (!sameIdentity(stored, identity)) return undefined;
    const entries = format.entries(header.readDoubleLE(64));
    if (size !== HEADER_BYTES + entries * 8) return undefined;
    const payload = allocate(entries);
    await readFully(file, new Uint8Array(payload.buffer), HEADER_BYTES);
    return payload;
  } finally {
    await file.close();
  }
}

/** Writes a sidecar of `format` for this corpus identity atomically; `what` names it in the error. */
export async function writeCorpusSidecar(
  sidecarPath: string,
  format: SidecarFormat,
  identity: CorpusIdentity,
  count: number,
  payload: Float64Array | BigUint64Array,
  what: string,
): Promise<void> {
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(format.magic, 0, 'latin1');
  header.writeUInt32LE(format.version, 8);
  header.writeDoubleLE(identity.size, 16);
  header.writeDoubleLE(identity.mtimeMs, 24);
  header.write(identity.fingerprint, 32, 'hex');
  header.writeDoubleLE(count, 64);
  try {
    await writeFileAtomically(sidecarPath, [header, new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)]);
  } catch (error) {
    throw new ServiceError('internal', `cannot write ${what} ${sidecarPath} (give a sidecar path in a writable folder): ${(error as Error).message}`);
  }
}

/** The sidecar's offsets if it exists and describes exactly this corpus identity, else undefined. */
export function readSidecar(sidecarPath: string, identity: CorpusIdentity): Promise<Float64Array | undefined> {
  return readCorpusSidecar(sidecarPath, OFFSETS_FORMAT, identity, (entries) => new Float64Array(entries));
}

export function writeSidecar(sidecarPath: string, identity: CorpusIdentity, offsets: Float64Array): Promise<void> {
  return writeCorpusSidecar(sidecarPath, OFFSETS_FORMAT, identity, offsets.length - 1, offsets, 'corpus offsets sidecar');
}
