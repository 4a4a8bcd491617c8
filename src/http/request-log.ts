import type { RequestHandler, Response } from 'express';
import type { Logger } from '../log.js';
import type { ServiceMetrics } from './metrics.js';

/** Route handlers record per-request facts here for the access log. */
export interface RequestFacts {
  queries?: number;
  queryTexts?: readonly string[];
  /** The engine's own time for this request's batch, so a log line shows what HTTP added. */
  engineMs?: number;
}

export function requestFacts(res: Response): RequestFacts {
  res.locals.requestFacts ??= {};
  return res.locals.requestFacts as RequestFacts;
}

/**
 * Polled every few seconds by launchers, load balancers and Prometheus (a 503 from /ready is the
 * normal answer while loading): logged at debug so they do not drown the request lines.
 */
const PROBE_ROUTES = new Set(['/health', '/ready', '/metrics']);

/**
 * One structured access-log line and one metrics observation per finished response. The route
 * label is the matched template (`/retrieve`), never the raw URL, so probes of random paths
 * cannot grow the metrics without bound.
 */
export function observeRequests(logger: Logger, metrics: ServiceMetrics): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
      metrics.observeRequest(req.method, route, res.statusCode, seconds);
      const level = PROBE_ROUTES.has(route) ? 'debug' : 'info';
      logger[level](
        {
          method: req.method,
          route,
          path: req.path,
          status: res.statusCode,
          durationMs: Math.round(seconds * 1e6) / 1e3,
          ...requestFacts(res),
        },
        'request',
      );
    });
    next();
  };
}
