import { Router } from 'express';
import { ServiceError } from '../errors.js';
import { queryLogFields } from '../log.js';
import { requestFacts } from './request-log.js';
import { parseRerankRequest } from './rerank-request.js';
import { beforeDeadline, readJsonBody, requestDeadline } from './request-body.js';
import { loadedReranker, renderHits, type RerankerSlot, type RetrieveSettings } from './retrieve-routes.js';

/**
 * A passage's characters: a wiki18 passage is about 600, and the cross-encoder reads 512 tokens
 * of a pair at most, so longer text only costs tokenizing.
 */
const MAX_PASSAGE_CHARS = 65_536;

/** `POST /rerank`: Search-R1's rerank server, answering `/retrieve`'s shape. */
export function rerankRoutes(config: RetrieveSettings, reranker: RerankerSlot | undefined): Router {
  const router = Router();
  router.post('/rerank', ...readJsonBody(config.bodyLimit), async (req, res) => {
    // The route exists on every server (openapi.yaml documents it); without a reranker the request cannot be served as sent.
    if (config.rerankerModel === undefined) {
      throw new ServiceError('bad_request', 'this server has no reranker: start it with --reranker_model <folder> to rerank');
    }
    const limits = { ...config, defaultTopk: config.rerankingTopk, maxPassageChars: MAX_PASSAGE_CHARS };
    const request = parseRerankRequest(req.body, limits);
    Object.assign(requestFacts(res), queryLogFields(request.lists.map((list) => list.query), config.logQueries));
    const rerankWith = loadedReranker(reranker);
    const deadline = requestDeadline(res, config.requestTimeoutMs, `reranking for ${request.lists.length} queries`);
    const ranked = await beforeDeadline(rerankWith.rerank(request.lists, request.topk, deadline), deadline);
    res.json({ result: renderHits(ranked, request.returnScores) });
  });
  return router;
}
