import { Router } from 'express';
import type { CorpusRow } from '../corpus/corpus-row.js';
import type { RetrievalService, SearchHit } from '../engine/types.js';
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
}

type ScoredDocument = { document: CorpusRow; score: number };

/** Search-R1's response: scored `{document, score}` items, or bare rows when scores are off. */
function renderHits(hits: SearchHit[][], returnScores: boolean): (ScoredDocument | CorpusRow)[][] {
  return hits.map((list) =>
    list.map((hit) => (returnScores ? { document: hit.document, score: hit.score } : hit.document)),
  );
}

export function retrieveRoutes(service: RetrievalService, config: RetrieveSettings, metrics: ServiceMetrics): Router {
  const limits: RetrieveLimits = {
    defaultTopk: config.topk,
    maxTopk: config.maxTopk,
    maxQueries: config.maxQueries,
    maxQueryChars: config.maxQueryChars,
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
    // The engine drops the request from its queue when the deadline passes; the route stops waiting.
    const deadline = requestDeadline(res, config.requestTimeoutMs, `retrieval of ${request.inputs.length} queries`);
    const result = await beforeDeadline(service.retrieve(request.inputs, request.topk, { signal: deadline }), deadline);
    metrics.observeRetrieval(request.inputs.length, result.timings);
    const { encodeMs, searchMs, fetchMs } = result.timings;
    requestFacts(res).engineMs = Math.round((encodeMs + searchMs + fetchMs) * 1e3) / 1e3;
    res.setHeader(VERSION_HEADER, result.version);
    res.json({ result: renderHits(result.hits, request.returnScores) });
  });
  return router;
}
