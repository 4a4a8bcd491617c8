import { open, type FileHandle } from 'node:fs/promises';
import { corpusIdentity, type CorpusIdentity } from '../corpus/offsets-sidecar.js';
import { ServiceError } from '../errors.js';
import { readFully, writeFileAtomicallyWith, writeFully } from '../file-io.js';
import { float32ToFloat16 } from '../onnx/half-precision.js';
import { IXFI_HEADER_BYTES, type IxfiHeader } from './ixfi-header.js';

/**
 * A half-precision copy of an IxFI file's vectors, for search on GPUs (wiki18: 32 GB instead of
 * 64 GB). Like the corpus offsets sidecar it records the identity (size, mtime, fingerprint) of
 * the file it was made from and is rebuilt when that file changes.
 *
 * Layout, little-endian: `"IXFIF16\0" | uint32 version | uint32 dimension | float64 rows |
 * float64 indexSize | float64 indexMtimeMs | 32-byte fingerprint | zeros up to byte 128 |
 * float16[rows × dimension]`; the data starts 128-byte aligned.
 */
const MAGIC = 'IXFIF16\0';
const VERSION = 1;
export const FP16_DATA_OFFSET = 128;
/** Rows converted per read: 16 Mi floats, 64 MB read and 32 MB written at a time. */
const CHUNK_FLOATS = 16 * 2 ** 20;

export function fp16SidecarPath(indexPath: string): string {
  return `${indexPath}.fp16`;
}

export function fp16SidecarBytes({ dimension, rows }: IxfiHeader): number {
  return FP16_DATA_OFFSET + rows * dimension * 2;
}

function encodeHeader(shape: IxfiHeader, identity: CorpusIdentity): Buffer {
  const header = Buffer.alloc(FP16_DATA_OFFSET);
  header.write(MAGIC, 0, 'latin1');
  header.writeUInt32LE(VERSION, 8);
  header.writeUInt32LE(shape.dimension, 12);
  header.writeDoubleLE(shape.rows, 16);
  header.writeDoubleLE(identity.size, 24);
  header.writeDoubleLE(identity.mtimeMs, 32);
  header.write(identity.fingerprint, 40, 'hex');
  return header;
}

/** Whether the sidecar exists, is whole, and was made from exactly this index state. */
async function isCurrent(sidecarPath: string, shape: IxfiHeader, identity: CorpusIdentity): Promise<boolean> {
  let file: FileHandle;
  try {
    file = await open(sidecarPath, 'r');
  } catch {
    return false;
  }
  try {
    if ((await file.stat()).size !== fp16SidecarBytes(shape)) return false;
    const header = Buffer.alloc(FP16_DATA_OFFSET);
    await readFully(file, header, 0);
    return header.equals(encodeHeader(shape, identity));
  } finally {
    await file.close();
  }
}

/**
 * The header that makes a sidecar current for the index file as it is now: for a copy written by
 * other means than {@link ensureFp16Sidecar} (the GPU check writes synthetic fp16 vectors directly).
 */
export async function fp16SidecarHeader(indexPath: string, shape: IxfiHeader): Promise<Buffer> {
  const index = await open(indexPath, 'r');
  try {
    return encodeHeader(shape, await corpusIdentity(index));
  } finally {
    await index.close();
  }
}

/** Values converted so far out of all. */
type ConversionProgress = (done: number, total: number) => void;

/**
 * Makes sure `sidecarPath` holds the current fp16 copy of the index's vectors, converting them
 * (about 7 s per fp32 GB on one core of the development box; run it off the event loop) when it is missing or stale. Written beside the
 * target and renamed, so a crash midway leaves no sidecar that looks whole. Returns whether it built.
 */
export async function ensureFp16Sidecar(
  indexPath: string,
  sidecarPath: string,
  shape: IxfiHeader,
  onProgress?: ConversionProgress,
): Promise<boolean> {
  const index = await open(indexPath, 'r');
  try {
    const identity = await corpusIdentity(index);
    if (await isCurrent(sidecarPath, shape, identity)) return false;
    try {
      await writeFileAtomicallyWith(sidecarPath, async (out) => {
        await writeFully(out, encodeHeader(shape, identity), 0);
        const total = shape.rows * shape.dimension;
        for (let done = 0; done < total; ) {
          const floats = new Float32Array(Math.min(CHUNK_FLOATS, total - done));
          await readFully(index, new Uint8Array(floats.buffer), IXFI_HEADER_BYTES + done * 4);
          await writeFully(out, float32ToFloat16(floats), FP16_DATA_OFFSET + done * 2);
          done += floats.length;
          onProgress?.(done, total);
        }
      });
    } catch (error) {
      throw new ServiceError('internal', `cannot write the fp16 copy of ${indexPath} to ${sidecarPath}: ${(error as Error).message}`);
    }
    return true;
  } finally {
    await index.close();
  }
}
