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
 * Python for {@link runPython} scripts: `clustered(rng, rows, d, nq)` draws `rows` unit vectors
 * and `nq` queries from one mixture shaped like passage embeddings, so that recall measures the
 * index: clusters (one per 250 rows) of varied spread that overlap, each point a center plus a
 * draw from a shared 32-dimensional subspace plus a little noise in all `d`. The low intrinsic
 * dimension makes near neighbours distinct (on uniform random vectors, or on tight clusters of
 * near-equidistant points, the exact top 10 is a near-tie and HNSW recall means nothing); queries
 * are fresh draws, not copies of rows. Generated in float32 so 1M rows fit in memory.
 */
export const CLUSTERED_PY = `
def clustered(rng, rows, d, nq=0):
    k, rank = max(16, rows // 250), 32
    centers = rng.standard_normal((k, d), dtype=np.float32)
    spread = np.exp(rng.uniform(np.log(0.5), np.log(2.0), k)).astype(np.float32)
    basis = rng.standard_normal((rank, d), dtype=np.float32) / np.float32(np.sqrt(rank))
    def draw(n):
        labels = rng.integers(0, k, n)
        v = centers[labels]
        v += (spread[labels, None] * rng.standard_normal((n, rank), dtype=np.float32)) @ basis
        v += np.float32(0.05) * rng.standard_normal((n, d), dtype=np.float32)
        faiss.normalize_L2(v)
        return v
    return draw(rows), draw(nq)
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
