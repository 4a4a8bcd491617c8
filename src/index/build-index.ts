import type { CorpusStore } from '../corpus/corpus-store.js';
import type { EmbeddingEncoder } from '../encoder/embedding-encoder.js';
import { ServiceError } from '../errors.js';
import { partDescription, partTrailer, type IndexPartDescription } from './index-part.js';
import { IxfiWriter } from './ixfi-writer.js';
import type { RowRange } from './row-range.js';

export interface BuildIndexOptions {
  corpus: CorpusStore;
  /** Passages go through `encodePassages`, which adds the manifest's prefix and max length. */
  encoder: EmbeddingEncoder;
  outPath: string;
  /** Most passages per `encodePassages` call (the first calls are smaller). */
  batchSize: number;
  /** Rows done out of the corpus rows; first called with the rows a resumed build starts from. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Aborting stops at once, leaving the partial build for a later resume: a batch being encoded
   * is abandoned (its rows are not written); the caller stops the encoder's work.
   */
  signal?: AbortSignal;
  /** Discard a partial build of this `outPath` instead of resuming (or refusing) it. */
  restart?: boolean;
  /**
   * Encode only these rows, into an index part that `merge-index` joins with the others; the
   * part carries its rows, its encoder and its corpus. Absent: the whole corpus, into an index.
   */
  rows?: RowRange;
}

export interface BuildIndexResult {
  path: string;
  /** Rows in the file: the corpus's, or the part's. */
  rows: number;
  dimension: number;
  /** Tokens each passage was cut to, from the encoder's manifest (recorded so a resume cannot mix lengths). */
  maxPassageLength: number;
  /** Rows found in a partial build and kept; 0 for a fresh build. */
  resumedFrom: number;
  /** A part's corpus rows, present only for a part. */
  rowRange?: RowRange;
}

/**
 * Rows of the first batch; batches double from here up to the batch size, so the first progress
 * (and a rate) comes after seconds, not after a whole 64-passage batch on a CPU.
 */
const FIRST_BATCH_ROWS = 4;

/**
 * Encodes every corpus passage (or those of `rows`), in row order, into a FAISS IndexFlatIP file
 * at `outPath`. The file appears only when complete; a stopped build resumes from `<outPath>.partial`.
 */
export async function buildIndex(options: BuildIndexOptions): Promise<BuildIndexResult> {
  const { corpus, encoder, outPath, onProgress, signal } = options;
  if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
    throw new ServiceError('bad_request', `batch size must be a positive integer, got ${options.batchSize}`);
  }
  const dimension = encoder.manifest.dimension;
  const { start, end } = options.rows ?? { start: 0, end: corpus.rows };
  const rows = end - start;
  const part = options.rows && partDescription({ rows: { start, end }, corpusRows: corpus.rows, dimension, ...buildDescription(corpus, encoder) });
  const writer = await IxfiWriter.open(outPath, {
    dimension,
    rows,
    description: part ?? buildDescription(corpus, encoder),
    restart: options.restart,
    trailer: part && partTrailer(part),
  });
  try {
    onProgress?.(writer.rowsWritten, rows);
    let batch: string[] = [];
    let batchRows = Math.min(FIRST_BATCH_ROWS, options.batchSize);
    const flush = async (): Promise<void> => {
      signal?.throwIfAborted();
      const vectors = await untilAborted(encoder.encodePassages(batch), signal);
      if (vectors.length !== batch.length * dimension) {
        throw new ServiceError('internal', `encoder returned ${vectors.length} floats for ${batch.length} passages of dimension ${dimension}`);
      }
      await writer.append(vectors);
      batch = [];
      batchRows = Math.min(batchRows * 2, options.batchSize);
      onProgress?.(writer.rowsWritten, rows);
    };
    let rowIndex = start + writer.rowsWritten;
    for await (const contents of corpus.passages(rowIndex)) {
      if (rowIndex++ === end) break;
      batch.push(contents);
      if (batch.length === batchRows) await flush();
    }
    if (batch.length > 0) await flush();
    await writer.finish();
  } finally {
    await writer.close();
  }
  const result = { path: outPath, rows, dimension, maxPassageLength: encoder.manifest.maxPassageLength, resumedFrom: writer.resumedFrom };
  return options.rows ? { ...result, rowRange: { start, end } } : result;
}

/** What makes two builds' vectors interchangeable: the same encoder weights and passage settings, the same corpus bytes. */
function buildDescription(corpus: CorpusStore, encoder: EmbeddingEncoder): Pick<IndexPartDescription, 'encoder' | 'corpus'> {
  const { name, dimension, passagePrefix, maxPassageLength, pooling, normalize, files, provenance } = encoder.manifest;
  return {
    encoder: { name, dimension, passagePrefix, maxPassageLength, pooling, normalize, files, provenance },
    corpus: corpus.identity,
  };
}

/**
 * FlashRAG's name for an index of a model, `<model>_<faiss_type>.index` (`e5-base-v2_Flat.index`,
 * `e5-base-v2_HNSW64.index`), so users find the files they know.
 */
export function indexFileName(modelName: string, faissType = 'Flat'): string {
  return `${modelName.toLowerCase()}_${faissType}.index`;
}

/** `work`, or the signal's abort reason as soon as it aborts, whichever comes first. */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
