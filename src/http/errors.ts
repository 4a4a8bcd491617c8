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
  // A replica asked for what only its writer does: the answer names the writer.
  misdirected: 421,
  payload_too_large: 413,
  unsupported_media_type: 415,
  not_ready: 503,
  overloaded: 503,
  timeout: 503,
  corpus_changed: 503,
  insufficient_storage: 507,
  internal: 500,
};

/** Seconds a client should wait before retrying a 503, unless the error says otherwise. */
const RETRY_AFTER_SECONDS: Partial<Record<ErrorCode, number>> = {
  not_ready: 5,
  overloaded: 1,
  timeout: 1,
  // Nothing changes until someone restarts the server; verl retries 503s, so slowly.
  corpus_changed: 60,
};

/** Faults only the operator can fix: logged at error level once, not on every request they fail. */
const LOGGED_ONCE: ReadonlySet<ErrorCode> = new Set(['corpus_changed']);

export function statusForCode(code: ErrorCode): number {
  return STATUS_BY_CODE[code];
}

export interface ErrorBody {
  /** `ids`: the keys a lookup did not find (`/documents`' 404). */
  error: { code: ErrorCode; message: string; field?: string; ids?: unknown[] };
}

export function sendError(res: Response, error: ServiceError): void {
  const retryAfter = retryAfterSeconds(error);
  if (retryAfter !== undefined) res.setHeader('Retry-After', String(retryAfter));
  const field = typeof error.details?.field === 'string' ? error.details.field : undefined;
  const ids = Array.isArray(error.details?.ids) ? (error.details.ids as unknown[]) : undefined;
  const body: ErrorBody = { error: { code: error.code, message: error.message, ...(field ? { field } : {}), ...(ids ? { ids } : {}) } };
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
  /** The text that failed to parse. */
  body?: unknown;
  /** The Content-Encoding that is not supported. */
  encoding?: string;
}

/** A body in a Content-Encoding the service does not decode (415, never a retried 5xx). */
export function unsupportedEncoding(encoding: string): ServiceError {
  return new ServiceError('unsupported_media_type', `body: Content-Encoding "${encoding}" is not supported; send identity, gzip, deflate or br`, {
    field: 'body',
  });
}

function toServiceError(error: unknown): ServiceError {
  if (error instanceof ServiceError) return error;
  return bodyError(error as BodyParserError) ?? new ServiceError('internal', 'internal error');
}

/**
 * express.json's strict mode refuses JSON that is not an object or array (`null`, `42`) with a
 * syntax error; the client deserves to hear what is wrong with it instead.
 */
function unparsedBodyError(parserError: BodyParserError): ServiceError {
  const notJson = new ServiceError('bad_request', `body: not valid JSON: ${parserError.message}`, { field: 'body' });
  if (typeof parserError.body !== 'string') return notJson;
  let value: unknown;
  try {
    value = JSON.parse(parserError.body);
  } catch {
    return notJson;
  }
  return new ServiceError('bad_request', `body: must be a JSON object, got ${value === null ? 'null' : typeof value}`, { field: 'body' });
}

/** Client faults in reading the body are 4xx, never 5xx: verl retries 5xx answers. */
function bodyError(parserError: BodyParserError | undefined): ServiceError | undefined {
  switch (parserError?.type) {
    case 'entity.parse.failed':
      return unparsedBodyError(parserError);
    case 'entity.too.large':
      return new ServiceError(
        'payload_too_large',
        `body: exceeds the ${parserError.limit} byte limit (--body_limit); send fewer or shorter queries`,
        { field: 'body' },
      );
    case 'encoding.unsupported':
      return unsupportedEncoding(String(parserError.encoding));
    case 'charset.unsupported':
      return new ServiceError('unsupported_media_type', `body: ${parserError.message}; send UTF-8`, { field: 'body' });
    case 'request.size.invalid':
      return new ServiceError('bad_request', `body: ${parserError.message ?? 'unreadable'}`, { field: 'body' });
    case 'request.aborted':
      return new ServiceError('bad_request', 'body: aborted by the client before it arrived', { field: 'body' });
  }
  // body-parser gives a body that does not decode as its Content-Encoding says (zlib's error) status 400.
  if (typeof parserError?.status === 'number' && parserError.status >= 400 && parserError.status < 500) {
    return new ServiceError('bad_request', `body: does not decode as its Content-Encoding says (${parserError.message})`, { field: 'body' });
  }
  return undefined;
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  const logged = new Set<string>();
  return (error: unknown, _req, res, next) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const serviceError = toServiceError(error);
    // A full disk needs the operator as much as a bug does.
    if (serviceError.code === 'internal' || serviceError.code === 'insufficient_storage') logger.error({ err: error }, 'request failed');
    else if (LOGGED_ONCE.has(serviceError.code) && !logged.has(serviceError.message)) {
      logged.add(serviceError.message);
      logger.error({ code: serviceError.code, ...serviceError.details }, serviceError.message);
    }
    sendError(res, serviceError);
  };
}

export const notFoundHandler: RequestHandler = (req, res) => {
  sendError(res, new ServiceError('not_found', `no route ${req.method} ${req.path}`));
};
