import express, { type RequestHandler, type Response } from 'express';
import { ServiceError } from '../errors.js';

/**
 * The JSON body parsers of the Search-R1-style routes. FastAPI reads a body without Content-Type
 * as JSON, so `requests.post(url, data=json.dumps(p))` works against the reference; the second
 * parser takes only those. Other types keep their 400.
 */
export function readJsonBody(bodyLimit: string): RequestHandler[] {
  return [
    express.json({ limit: bodyLimit }),
    express.json({ limit: bodyLimit, type: (req) => req.headers['content-type'] === undefined }),
  ];
}

/**
 * A request's one deadline: it passes at --request_timeout_ms, or as soon as the client has gone
 * (verl's search tool gives up after 30 s and retries: nobody reads that answer). Its reason is the
 * error the route answers with; `work` names what the request does ("retrieval of 3 queries").
 */
export function requestDeadline(res: Response, timeoutMs: number, work: string): AbortSignal {
  const deadline = new AbortController();
  const timer =
    timeoutMs > 0
      ? setTimeout(() => deadline.abort(new ServiceError('timeout', `${work} did not finish within ${timeoutMs} ms`)), timeoutMs)
      : undefined;
  res.on('close', () => {
    clearTimeout(timer);
    if (!res.writableFinished) deadline.abort(new ServiceError('timeout', `${work} was abandoned: its client went away`));
  });
  return deadline.signal;
}

/** `work`, or the deadline's reason once it passes; work still running then settles unread. */
export function beforeDeadline<T>(work: Promise<T>, deadline: AbortSignal): Promise<T> {
  const passed = new Promise<never>((_, reject) => {
    deadline.addEventListener('abort', () => reject(deadline.reason as ServiceError), { once: true });
  });
  return Promise.race([work, passed]);
}
