import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import { ServiceError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * The one place where domain error codes become HTTP statuses. Overload and deadlines answer 503,
 * never 429: verl's search tool retries only 500/502/503/504 and connection errors.
 */
const STATUS_BY_CODE: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  not_ready: 503,
  overloaded: 503,
  timeout: 503,
  insufficient_storage: 507,
  internal: 500,
};

/** Seconds a client should wait before retrying a 503, unless the error says otherwise. */
const RETRY_AFTER_SECONDS: Partial<Record<ErrorCode, number>> = {
  not_ready: 5,
  overloaded: 1,
  timeout: 1,
};

export function statusForCode(code: ErrorCode): number {
  return STATUS_BY_CODE[code];
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; field?: string };
}

export function sendError(res: Response, error: ServiceError): void {
  const retryAfter = retryAfterSeconds(error);
  if (retryAfter !== undefined) res.setHeader('Retry-After', String(retryAfter));
  const field = typeof error.details?.field === 'string' ? error.details.field : undefined;
  const body: ErrorBody = { error: { code: error.code, message: error.message, ...(field ? { field } : {}) } };
  res.status(statusForCode(error.code)).json(body);
}

function retryAfterSeconds(error: ServiceError): number | undefined {
  const stated = error.details?.retryAfterSeconds;
  if (typeof stated === 'number' && stated >= 0) return Math.ceil(stated);
  return RETRY_AFTER_SECONDS[error.code];
}

/** body-parser signals its failures with an http-errors value whose `type` says what went wrong. */
interface BodyParserError {
  type?: string;
  status?: number;
  limit?: number;
  message?: string;
}

function toServiceError(error: unknown): ServiceError {
  if (error instanceof ServiceError) return error;
  const parserError = error as BodyParserError;
  switch (parserError?.type) {
    case 'entity.parse.failed':
      return new ServiceError('bad_request', `body: not valid JSON: ${parserError.message}`, { field: 'body' });
    case 'entity.too.large':
      return new ServiceError(
        'payload_too_large',
        `body: exceeds the ${parserError.limit} byte limit (--body_limit); send fewer or shorter queries`,
        { field: 'body' },
      );
    case 'charset.unsupported':
    case 'encoding.unsupported':
    case 'request.size.invalid':
      return new ServiceError('bad_request', `body: ${parserError.message ?? 'unreadable'}`, { field: 'body' });
    case 'request.aborted':
      return new ServiceError('bad_request', 'body: aborted by the client before it arrived', { field: 'body' });
  }
  return new ServiceError('internal', 'internal error');
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error: unknown, _req, res, next) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const serviceError = toServiceError(error);
    // A full disk needs the operator as much as a bug does.
    if (serviceError.code === 'internal' || serviceError.code === 'insufficient_storage') logger.error({ err: error }, 'request failed');
    sendError(res, serviceError);
  };
}

export const notFoundHandler: RequestHandler = (req, res) => {
  sendError(res, new ServiceError('not_found', `no route ${req.method} ${req.path}`));
};
