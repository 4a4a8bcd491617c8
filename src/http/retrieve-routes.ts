import express, { Router, type Response } from 'express';
import { ServiceError } from '../errors.js';
import type { CorpusRow } from '../corpus/corpus-row.js';
import type { RetrievalService, SearchHit } from '../engine/types.js';
import { queryLogFields } from '../log.js';
import type { ServiceMetrics } from './metrics.js';
import { requestFacts } from './request-log.js';
import { parseRetrieveRequest, type RetrieveLimits } from './retrieve-request.js';

export const VERSION_HEADER = 'X-Retriever-Version';

/** What `/retrieve` takes from the service's settings, named as `serve`'s settings are. */
export interface RetrieveSettings {
  /** What a request's missing/null/0 `topk` means. */
  topk: number;
  maxTopk: number;
  maxQueries: number;
  maxQueryChars: number;
  /** JSON body limit in body-parser's notation (`64mb`). */
  bodyLimit: string;
  logQueries: boolean;
  /** 0 disables the per-request deadline. */
  requestTimeoutMs: number;
}

type ScoredDocument = { document: CorpusRow; score: number };

/** Search-R1's response: scored `{document, score}` items, or bare rows when scores are off. */
function renderHits(hits: SearchHit[][], returnScores: boolean): (ScoredDocument | CorpusRow)[][] {
  return hits.map((list) =>
    list.map((hit) => (returnScores ? { document: hit.document, score: hit.score } : hit.document)),
  );
}

/**
 * A retrieval's one deadline: it passes at --request_timeout_ms, or as soon as the client has gone
 * (verl's search tool gives up after 30 s and retries: nobody reads that answer). Its reason is the
 * error the route answers with.
 */
function retrievalDeadline(res: Response, timeoutMs: number, queries: number): AbortSignal {
  const deadline = new AbortController();
  const timer =
    timeoutMs > 0
      ? setTimeout(
          () => deadline.abort(new ServiceError('timeout', `retrieval of ${queries} queries did not finish within ${timeoutMs} ms`)),
          timeoutMs,
        )
      : undefined;
  res.on('close', () => {
    clearTimeout(timer);
    if (!res.writableFinished) deadline.abort(new ServiceError('timeout', `retrieval of ${queries} queries was abandoned: its client went away`));
  });
  return deadline.signal;
}

/** `work`, or the deadline's reason once it passes; a search still running then settles unread. */
function beforeDeadline<T>(work: Promise<T>, deadline: AbortSignal): Promise<T> {
  const passed = new Promise<never>((_, reject) => {
    deadline.addEventListener('abort', () => reject(deadline.reason as ServiceError), { once: true });
  });
  return Promise.race([work, passed]);
}

export function retrieveRoutes(service: RetrievalService, config: RetrieveSettings, metrics: ServiceMetrics): Router {
  const limits: RetrieveLimits = {
    defaultTopk: config.topk,
    maxTopk: config.maxTopk,
    maxQueries: config.maxQueries,
    maxQueryChars: config.maxQueryChars,
  };
  const router = Router();
  // FastAPI reads a body without Content-Type as JSON, so `requests.post(url, data=json.dumps(p))`
  // works against the reference; the second parser takes only those. Other types keep their 400.
  const readJson = express.json({ limit: config.bodyLimit });
  const readUntypedJson = express.json({ limit: config.bodyLimit, type: (req) => req.headers['content-type'] === undefined });
  router.post('/retrieve', readJson, readUntypedJson, async (req, res) => {
    const request = parseRetrieveRequest(req.body, limits);
    Object.assign(
      requestFacts(res),
      queryLogFields(
        request.inputs.map((input) => input.query),
        config.logQueries,
      ),
    );
    // The Search-R1 agent posts an empty batch whenever no rollout searched this turn. This is its
    // one answer: the engine is never asked, so it is served even before a retriever is loaded.
    if (request.inputs.length === 0) {
      const version = service.info()?.version;
      if (version) res.setHeader(VERSION_HEADER, version);
      res.json({ result: [] });
      return;
    }
    // The engine drops the request from its queue when the deadline passes; the route stops waiting.
    const deadline = retrievalDeadline(res, config.requestTimeoutMs, request.inputs.length);
    const result = await beforeDeadline(service.retrieve(request.inputs, request.topk, { signal: deadline }), deadline);
    metrics.observeRetrieval(request.inputs.length, result.timings);
    const { encodeMs, searchMs, fetchMs } = result.timings;
    requestFacts(res).engineMs = Math.round((encodeMs + searchMs + fetchMs) * 1e3) / 1e3;
    res.setHeader(VERSION_HEADER, result.version);
    res.json({ result: renderHits(result.hits, request.returnScores) });
  });
  return router;
}
