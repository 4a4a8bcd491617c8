import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { float32ToFloat16 } from '../src/onnx/half-precision.js';
import { writeFully } from '../src/file-io.js';
import { FP16_DATA_OFFSET, fp16SidecarBytes, fp16SidecarHeader, fp16SidecarPath } from '../src/index/fp16-sidecar.js';
import { writeSparseIndex } from '../test/support/index-fixtures.js';

export interface SyntheticFp16Index {
  indexPath: string;
  fp16Path: string;
  rows: number;
  /** Bytes of fp16 vectors written. */
  bytes: number;
  seconds: number;
}

/**
 * A search index of up to `rows` synthetic vectors for timing fp16 search at sizes whose fp32 file
 * does not fit the disk (wiki18: 64.6 GB in fp32, 32.3 GB in fp16), written in a fraction of the
 * time a conversion takes: the fp16 copy is written directly and the IxFI file it belongs to is
 * sparse, so only what reads the fp32 file (rescoring, a CPU fallback) sees zeros. Rows are
 * blocks of `pool` (unit vectors), the first as it is, each later one under its own random sign
 * flip of every dimension: an orthogonal map, so rows stay unit vectors and differ block to block. Writing stops at
 * `rows` or at `deadlineMs` (epoch ms), whichever comes first; the index holds what was written.
 */
export async function writeSyntheticFp16Index(dir: string, pool: Float32Array, dimension: number, rows: number, deadlineMs: number): Promise<SyntheticFp16Index> {
  if (dimension % 2 !== 0) throw new Error(`dimension ${dimension} is odd: sign masks flip two fp16 values per 32-bit word`);
  const start = Date.now();
  const indexPath = path.join(dir, `gpu-check-fp16-${dimension}.index`);
  const fp16Path = fp16SidecarPath(indexPath);
  const wordsPerRow = dimension / 2;
  const poolRows = pool.length / dimension;
  const half = float32ToFloat16(pool);
  const poolWords = new Uint32Array(half.buffer, half.byteOffset, half.byteLength / 4);
  // Two buffers: one block is filled while the other is being written.
  const buffers = [new Uint32Array(poolWords.length), new Uint32Array(poolWords.length)];
  const mask = new Uint32Array(wordsPerRow);
  let state = 0x2545f491;
  let written = 0;
  let pending = Promise.resolve();
  const out = await open(fp16Path, 'w');
  try {
    for (let block = 0; written < rows && Date.now() < deadlineMs; block++) {
      const count = Math.min(poolRows, rows - written);
      for (let word = 0; word < wordsPerRow; word++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        mask[word] = block === 0 ? 0 : state & 0x80008000;
      }
      const buffer = buffers[block % 2]!;
      for (let row = 0; row < count; row++) {
        const base = row * wordsPerRow;
        for (let word = 0; word < wordsPerRow; word++) buffer[base + word] = poolWords[base + word]! ^ mask[word]!;
      }
      await pending;
      pending = writeFully(out, new Uint8Array(buffer.buffer, 0, count * wordsPerRow * 4), FP16_DATA_OFFSET + written * dimension * 2);
      written += count;
    }
    await pending;
    const shape = { dimension, rows: written };
    await writeSparseIndex(indexPath, shape);
    await writeFully(out, await fp16SidecarHeader(indexPath, shape), 0);
    await out.truncate(fp16SidecarBytes(shape));
  } catch (error) {
    await Promise.all([rm(indexPath, { force: true }), rm(fp16Path, { force: true })]);
    throw error;
  } finally {
    await out.close();
  }
  return { indexPath, fp16Path, rows: written, bytes: written * dimension * 2, seconds: (Date.now() - start) / 1e3 };
}
