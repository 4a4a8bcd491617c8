import { execFileSync } from 'node:child_process';
import { open } from 'node:fs/promises';
import { seededNormal } from '../../src/encoder/weights.js';
import { writeFully } from '../../src/file-io.js';
import { encodeIxfiHeader, ixfiFileBytes, type IxfiHeader } from '../../src/index/ixfi-header.js';

/** Debian's python with faiss and numpy (the `python3` on PATH lacks them). */
const DEBIAN_PYTHON = '/usr/bin/python3';

/** Runs a python script with `faiss` and `numpy as np` imported; `sys.argv[1:]` are `args`. */
export function runPython(script: string, ...args: string[]): string {
  return execFileSync(DEBIAN_PYTHON, ['-c', `import sys, faiss, numpy as np\n${script}`, ...args], { encoding: 'utf8' });
}

/**
 * Python for {@link runPython} scripts: `clustered(rng, rows, d)` draws unit vectors around 60
 * random centers, the shape of real passage embeddings, where HNSW and IVF recall means something
 * (on uniform random vectors it does not); `near(rng, x, n)` draws queries close to rows of `x`.
 */
export const CLUSTERED_PY = `
def clustered(rng, rows, d):
    centers = rng.standard_normal((60, d)).astype('float32')
    x = centers[rng.integers(0, 60, rows)] + 0.35 * rng.standard_normal((rows, d)).astype('float32')
    faiss.normalize_L2(x)
    return x

def near(rng, x, n):
    q = x[rng.integers(0, len(x), n)] + 0.2 * rng.standard_normal((n, x.shape[1])).astype('float32')
    faiss.normalize_L2(q)
    return q
`;

/** Fills `vector` with a unit-length Gaussian draw: the same seed always gives the same vector. */
export function fillUnitGaussian(vector: Float32Array, seed: number): void {
  const normal = seededNormal(seed);
  for (let i = 0; i < vector.length; i++) vector[i] = normal();
  const norm = Math.hypot(...vector);
  for (let i = 0; i < vector.length; i++) vector[i]! /= norm;
}

/** Row-major unit vectors, so scores are cosines as in a real index. */
export function unitVectors(rows: number, dimension: number, seed: number): Float32Array {
  const vectors = new Float32Array(rows * dimension);
  for (let row = 0; row < rows; row++) fillUnitGaussian(vectors.subarray(row * dimension, (row + 1) * dimension), seed * 1_000_003 + row);
  return vectors;
}

/** Exhaustive inner-product ranking, best first: the answer a Flat IP index must give. */
export function bruteForceTopk(base: Float32Array, queries: Float32Array, dimension: number, topk: number): { rowIndices: number[]; scores: number[] } {
  const rows = base.length / dimension;
  const rowIndices: number[] = [];
  const scores: number[] = [];
  for (let q = 0; q < queries.length / dimension; q++) {
    const scored = Array.from({ length: rows }, (_, row) => {
      let dot = 0;
      for (let i = 0; i < dimension; i++) dot += base[row * dimension + i]! * queries[q * dimension + i]!;
      return { row, dot };
    }).sort((a, b) => b.dot - a.dot);
    for (const { row, dot } of scored.slice(0, topk)) {
      rowIndices.push(row);
      scores.push(dot);
    }
  }
  return { rowIndices, scores };
}

export function floatBytes(vectors: Float32Array): Buffer {
  return Buffer.from(vectors.buffer, vectors.byteOffset, vectors.byteLength);
}

/**
 * A sparse IxFI file: a valid header, then `rows × dimension` floats that read as zeros and take no
 * disk space, for sizes (wiki18's 64.6 GB) that neither a disk nor a test run could write.
 */
export async function writeSparseIndex(file: string, shape: IxfiHeader): Promise<void> {
  const index = await open(file, 'w');
  try {
    await writeFully(index, encodeIxfiHeader(shape), 0);
    await index.truncate(ixfiFileBytes(shape));
  } finally {
    await index.close();
  }
}
