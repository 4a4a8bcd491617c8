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

/**
 * The text a model sees for one query: the manifest's query prefix, then Agentic-R's template
 * when the question is given separately, else the query as sent (possibly already joined). The
 * encoder encodes it and the batcher dedups and caches on it, so both must compose it here.
 */
export function composeQueryText(input: QueryInput, manifest: RetrieverManifest): string {
  const { question, query } = input;
  const body =
    question === undefined
      ? query
      : manifest.queryTemplate.replace(/\{(question|query)\}/g, (_, field: string) => (field === 'question' ? question : query));
  return manifest.queryPrefix + body;
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
