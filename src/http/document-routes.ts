import { Router, type Response } from 'express';
import type { CorpusRow } from '../corpus/corpus-row.js';
import { keyCount, type DocumentKeys, type RetrievalService } from '../engine/types.js';
import { parseDocumentPath, parseDocumentsRequest, parseLookup, unknownKeysError } from './documents-request.js';
import { beforeDeadline, readJsonBody, requestDeadline } from './request-body.js';
import { VERSION_HEADER, type RetrieveSettings } from './retrieve-routes.js';

type DocumentSettings = Pick<RetrieveSettings, 'maxQueries' | 'bodyLimit' | 'requestTimeoutMs'>;

/**
 * Whole corpus rows by id, for agents that fetch a passage they saw in results (LRAT's
 * `get_document`, ASearcher's `/access`) and for FlashRAG-style data construction by row number.
 */
export function documentRoutes(service: RetrievalService, config: DocumentSettings): Router {
  const router = Router();

  /** The rows of `keys` in the order asked, or the 404 that lists the keys the corpus lacks. */
  async function fetchDocuments(keys: DocumentKeys, res: Response, field: string): Promise<CorpusRow[]> {
    const count = keyCount(keys);
    if (count === 0) return [];
    const deadline = requestDeadline(res, config.requestTimeoutMs, `fetching ${count} documents`);
    const { documents, version } = await beforeDeadline(service.documents(keys, { signal: deadline }), deadline);
    res.setHeader(VERSION_HEADER, version);
    const missing = documents.flatMap((document, at) => (document === undefined ? [at] : []));
    if (missing.length > 0) throw unknownKeysError(keys, missing, field, service.info()?.corpusRows);
    return documents as CorpusRow[];
  }

  router.get('/documents/:id', async (req, res) => {
    const [document] = await fetchDocuments(parseDocumentPath(req.params.id, parseLookup(req.query.by)), res, 'id');
    res.json(document);
  });
  router.post('/documents', ...readJsonBody(config.bodyLimit), async (req, res) => {
    const keys = parseDocumentsRequest(req.body, parseLookup(req.query.by), config.maxQueries);
    res.json({ documents: await fetchDocuments(keys, res, 'ids') });
  });
  return router;
}
