import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { RerankerManifest } from './manifest.js';

/** One (query, passage) pair as a cross-encoder reads it. */
export type TextPair = readonly [query: string, passage: string];

/** Scores (query, passage) pairs with a reranker folder's manifest (pair length, score activation). */
export interface CrossEncoder {
  readonly manifest: RerankerManifest;
  /** The provider that actually runs, after any fallback. */
  readonly provider: ExecutionProviderName;
  /** The ONNX file running, relative to the model folder. */
  readonly modelFile: string;
  /** One score per pair, in input order: the activation (sigmoid by default) of the classifier's logit. */
  score(pairs: readonly TextPair[]): Promise<Float32Array>;
  close(): Promise<void>;
}
