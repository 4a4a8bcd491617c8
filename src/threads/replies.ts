import { ServiceError, type ErrorCode } from '../errors.js';

/** An error as it crosses from a worker thread or process: a structured clone drops an Error's class and fields. */
export interface SerializedError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** ServiceErrors keep their code and details; anything else is internal. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof ServiceError) return { code: error.code, message: error.message, details: error.details };
  return { code: 'internal', message: (error as Error).message ?? String(error) };
}

export function deserializeError(error: SerializedError): ServiceError {
  return new ServiceError(error.code, error.message, error.details);
}

export type FailedReply = { kind: 'reply'; id: number; ok: false; error: SerializedError };

/** What a worker answers request `id` with; a protocol adds its answer's fields to the `ok: true` side. */
export type WorkerReply = { kind: 'reply'; id: number; ok: true } | FailedReply;

export function failedReply(id: number, error: unknown): FailedReply {
  return { kind: 'reply', id, ok: false, error: serializeError(error) };
}
