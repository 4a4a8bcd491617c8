import { Router } from 'express';
import { ServiceError } from '../errors.js';
import type { PassageReranker } from '../engine/reranker.js';
import type { RetrievalService } from '../engine/types.js';
import { queryLogFields } from '../log.js';
import type { ServiceMetrics } from './metrics.js';
import { requestFacts } from './request-log.js';
import { beforeDeadline, readJsonBody, requestDeadline } from './request-body.js';
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

export function retrieveRoutes(service: RetrievalService, config: RetrieveSettings, metrics: ServiceMetrics, reranker?: RerankerSlot): Router {
  const limits: RetrieveLimits = {
    defaultTopk: config.topk,
    maxTopk: config.maxTopk,
    maxQueries: config.maxQueries,
    maxQueryChars: config.maxQueryChars,
    ...(config.rerankerModel !== undefined && { rerank: { retrievalTopk: config.retrievalTopk, rerankingTopk: config.rerankingTopk } }),
  };
  const router = Router();
  router.post('/retrieve', ...readJsonBody(config.bodyLimit), async (req, res) => {
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
    const deadline = requestDeadline(res, config.requestTimeoutMs, `retrieval of ${request.inputs.length} queries`);
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
