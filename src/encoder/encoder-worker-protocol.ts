import type { FailedReply, SerializedError } from '../threads/replies.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { QueryInput } from './embedding-encoder.js';
import type { RetrieverManifest } from './manifest.js';
import type { EncoderSettings } from './onnx-encoder.js';

/** `workerData` of an encoder worker: the one model folder it serves. */
export interface EncoderWorkerData {
  modelDir: string;
  settings: EncoderSettings;
}

export type EncoderRequest =
  | { id: number; op: 'queries'; inputs: readonly QueryInput[] }
  | { id: number; op: 'passages'; texts: readonly string[] }
  | { id: number; op: 'close' };

export type EncoderWorkerMessage =
  | { kind: 'ready'; manifest: RetrieverManifest; provider: ExecutionProviderName; modelFile: string }
  | { kind: 'load-failed'; error: SerializedError }
  | { kind: 'warning'; message: string }
  | { kind: 'reply'; id: number; ok: true; vectors?: Float32Array }
  | FailedReply;
