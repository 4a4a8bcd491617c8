import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { ServiceError } from '../errors.js';
import { readFully, syncDirectory, syncFile } from '../file-io.js';
import { readFaissHeader } from './faiss-index-kinds.js';
import { faissIndexClass, METRIC_INNER_PRODUCT, type NativeIndex } from './faiss-native.js';
import { IXFI_HEADER_BYTES, readIxfiHeader, type IxfiHeader } from './ixfi-header.js';

export interface ConvertIndexOptions {
  /** An inner-product Flat index (IxFI): ours, or FlashRAG's `<model>_Flat.index`. */
  sourcePath: string;
  outPath: string;
  /** A FlashRAG `--faiss_type`: any faiss index_factory string (`HNSW64`, `HNSW32,SQ8`, `IVF4096,PQ64`). */
  faissType: string;
  /** HNSW `efConstruction` (faiss's default: 40). */
  efConstruction?: number;
  /** Rows sampled to train IVF/PQ/SQ quantizers (default {@link DEFAULT_TRAIN_ROWS}, at most every row). */
  trainRows?: number;
  /** Seed of the training sample. */
  seed?: number;
  /** Rows read and added per faiss call. */
  batchRows?: number;
  /** Rows done of a stage: `sampling` (reading the training sample) or `adding`. */
  onProgress?: (stage: 'sampling' | 'adding', done: number, total: number) => void;
  /** Lines worth logging (training started, the file written). */
  log?: (line: string) => void;
  /** Aborting stops between batches; no file appears under `outPath`. */
  signal?: AbortSignal;
}

export interface ConvertIndexResult {
  path: string;
  faissType: string;
  kind: string;
  rows: number;
  dimension: number;
  /** Rows the quantizers were trained on; 0 for kinds that need no training (HNSW Flat). */
  trainRows: number;
  seconds: number;
}

/**
 * 256 points per centroid of IVF4096 (faiss's own subsampling cap, `max_points_per_centroid`):
 * enough for every factory string FlashRAG users name, and 3 GB at 768 dimensions.
 */
export const DEFAULT_TRAIN_ROWS = 256 * 4096;
const DEFAULT_BATCH_ROWS = 16_384;

/** `count` distinct row numbers below `rows`, drawn with `seed` (Floyd's algorithm), ascending. */
export function sampleRows(rows: number, count: number, seed: number): number[] {
  const rng = xoroshiro128plus(seed);
  const chosen = new Set<number>();
  for (let j = rows - count; j < rows; j++) {
    const t = uniformInt(rng, 0, j);
    chosen.add(chosen.has(t) ? j : t);
  }
  return [...chosen].sort((a, b) => a - b);
}

/** The rows of an IxFI file in order, `batchRows` at a time. */
async function* rowBatches(file: FileHandle, header: IxfiHeader, batchRows: number): AsyncGenerator<{ firstRow: number; vectors: Float32Array }> {
  for (let firstRow = 0; firstRow < header.rows; firstRow += batchRows) {
    const vectors = new Float32Array(Math.min(batchRows, header.rows - firstRow) * header.dimension);
    await readFully(file, new Uint8Array(vectors.buffer), IXFI_HEADER_BYTES + firstRow * header.dimension * 4);
    yield { firstRow, vectors };
  }
}

/** The sampled rows' vectors, gathered in one pass over the file. */
async function readSample(file: FileHandle, header: IxfiHeader, sample: readonly number[], options: ConvertIndexOptions): Promise<Float32Array> {
  const { dimension } = header;
  const out = new Float32Array(sample.length * dimension);
  let next = 0;
  for await (const { firstRow, vectors } of rowBatches(file, header, options.batchRows ?? DEFAULT_BATCH_ROWS)) {
    options.signal?.throwIfAborted();
    const end = firstRow + vectors.length / dimension;
    for (; next < sample.length && sample[next]! < end; next++) {
      const at = (sample[next]! - firstRow) * dimension;
      out.set(vectors.subarray(at, at + dimension), next * dimension);
    }
    options.onProgress?.('sampling', end, header.rows);
  }
  return out;
}

/**
 * An empty index of `faissType` (a factory string); throws faiss's own error for one faiss cannot
 * build. Inner product as FlashRAG builds every type (its index_builder passes METRIC_INNER_PRODUCT).
 */
export function factoryIndex(dimension: number, faissType: string): NativeIndex {
  return faissIndexClass().fromFactory(dimension, faissType, METRIC_INNER_PRODUCT);
}

function emptyIndex(header: IxfiHeader, options: ConvertIndexOptions): NativeIndex {
  let index: NativeIndex;
  try {
    index = factoryIndex(header.dimension, options.faissType);
  } catch (error) {
    throw new ServiceError('bad_request', `--faiss_type ${JSON.stringify(options.faissType)}: faiss cannot build it: ${(error as Error).message}`, { field: '--faiss_type' });
  }
  if (options.efConstruction !== undefined) {
    try {
      index.setParameter('efConstruction', options.efConstruction);
    } catch (error) {
      throw new ServiceError('bad_request', `--ef_construction: ${(error as Error).message} (--faiss_type ${options.faissType})`, { field: '--ef_construction' });
    }
  }
  return index;
}

/**
 * Builds any FAISS index type from the vectors of a Flat index, without re-encoding the corpus:
 * quantizers are trained on a seeded sample, then every row is added in order (row i stays
 * corpus line i). The index is written beside `outPath` and renamed into place once complete,
 * so a stopped or failed conversion leaves no file under the final name (and restarts from zero).
 */
export async function convertIndex(options: ConvertIndexOptions): Promise<ConvertIndexResult> {
  const started = performance.now();
  const header = await readIxfiHeader(options.sourcePath);
  const batchRows = options.batchRows ?? DEFAULT_BATCH_ROWS;
  if (!Number.isInteger(batchRows) || batchRows < 1) throw new ServiceError('bad_request', `batch rows must be a positive integer, got ${batchRows}`);
  const index = emptyIndex(header, options);
  const log = options.log ?? (() => undefined);
  let trainRows = 0;
  const file = await open(options.sourcePath, 'r');
  try {
    if (!index.describe().isTrained) {
      trainRows = Math.min(header.rows, options.trainRows ?? DEFAULT_TRAIN_ROWS);
      const sample = await readSample(file, header, sampleRows(header.rows, trainRows, options.seed ?? 0), options);
      log(`training ${options.faissType} on ${trainRows} sampled rows (seed ${options.seed ?? 0})`);
      index.trainVectors(sample);
    }
    for await (const { firstRow, vectors } of rowBatches(file, header, batchRows)) {
      options.signal?.throwIfAborted();
      index.addVectors(vectors);
      options.onProgress?.('adding', firstRow + vectors.length / header.dimension, header.rows);
    }
  } finally {
    await file.close();
  }
  options.signal?.throwIfAborted();
  const staging = `${options.outPath}.converting`;
  try {
    index.write(staging);
    // faiss writes through stdio without fsync: a crash after the rename could leave a torn index under its final name.
    await syncFile(staging);
    await rename(staging, options.outPath);
  } finally {
    await rm(staging, { force: true });
  }
  await syncDirectory(dirname(options.outPath));
  const written = await readFaissHeader(options.outPath, { expectDimension: header.dimension, expectRows: header.rows });
  log(`wrote ${written.kind} ${options.outPath}`);
  return {
    path: options.outPath,
    faissType: options.faissType,
    kind: written.kind,
    rows: header.rows,
    dimension: header.dimension,
    trainRows,
    seconds: (performance.now() - started) / 1000,
  };
}
