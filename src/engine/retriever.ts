import { performance } from 'node:perf_hooks';
import { CorpusIds } from '../corpus/corpus-ids.js';
import type { CorpusRow } from '../corpus/corpus-row.js';
import { CorpusStore } from '../corpus/corpus-store.js';
import { encoderMemory, type EncoderMemory } from '../encoder/encoder-memory.js';
import type { EncoderOptions } from '../encoder/onnx-encoder.js';
import { WorkerEncoder } from '../encoder/worker-encoder.js';
import { openVectorIndex, type VectorIndexOptions } from '../index/open-index.js';
import { showBytes } from '../index/search-memory.js';
import type { EmbeddingEncoder, QueryInput } from '../encoder/embedding-encoder.js';
import type { VectorIndex } from '../index/vector-index.js';
import type { DocumentKeys, RetrievalResult, RetrieverInfo, SearchHit } from './types.js';

/** The three files a retriever version is made of. */
export interface RetrieverFiles {
  modelDir: string;
  indexPath: string;
  corpusPath: string;
  /** Where the corpus offsets sidecar lives; default beside the corpus. */
  sidecarPath?: string;
}

export interface RetrieverLoadOptions {
  version: string;
  encoder?: EncoderOptions;
  /** Search backend and device; default the ONNX backend on CPU. */
  index?: VectorIndexOptions;
  /**
   * Reports each loading stage, the step within it in words (what `/ready` shows a person waiting
   * on a wiki18-sized load) and, while the corpus is scanned or an fp16 copy built, the fraction done.
   */
  onStage?: (stage: string, progress?: number, step?: string) => void;
}

/** Questions a warm-up encodes so the first real request pays no first-run cost. */
const WARM_UP_QUERY: QueryInput = { question: 'who wrote hamlet?', query: 'hamlet author' };

/**
 * One immutable retriever version: an encoder, the index built with it, and the corpus whose
 * row i is index row i. Serving swaps whole versions; a version never changes under a request.
 */
export class Retriever {
  private readonly corpusIds: CorpusIds;

  private constructor(
    readonly version: string,
    readonly files: RetrieverFiles,
    readonly encoder: EmbeddingEncoder,
    readonly index: VectorIndex,
    readonly corpus: CorpusStore,
    /** What its encoder holds and where, as its load counted it against the budget. */
    readonly encoderMemory: EncoderMemory,
  ) {
    this.corpusIds = new CorpusIds(corpus);
  }

  /**
   * Loads, cross-checks (model dimension = index dimension, index rows = corpus rows) and warms
   * a version. Anything already opened is closed again when a later step fails.
   */
  static async load(files: RetrieverFiles, options: RetrieverLoadOptions): Promise<Retriever> {
    const stage = options.onStage ?? (() => undefined);
    const opened: { close(): Promise<void> }[] = [];
    try {
      stage('corpus', 0, 'opening the corpus and its row offsets');
      const corpus = await CorpusStore.open(files.corpusPath, {
        sidecarPath: files.sidecarPath,
        onProgress: (done, total) =>
          stage('corpus', total > 0 ? done / total : 1, `building the row offsets: ${showBytes(done)} of ${showBytes(total)} of the corpus scanned`),
      });
      opened.push(corpus);
      stage('encoder', undefined, 'loading the encoder');
      const encoder = await WorkerEncoder.load(files.modelDir, options.encoder);
      opened.push(encoder);
      stage('index', undefined, 'checking memory, opening the index');
      // The budget of a device the encoder shares with the index covers both, as a swap plans them.
      const encoderWeights = await encoderMemory(files.modelDir, encoder.manifest, encoder.provider, options.encoder ?? {}, encoder.modelFile);
      const index = await openVectorIndex(
        files.indexPath,
        { expectDimension: encoder.manifest.dimension, expectRows: corpus.rows },
        {
          ...options.index,
          encoderWeights,
          // Progress comes only while an fp16 copy of the vectors is built.
          onProgress: (done, total) => stage('index', done / total, `building the fp16 copy of the vectors: ${done} of ${total} values`),
        },
      );
      opened.push(index);
      const retriever = new Retriever(options.version, files, encoder, index, corpus, encoderWeights);
      // One scan of every row: with a cold page cache, the first read of the whole index file (README, start-up).
      stage('warm-up', undefined, `one search over all ${index.rows} rows (reads every page of the index)`);
      await retriever.encodeSearchFetch([WARM_UP_QUERY], 1);
      return retriever;
    } catch (error) {
      await Promise.allSettled(opened.reverse().map((part) => part.close()));
      throw error;
    }
  }

  /** One batch on this version: its queries encoded, the nearest index rows found, those rows fetched. */
  async encodeSearchFetch(inputs: readonly QueryInput[], topk: number): Promise<RetrievalResult> {
    // The batcher never sends an empty batch; a direct caller gets its answer without a round trip to the encoder worker.
    if (inputs.length === 0) return { hits: [], version: this.version, timings: { encodeMs: 0, searchMs: 0, fetchMs: 0 } };
    const started = performance.now();
    const vectors = await this.encoder.encodeQueries(inputs);
    const encoded = performance.now();
    const found = await this.index.nearest(vectors, topk);
    const searched = performance.now();
    // FAISS pads a query's list with -1 where it found fewer than k neighbours (an IVF index whose
    // probed lists hold fewer rows): that query's list is shorter, as there is no row to send.
    const documents = await this.corpus.readRows(Array.from(found.rowIndices).filter((rowIndex) => rowIndex >= 0));
    const fetched = performance.now();

    const hits: SearchHit[][] = [];
    let fetchedAt = 0;
    for (let query = 0; query < found.queries; query++) {
      const row: SearchHit[] = [];
      for (let rank = 0; rank < found.topk; rank++) {
        const at = query * found.topk + rank;
        if (found.rowIndices[at]! < 0) continue;
        row.push({ rowIndex: found.rowIndices[at]!, score: found.scores[at]!, document: documents[fetchedAt++]! });
      }
      hits.push(row);
    }
    return {
      hits,
      version: this.version,
      timings: { encodeMs: encoded - started, searchMs: searched - encoded, fetchMs: fetched - searched },
    };
  }

  /** Corpus rows by their `id` field or by row number, in the order asked; undefined where there is none. */
  async documents(keys: DocumentKeys): Promise<(CorpusRow | undefined)[]> {
    if (keys.by === 'id') return this.corpusIds.find(keys.ids);
    const present = keys.rows.filter((row) => row < this.corpus.rows);
    const rows = await this.corpus.readRows(present);
    let next = 0;
    return keys.rows.map((row) => (row < this.corpus.rows ? rows[next++] : undefined));
  }

  info(): RetrieverInfo {
    const { manifest } = this.encoder;
    return {
      version: this.version,
      modelName: manifest.name,
      modelDir: this.files.modelDir,
      manifest,
      dimension: manifest.dimension,
      provider: this.encoder.provider,
      ...(this.encoder.modelFile !== undefined && { modelFile: this.encoder.modelFile }),
      indexPath: this.files.indexPath,
      indexRows: this.index.rows,
      search: this.index.placement,
      corpusPath: this.files.corpusPath,
      corpusRows: this.corpus.rows,
    };
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.encoder.close(), this.index.close(), this.corpus.close()]);
  }
}
