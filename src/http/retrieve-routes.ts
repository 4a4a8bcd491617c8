import express, { Router, type Response } from 'express';
import { ServiceError } from '../errors.js';
import type { PassageReranker } from '../engine/reranker.js';
import type { RetrievalService } from '../engine/types.js';
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
  /** Set when a reranker serves: `/retrieve` then retrieves `retrievalTopk` and keeps the `rerankingTopk` best. */
  rerankerModel?: string;
  retrievalTopk: number;
  rerankingTopk: number;
}

/** The server's reranker once it has loaded; undefined before (or when none is configured). */
export type RerankerSlot = () => PassageReranker | undefined;

/** The reranker a request with `--reranker_model` set needs: 503 while it is still loading. */
export function loadedReranker(slot: RerankerSlot | undefined): PassageReranker {
  const reranker = slot?.();
  if (!reranker) throw new ServiceError('not_ready', 'the reranker is not loaded yet');
  return reranker;
}

/** Search-R1's response: scored `{document, score}` items, or bare rows when scores are off. */
export function renderHits<T>(hits: readonly (readonly { document: T; score: number }[])[], returnScores: boolean): (T | { document: T; score: number })[][] {
  return hits.map((list) => list.map((hit) => (returnScores ? { document: hit.document, score: hit.score } : hit.document)));
}

/**
 * A retrieval's one deadline: it passes at --request_timeout_ms, or as soon as the client has gone
 * (verl's search tool gives up after 30 s and retries: nobody reads that answer). Its reason is the
 * error the route answers with.
 */
export function retrievalDeadline(res: Response, timeoutMs: number, queries: number): AbortSignal {
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
export function beforeDeadline<T>(work: Promise<T>, deadline: AbortSignal): Promise<T> {
  const passed = new Promise<never>((_, reject) => {
    deadline.addEventListener('abort', () => reject(deadline.reason as ServiceError), { once: true });
  });
  return Promise.race([work, passed]);
}

/**
 * FastAPI reads a body without Content-Type as JSON, so `requests.post(url, data=json.dumps(p))`
 * works against the reference; the second parser takes only those. Other types keep their 400.
 */
export function jsonBodyParsers(bodyLimit: string) {
  return [express.json({ limit: bodyLimit }), express.json({ limit: bodyLimit, type: (req) => req.headers['content-type'] === undefined })];
}

export function retrieveRoutes(service: RetrievalService, config: RetrieveSettings, metrics: ServiceMetrics, reranker?: RerankerSlot): Router {
  const limits: RetrieveLimits = {
    defaultTopk: config.topk,
    maxTopk: config.maxTopk,
    maxQueries: config.maxQueries,
    maxQueryChars: config.maxQueryChars,
    ...(config.rerankerModel !== undefined && { rerank: { retrievalTopk: config.retrievalTopk, rerankingTopk: config.rerankingTopk } }),
  };
  const router = Router();
  router.post('/retrieve', ...jsonBodyParsers(config.bodyLimit), async (req, res) => {
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
    const rerankWith = request.retrievalTopk === undefined ? undefined : loadedReranker(reranker);
    // The engine drops the request from its queue when the deadline passes; the route stops waiting.
    const deadline = retrievalDeadline(res, config.requestTimeoutMs, request.inputs.length);
    const result = await beforeDeadline(service.retrieve(request.inputs, request.retrievalTopk ?? request.topk, { signal: deadline }), deadline);
    metrics.observeRetrieval(request.inputs.length, result.timings);
    const { encodeMs, searchMs, fetchMs } = result.timings;
    requestFacts(res).engineMs = Math.round((encodeMs + searchMs + fetchMs) * 1e3) / 1e3;
    // Each query is reranked against its own candidates, scored by the cross-encoder on its text as sent.
    const hits = rerankWith
      ? await beforeDeadline(
          rerankWith.rerank(
            result.hits.map((list, i) => ({ query: request.inputs[i]!.query, documents: list.map((hit) => hit.document) })),
            request.topk,
            deadline,
          ),
          deadline,
        )
      : result.hits;
    res.setHeader(VERSION_HEADER, result.version);
    res.json({ result: renderHits(hits, request.returnScores) });
  });
  return router;
}
