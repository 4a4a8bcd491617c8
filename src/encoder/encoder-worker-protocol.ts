import type { FailedReply, SerializedError } from '../threads/replies.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { TextPair } from './cross-encoder.js';
import type { QueryInput } from './embedding-encoder.js';
import type { RerankerManifest, RetrieverManifest } from './manifest.js';
import type { CrossEncoderSettings } from './onnx-cross-encoder.js';
import type { EncoderSettings } from './onnx-encoder.js';

/** `workerData` of an encoder worker: the one model folder it serves, an embedding model or a cross-encoder. */
export type EncoderWorkerData =
  | { kind: 'retriever'; modelDir: string; settings: EncoderSettings }
  | { kind: 'reranker'; modelDir: string; settings: CrossEncoderSettings };

export type EncoderRequest =
  | { id: number; op: 'queries'; inputs: readonly QueryInput[] }
  | { id: number; op: 'passages'; texts: readonly string[] }
  | { id: number; op: 'pairs'; pairs: readonly TextPair[] }
  | { id: number; op: 'close' };

export type EncoderWorkerMessage =
  | { kind: 'ready'; manifest: RetrieverManifest | RerankerManifest; provider: ExecutionProviderName; modelFile: string }
  | { kind: 'load-failed'; error: SerializedError }
  | { kind: 'warning'; message: string }
  /** `values`: row-major vectors of queries or passages, or one score per pair. */
  | { kind: 'reply'; id: number; ok: true; values?: Float32Array }
  | FailedReply;
