import type { CrossEncoder } from '../encoder/cross-encoder.js';
import type { RerankerManifest } from '../encoder/manifest.js';
import type { CrossEncoderOptions } from '../encoder/onnx-cross-encoder.js';
import { WorkerCrossEncoder } from '../encoder/worker-cross-encoder.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import { PairBatcher, type PairBatching } from './pair-batcher.js';
import type { RerankObserver } from './types.js';

/** A passage as reranking reads it: a corpus row, or any object with the corpus's `contents`. */
export interface Passage {
  contents: string;
}

/** One query and the candidates it is reranked against: its own, never another query's. */
export interface RerankList<T extends Passage> {
  query: string;
  documents: readonly T[];
}

export interface Reranked<T extends Passage> {
  document: T;
  /** The cross-encoder's score (sigmoid of its logit by default), higher is better. */
  score: number;
}

/**
 * The text the cross-encoder reads for a passage, as Search-R1's rerank server builds it:
 * `(Title: {first line}) {the other lines}`; the title keeps its quotes, as wiki18 stores it.
 */
export function passageText(contents: string): string {
  const [title, ...text] = contents.split('\n');
  return `(Title: ${title}) ${text.join('\n')}`;
}

/** What `/info` says about the reranker. */
export interface RerankerInfo {
  modelDir: string;
  modelName: string;
  provider: ExecutionProviderName;
  modelFile: string;
  maxLength: number;
  activation: RerankerManifest['activation'];
}

/**
 * The server's one reranker: a cross-encoder in its worker thread behind a batcher that merges
 * concurrent requests. It is fixed for the server's life: a reranker reads text, not vectors, so a
 * hot-swapped retriever version (a new encoder and index) leaves its scores valid.
 */
export class PassageReranker {
  private readonly observers = new Set<RerankObserver>();
  private readonly batcher: PairBatcher;

  constructor(
    readonly modelDir: string,
    private readonly encoder: CrossEncoder,
    batching: PairBatching,
  ) {
    this.batcher = new PairBatcher(encoder, batching, {
      rerankBatch: (stats) => this.observers.forEach((observer) => observer.rerankBatch(stats)),
    });
  }

  static async load(modelDir: string, encoder: CrossEncoderOptions, batching: PairBatching): Promise<PassageReranker> {
    return new PassageReranker(modelDir, await WorkerCrossEncoder.load(modelDir, encoder), batching);
  }

  observe(observer: RerankObserver): void {
    this.observers.add(observer);
  }

  /**
   * Each list's documents scored against its own query, best first (ties keep their given
   * order, as Python's stable sort does in the reference), at most `topk` per list.
   */
  async rerank<T extends Passage>(lists: readonly RerankList<T>[], topk: number, signal?: AbortSignal): Promise<Reranked<T>[][]> {
    const pairs = lists.flatMap((list) => list.documents.map((document) => [list.query, passageText(document.contents)] as const));
    const scores = await this.batcher.score(pairs, signal);
    let offset = 0;
    return lists.map((list) => {
      const scored = list.documents.map((document, i) => ({ document, score: scores[offset + i]! }));
      offset += list.documents.length;
      return scored.sort((a, b) => b.score - a.score).slice(0, topk);
    });
  }

  info(): RerankerInfo {
    const { manifest } = this.encoder;
    return {
      modelDir: this.modelDir,
      modelName: manifest.name,
      provider: this.encoder.provider,
      modelFile: this.encoder.modelFile,
      maxLength: manifest.maxLength,
      activation: manifest.activation,
    };
  }

  async close(): Promise<void> {
    await this.encoder.close();
  }
}
