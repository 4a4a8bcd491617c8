import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pathExists } from '../src/file-io.js';
import { IxfiWriter } from '../src/index/ixfi-writer.js';
import { workDir } from './bench-report.js';

/**
 * An IxFI file of pseudo-random unit vectors (xorshift, fixed seed), so every query's scores
 * differ row to row; kept in benchmarks/work and reused by later runs.
 */
export async function syntheticIndex(rows: number, dimension: number): Promise<string> {
  const file = path.join(workDir, `throughput-${rows}x${dimension}.index`);
  if (await pathExists(file)) return file;
  await mkdir(workDir, { recursive: true });
  const writer = await IxfiWriter.open(file, { dimension, rows, description: { benchmark: 'throughput', seed: 1 }, restart: true });
  let state = 0x9e3779b9;
  const blockRows = 4096;
  for (let done = 0; done < rows; done += blockRows) {
    const count = Math.min(blockRows, rows - done);
    const block = new Float32Array(count * dimension);
    for (let row = 0; row < count; row++) {
      let norm = 0;
      for (let d = 0; d < dimension; d++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        const value = (state >>> 0) / 2 ** 32 - 0.5;
        block[row * dimension + d] = value;
        norm += value * value;
      }
      const scale = 1 / Math.sqrt(norm);
      for (let d = 0; d < dimension; d++) block[row * dimension + d]! *= scale;
    }
    await writer.append(block);
  }
  await writer.finish();
  return file;
}
