import express, { Router } from 'express';
import { ServiceError } from '../errors.js';
import type { CorpusRow } from '../corpus/corpus-row.js';
import type { RetrievalResult, RetrievalService, SearchHit } from '../engine/types.js';
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

function withDeadline<T>(work: Promise<T>, timeoutMs: number, queries: number): Promise<T> {
  if (timeoutMs <= 0) return work;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ServiceError('timeout', `retrieval of ${queries} queries did not finish within ${timeoutMs} ms`),
        ),
      timeoutMs,
    );
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

export function retrieveRoutes(service: RetrievalService, config: RetrieveSettings, metrics: ServiceMetrics): Router {
  const limits: RetrieveLimits = {
    defaultTopk: config.topk,
    maxTopk: config.maxTopk,
    maxQueries: config.maxQueries,
    maxQueryChars: config.maxQueryChars,
  };
  const router = Router();
  router.post('/retrieve', express.json({ limit: config.bodyLimit }), async (req, res) => {
    const request = parseRetrieveRequest(req.body, limits);
    Object.assign(
      requestFacts(res),
      queryLogFields(
        request.inputs.map((input) => input.query),
        config.logQueries,
      ),
    );
    // The Search-R1 agent posts an empty batch whenever no rollout searched this turn.
    if (request.inputs.length === 0) {
      const version = service.info()?.version;
      if (version) res.setHeader(VERSION_HEADER, version);
      res.json({ result: [] });
      return;
    }
    // A request still waiting in the batcher's queue leaves it at its deadline, or when its client
    // has gone (verl's search tool gives up after 30 s and retries: nobody reads that answer).
    const clientGone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) clientGone.abort();
    });
    const signal =
      config.requestTimeoutMs > 0
        ? AbortSignal.any([clientGone.signal, AbortSignal.timeout(config.requestTimeoutMs)])
        : clientGone.signal;
    const work = service.search(request.inputs, request.topk, { signal });
    // A search that loses the race still settles later; swallow its rejection so it is not unhandled.
    work.catch(() => undefined);
    const result: RetrievalResult = await withDeadline(work, config.requestTimeoutMs, request.inputs.length);
    metrics.observeRetrieval(request.inputs.length, result.timings);
    const { encodeMs, searchMs, fetchMs } = result.timings;
    requestFacts(res).engineMs = Math.round((encodeMs + searchMs + fetchMs) * 1e3) / 1e3;
    res.setHeader(VERSION_HEADER, result.version);
    res.json({ result: renderHits(result.hits, request.returnScores) });
  });
  return router;
}
