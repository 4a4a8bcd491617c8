import { badRequest, ServiceError } from '../errors.js';
import type { QueryInput } from '../encoder/embedding-encoder.js';

export interface RetrieveLimits {
  /** What a missing, null or 0 topk means (Search-R1's `--topk`). */
  defaultTopk: number;
  maxTopk: number;
  maxQueries: number;
  maxQueryChars: number;
  /** Present when a reranker serves: what missing counts mean (`--retrieval_topk`, `--reranking_topk`). */
  rerank?: { retrievalTopk: number; rerankingTopk: number };
}

export interface RetrieveRequest {
  inputs: QueryInput[];
  /** The final count per query: after reranking when a reranker serves. */
  topk: number;
  /** Present when a reranker serves: candidates retrieved per query, then reranked down to `topk`. */
  retrievalTopk?: number;
  returnScores: boolean;
}

export function invalid(field: string, message: string): ServiceError {
  return badRequest(`${field}: ${message}`, { field });
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `queries` (Search-R1) or `query` (one string, for single-query clients); not both. */
function readQueryTexts(body: Record<string, unknown>, limits: RetrieveLimits): string[] {
  if (body.queries !== undefined && body.query !== undefined) {
    throw invalid('query', 'send either "queries" or "query", not both');
  }
  if (body.query !== undefined) {
    if (typeof body.query !== 'string') throw invalid('query', 'must be a string');
    return checkTexts([body.query], 'query', limits);
  }
  if (body.queries === undefined) throw invalid('queries', 'required: an array of strings');
  if (!Array.isArray(body.queries)) throw invalid('queries', 'must be an array of strings');
  return checkTexts(body.queries, 'queries', limits);
}

export function checkTexts(values: unknown[], field: string, limits: Pick<RetrieveLimits, 'maxQueries' | 'maxQueryChars'>): string[] {
  if (values.length > limits.maxQueries) {
    throw invalid(field, `${values.length} queries exceed the limit of ${limits.maxQueries} per request (--max_queries)`);
  }
  values.forEach((value, position) => {
    const name = field === 'query' ? field : `${field}[${position}]`;
    if (typeof value !== 'string') throw invalid(name, `must be a string, got ${describe(value)}`);
    if (value.length > limits.maxQueryChars) {
      throw invalid(name, `${value.length} characters exceed the limit of ${limits.maxQueryChars} (--max_query_chars)`);
    }
  });
  return values as string[];
}

function readQuestions(body: Record<string, unknown>, count: number, limits: RetrieveLimits): string[] | undefined {
  if (body.questions === undefined || body.questions === null) return undefined;
  if (!Array.isArray(body.questions)) throw invalid('questions', 'must be an array of strings, one per query');
  if (body.questions.length !== count) {
    throw invalid('questions', `has ${body.questions.length} entries but there are ${count} queries`);
  }
  return checkTexts(body.questions, 'questions', limits);
}

const TOPK_FIELDS = ['topk', 'top_k', 'k'] as const;
/** With a reranker, the final count may also be sent under the rerank server's name. */
const RERANKED_TOPK_FIELDS = ['topk_rerank', ...TOPK_FIELDS] as const;

/**
 * The first of `fields` the body carries, checked, or `fallback` when none is (or it is 0);
 * fields that disagree are an error, not a guess.
 */
export function readCount(body: Record<string, unknown>, fields: readonly string[], fallback: number, maxTopk: number): number {
  const given = fields.filter((field) => body[field] !== undefined && body[field] !== null);
  const values = given.map((field) => checkTopk(field, body[field], maxTopk));
  if (new Set(values).size > 1) {
    throw invalid(given[1]!, `disagrees with ${given[0]} (${values[0]} vs ${values[1]}); send one`);
  }
  const count = values[0] ?? 0;
  return count === 0 ? fallback : count;
}

/** Retrieve-then-rerank counts: the rerank server's `topk_retrieval` and `topk_rerank`, where plain `topk` is the final count. */
function readRerankCounts(body: Record<string, unknown>, limits: RetrieveLimits, rerank: NonNullable<RetrieveLimits['rerank']>) {
  const retrievalTopk = readCount(body, ['topk_retrieval'], rerank.retrievalTopk, limits.maxTopk);
  const topk = readCount(body, RERANKED_TOPK_FIELDS, rerank.rerankingTopk, limits.maxTopk);
  if (topk > retrievalTopk) {
    const field = RERANKED_TOPK_FIELDS.find((name) => body[name] !== undefined && body[name] !== null) ?? 'topk_rerank';
    throw invalid(field, `${topk} passages cannot be kept out of ${retrievalTopk} retrieved (topk_retrieval, default --retrieval_topk); send at most ${retrievalTopk}`);
  }
  return { retrievalTopk, topk };
}

/**
 * The reference server validates with pydantic v2 in lax mode, so clients may send what it
 * coerces: for an int, a bool, a number without a fractional part, or a string of an integer
 * (surrounding whitespace, `+`, leading zeros, single `_` between digits and a `.0…` tail allowed);
 * for a bool, 0/1 and the strings below, in any case.
 */
const INTEGER_TEXT = /^[+-]?\d+(?:_\d+)*(?:\.0+)?$/;
const BOOLEAN_TEXT = new Map<string, boolean>([
  ...['0', 'f', 'n', 'no', 'off', 'false'].map((text) => [text, false] as const),
  ...['1', 't', 'y', 'yes', 'on', 'true'].map((text) => [text, true] as const),
]);

function laxInteger(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? value : undefined;
  if (typeof value === 'boolean') return Number(value);
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  return INTEGER_TEXT.test(text) ? Number(text.replace(/_/g, '').replace(/\.0+$/, '')) : undefined;
}

function laxBoolean(value: unknown): boolean | undefined {
  if (typeof value === 'boolean') return value;
  if (value === 0 || value === 1) return value === 1;
  if (typeof value === 'string') return BOOLEAN_TEXT.get(value.toLowerCase());
  return undefined;
}

function checkTopk(field: string, value: unknown, maxTopk: number): number {
  const topk = laxInteger(value);
  if (topk === undefined || topk < 0 || topk > maxTopk) {
    throw invalid(field, `must be an integer from 0 to ${maxTopk} (--max_topk), got ${describe(value)}`);
  }
  return topk;
}

export function readReturnScores(body: Record<string, unknown>): boolean {
  const value = body.return_scores;
  if (value === undefined || value === null) return false;
  const returnScores = laxBoolean(value);
  if (returnScores === undefined) {
    throw invalid('return_scores', `must be true or false (or 0/1, "yes"/"no", "on"/"off", "t"/"f", "y"/"n"), got ${describe(value)}`);
  }
  return returnScores;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}

/** The parsed body as an object, or a 400 that shows `example`. */
export function jsonObjectBody(body: unknown, example: string): Record<string, unknown> {
  if (body === undefined) throw invalid('body', 'missing: send a JSON object with Content-Type: application/json');
  if (!isRecord(body)) throw invalid('body', `must be a JSON object such as ${example}`);
  return body;
}

/**
 * Validates a Search-R1 `/retrieve` body. Unknown fields are ignored, as the reference server's
 * pydantic model ignores them: without a reranker, `topk_retrieval` and `topk_rerank` too.
 */
export function parseRetrieveRequest(request: unknown, limits: RetrieveLimits): RetrieveRequest {
  const body = jsonObjectBody(request, '{"queries": ["..."], "topk": 3, "return_scores": true}');
  const queryTexts = readQueryTexts(body, limits);
  const questions = readQuestions(body, queryTexts.length, limits);
  const inputs = queryTexts.map((query, position) =>
    questions ? { query, question: questions[position]! } : { query },
  );
  const returnScores = readReturnScores(body);
  if (limits.rerank) return { inputs, ...readRerankCounts(body, limits, limits.rerank), returnScores };
  return { inputs, topk: readCount(body, TOPK_FIELDS, limits.defaultTopk, limits.maxTopk), returnScores };
}
