/**
 * Failures as values with a domain code. The HTTP layer maps codes to statuses in one place
 * (src/http/errors.ts); the engine never thinks in status numbers.
 */
export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'not_found'
  | 'conflict'
  | 'misdirected'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'not_ready'
  | 'overloaded'
  | 'timeout'
  | 'corpus_changed'
  | 'insufficient_storage'
  | 'internal';

export class ServiceError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}

export function badRequest(message: string, details?: Record<string, unknown>): ServiceError {
  return new ServiceError('bad_request', message, details);
}
