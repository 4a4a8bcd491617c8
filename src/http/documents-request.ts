import type { DocumentKeys } from '../engine/types.js';
import { ServiceError } from '../errors.js';
import { describe, invalid, jsonObjectBody } from './retrieve-request.js';

/** How `/documents` keys are read: as the corpus `id` field (default) or as 0-based row numbers (`?by=row`). */
export type DocumentLookup = DocumentKeys['by'];

const ROW_TEXT = /^\d+$/;
/** How many unknown keys a 404's message names; its `ids` lists them all. */
const NAMED_IN_MESSAGE = 10;

export function parseLookup(by: unknown): DocumentLookup {
  if (by === undefined || by === 'id' || by === 'row') return by ?? 'id';
  throw invalid('by', `must be "id" (the corpus id field, the default) or "row" (the 0-based row number), got ${describe(by)}`);
}

function rowNumber(value: unknown, field: string): number {
  const row = typeof value === 'string' && ROW_TEXT.test(value) ? Number(value) : value;
  if (typeof row !== 'number' || !Number.isSafeInteger(row) || row < 0) {
    throw invalid(field, `must be a row number (an integer from 0), got ${describe(value)}`);
  }
  return row;
}

/** An id as a string; clients that hold FlashRAG's numeric ids may send them as JSON integers. */
function corpusId(value: unknown, field: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  throw invalid(field, `must be a string (or an integer), got ${describe(value)}`);
}

/** The key of `GET /documents/{id}`. */
export function parseDocumentPath(id: string, by: DocumentLookup): DocumentKeys {
  return by === 'id' ? { by, ids: [id] } : { by, rows: [rowNumber(id, 'id')] };
}

/** The keys of `POST /documents {"ids": [...]}`: at most `maxIds` (`--max_queries`, the bound of `/retrieve`'s `queries`). */
export function parseDocumentsRequest(request: unknown, by: DocumentLookup, maxIds: number): DocumentKeys {
  const body = jsonObjectBody(request, '{"ids": ["0", "17"]}');
  if (body.ids === undefined) throw invalid('ids', 'required: an array of corpus ids (or row numbers with ?by=row)');
  if (!Array.isArray(body.ids)) throw invalid('ids', `must be an array, got ${describe(body.ids)}`);
  if (body.ids.length > maxIds) throw invalid('ids', `${body.ids.length} ids exceed the limit of ${maxIds} per request (--max_queries)`);
  const values: unknown[] = body.ids;
  return by === 'id'
    ? { by, ids: values.map((value, at) => corpusId(value, `ids[${at}]`)) }
    : { by, rows: values.map((value, at) => rowNumber(value, `ids[${at}]`)) };
}

/**
 * The 404 for keys the corpus does not have (`missing`: their positions), listing them in `ids`,
 * each once, in the order asked; `field` is the request field that named them.
 */
export function unknownKeysError(keys: DocumentKeys, missing: readonly number[], field: string, corpusRows?: number): ServiceError {
  const values = keys.by === 'id' ? keys.ids : keys.rows;
  const unknown = [...new Set(missing.map((at) => values[at]!))];
  const named = unknown.slice(0, NAMED_IN_MESSAGE).map((value) => JSON.stringify(value)).join(', ');
  const more = unknown.length > NAMED_IN_MESSAGE ? ` and ${unknown.length - NAMED_IN_MESSAGE} more` : '';
  const message =
    keys.by === 'id'
      ? `${unknown.length === 1 ? 'id' : 'ids'} ${named}${more} not in the corpus`
      : `${unknown.length === 1 ? 'row' : 'rows'} ${named}${more} past the end of the corpus${corpusRows === undefined ? '' : ` (${corpusRows} rows, numbered from 0)`}`;
  return new ServiceError('not_found', message, { field, ids: unknown });
}
