import { ServiceError, type ErrorCode } from '../errors.js';
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

export interface SerializedError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** An error as it crosses from a worker thread: ServiceErrors keep their code, others are internal. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof ServiceError) return { code: error.code, message: error.message, details: error.details };
  return { code: 'internal', message: (error as Error).message ?? String(error) };
}

export function deserializeError(error: SerializedError): ServiceError {
  return new ServiceError(error.code, error.message, error.details);
}

export type EncoderWorkerMessage =
  | { kind: 'ready'; manifest: RetrieverManifest; provider: ExecutionProviderName; modelFile: string }
  | { kind: 'load-failed'; error: SerializedError }
  | { kind: 'warning'; message: string }
  | { kind: 'reply'; id: number; ok: true; vectors?: Float32Array }
  | { kind: 'reply'; id: number; ok: false; error: SerializedError };
