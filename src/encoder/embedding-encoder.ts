import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { RetrieverManifest } from './manifest.js';

/**
 * One query as a caller states it. Agentic-R retrievers are queried with
 * `"{question} [SEP] {query}"`: a caller may pass that string pre-joined as `query`, or pass the
 * original `question` beside the sub-query and let the manifest's template join them.
 */
export interface QueryInput {
  query: string;
  question?: string;
}

/** Turns text into unit vectors with a model folder's manifest (prefixes, lengths, pooling). */
export interface EmbeddingEncoder {
  readonly manifest: RetrieverManifest;
  /** The provider that actually runs, after any fallback. */
  readonly provider: ExecutionProviderName;
  /** The ONNX file running, relative to the model folder (e.g. `model.int8.onnx`), where there is one. */
  readonly modelFile?: string;
  /** Row-major `inputs.length × dimension`. Adds the query prefix and composes Agentic-R input. */
  encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array>;
  /** Row-major `texts.length × dimension`. Adds the passage prefix; texts are corpus `contents`. */
  encodePassages(texts: readonly string[]): Promise<Float32Array>;
  close(): Promise<void>;
}
