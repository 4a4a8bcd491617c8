import type { ErrorCode } from '../errors.js';
import type { ExecutionProviderName, QueryInput } from '../engine/types.js';
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

export interface SerializedError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export type EncoderWorkerMessage =
  | { kind: 'ready'; manifest: RetrieverManifest; provider: ExecutionProviderName; modelFile: string }
  | { kind: 'load-failed'; error: SerializedError }
  | { kind: 'warning'; message: string }
  | { kind: 'reply'; id: number; ok: true; vectors?: Float32Array }
  | { kind: 'reply'; id: number; ok: false; error: SerializedError };
