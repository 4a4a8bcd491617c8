import type { RerankList } from '../engine/reranker.js';
import { checkTexts, describe, invalid, isRecord, readCount, readReturnScores, type RetrieveLimits } from './retrieve-request.js';

/** A document as `/rerank` answers it: the object the client sent, unwrapped from `{document, …}` where it came so. */
export interface RerankDocument {
  contents: string;
  [field: string]: unknown;
}

export interface RerankRequest {
  lists: RerankList<RerankDocument>[];
  topk: number;
  returnScores: boolean;
}

/**
 * A candidate as Search-R1's rerank server reads one: a corpus row with `contents`, or a
 * `/retrieve` item `{document: {contents, …}, score}`; the row is what is scored and answered.
 */
function readDocument(value: unknown, field: string, maxChars: number): RerankDocument {
  const row = isRecord(value) && isRecord(value.document) ? value.document : value;
  if (!isRecord(row)) throw invalid(field, `must be a corpus row {"id", "contents"} or a /retrieve item {"document": {...}, "score"}, got ${describe(value)}`);
  if (typeof row.contents !== 'string') throw invalid(field, `has no string "contents" (the passage text, "\\"Title\\"\\ntext"), got ${describe(row.contents)}`);
  if (row.contents.length > maxChars) throw invalid(field, `contents of ${row.contents.length} characters exceed the limit of ${maxChars}`);
  return row as RerankDocument;
}

/**
 * Validates `POST /rerank`'s body, Search-R1's `rerank_server.py` request: `queries`, one list of
 * candidate `documents` per query (each query is scored against its own list only),
 * `rerank_topk` (missing, null or 0: `--reranking_topk`) and `return_scores`. Lists hold at most
 * `--max_topk` candidates, as a retrieval would; passages at most `maxPassageChars` characters.
 */
export function parseRerankRequest(body: unknown, limits: RetrieveLimits & { rerankingTopk: number; maxPassageChars: number }): RerankRequest {
  if (!isRecord(body)) {
    throw invalid('body', 'must be a JSON object such as {"queries": ["..."], "documents": [[{"id": "1", "contents": "..."}]], "rerank_topk": 3, "return_scores": true}');
  }
  if (!Array.isArray(body.queries)) throw invalid('queries', 'required: an array of strings');
  const queries = checkTexts(body.queries, 'queries', limits);
  if (!Array.isArray(body.documents)) throw invalid('documents', `required: a list of candidate lists, one per query, got ${describe(body.documents)}`);
  if (body.documents.length !== queries.length) {
    throw invalid('documents', `has ${body.documents.length} lists but there are ${queries.length} queries: send one list per query`);
  }
  const lists = body.documents.map((candidates: unknown, i) => {
    const field = `documents[${i}]`;
    if (!Array.isArray(candidates)) throw invalid(field, `must be a list of documents, got ${describe(candidates)}`);
    if (candidates.length > limits.maxTopk) throw invalid(field, `${candidates.length} documents exceed the limit of ${limits.maxTopk} per query (--max_topk)`);
    return { query: queries[i]!, documents: candidates.map((value: unknown, j) => readDocument(value, `${field}[${j}]`, limits.maxPassageChars)) };
  });
  return { lists, topk: readCount(body, ['rerank_topk'], limits.rerankingTopk, limits.maxTopk), returnScores: readReturnScores(body) };
}
