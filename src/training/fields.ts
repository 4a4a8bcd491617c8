import { ServiceError } from '../errors.js';

/** Why one input record (or scored round) was refused; machine-readable, stable across releases. */
export const REJECTION_REASONS = [
  'malformed_json',
  'missing_field',
  'wrong_type',
  'invalid_value',
  'misaligned_scores',
  'unknown_passage',
  'positive_not_first',
  'duplicate_passage',
  'query_has_separator',
  'negative_ties_positive',
] as const;

export type RejectionReason = (typeof REJECTION_REASONS)[number];

export interface Rejection {
  reason: RejectionReason;
  message: string;
  /** The offending field, as a path such as `scores[3].em`. */
  field?: string;
}

/**
 * Field checks throw; the per-record entry points catch and turn the throw into a `Rejection`
 * value, so one bad record never fails the request that carried it.
 */
export function reject(reason: RejectionReason, message: string, field?: string): never {
  throw new ServiceError('bad_request', message, { reason, field });
}

export function rejectionOf(error: unknown): Rejection {
  if (error instanceof ServiceError && error.details && typeof error.details.reason === 'string') {
    const { reason, field } = error.details as { reason: RejectionReason; field?: string };
    return field === undefined ? { reason, message: error.message } : { reason, message: error.message, field };
  }
  throw error;
}

export type JsonObject = Record<string, unknown>;

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function objectAt(value: unknown, field: string): JsonObject {
  if (!isObject(value)) reject('wrong_type', `${field} must be a JSON object`, field);
  return value;
}

function present(object: JsonObject, name: string, prefix = ''): unknown {
  const value = object[name];
  if (value === undefined || value === null) reject('missing_field', `${prefix}${name} is required`, `${prefix}${name}`);
  return value;
}

export function stringField(object: JsonObject, name: string, prefix = ''): string {
  const value = present(object, name, prefix);
  if (typeof value !== 'string') reject('wrong_type', `${prefix}${name} must be a string`, `${prefix}${name}`);
  return value;
}

export function nonEmptyStringField(object: JsonObject, name: string, prefix = ''): string {
  const value = stringField(object, name, prefix);
  if (value === '') reject('invalid_value', `${prefix}${name} must not be empty`, `${prefix}${name}`);
  return value;
}

/** C0/C1 control characters (NUL included) and UTF-16 surrogates that pair with nothing. */
const NOT_IN_A_NAME = /[\p{Cc}\p{Cs}]/u;

/**
 * A name (dataset, query_id, a version label) keys records and goes into exports, file names and
 * logs downstream, where a control character hides or breaks the line and a lone surrogate cannot
 * be written as UTF-8 at all: refused, naming the character. Texts (questions, queries) may hold
 * anything, as the reference accepts them.
 */
export function checkedName(value: string, field: string): string {
  const found = NOT_IN_A_NAME.exec(value);
  if (found) {
    const code = `U+${found[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
    const kind = found[0] >= '\uD800' ? 'a lone surrogate' : 'a control character';
    reject('invalid_value', `${field} must not hold control characters or lone surrogates: ${kind} (${code}) at position ${found.index}`, field);
  }
  return value;
}

/** What the Agentic-R trainer puts between the question and the sub-query when it joins them. */
export const QUERY_SEPARATOR_TOKEN = '[SEP]';

/** `query_text`: the bare sub-query. A joined "question [SEP] sub-query" would be joined again by the trainer. */
export function queryTextField(object: JsonObject): string {
  const value = stringField(object, 'query_text');
  if (value.includes(QUERY_SEPARATOR_TOKEN)) {
    reject(
      'query_has_separator',
      `query_text must be the bare sub-query, without ${QUERY_SEPARATOR_TOKEN}: the trainer joins the question to it itself`,
      'query_text',
    );
  }
  return value;
}

export function nonNegativeIntegerField(object: JsonObject, name: string, prefix = ''): number {
  const value = present(object, name, prefix);
  if (typeof value !== 'number') reject('wrong_type', `${prefix}${name} must be a number`, `${prefix}${name}`);
  if (!Number.isSafeInteger(value) || value < 0) {
    reject('invalid_value', `${prefix}${name} must be a non-negative integer, got ${value}`, `${prefix}${name}`);
  }
  return value;
}

/** A finite number within [min, max]. */
export function boundedNumberField(object: JsonObject, name: string, min: number, max: number, prefix = ''): number {
  const value = present(object, name, prefix);
  if (typeof value !== 'number') reject('wrong_type', `${prefix}${name} must be a number`, `${prefix}${name}`);
  if (!Number.isFinite(value) || value < min || value > max) {
    reject('invalid_value', `${prefix}${name} must lie in [${min}, ${max}], got ${value}`, `${prefix}${name}`);
  }
  return value;
}

export function arrayField(object: JsonObject, name: string, prefix = ''): unknown[] {
  const value = present(object, name, prefix);
  if (!Array.isArray(value)) reject('wrong_type', `${prefix}${name} must be an array`, `${prefix}${name}`);
  return value;
}

export function stringArrayField(object: JsonObject, name: string): string[] {
  return arrayField(object, name).map((item, i) => {
    if (typeof item !== 'string') reject('wrong_type', `${name}[${i}] must be a string`, `${name}[${i}]`);
    return item;
  });
}

const ROW_ID = /^(0|[1-9][0-9]*)$/;

/**
 * A passage id is a corpus row number written in decimal (the pipeline's `id == str(line)`).
 * Numbers are accepted only where the producer is ours to normalise (`allowNumber`).
 */
export function passageIdAt(value: unknown, field: string, corpusRows: number | undefined, allowNumber = false): string {
  let text: string;
  if (typeof value === 'string') text = value;
  else if (allowNumber && typeof value === 'number') text = String(value);
  else reject('wrong_type', `${field} must be a string holding a corpus row number`, field);
  if (!ROW_ID.test(text) || !Number.isSafeInteger(Number(text))) {
    reject('invalid_value', `${field} must be a non-negative integer row number, got ${JSON.stringify(text)}`, field);
  }
  if (corpusRows !== undefined && Number(text) >= corpusRows) {
    reject('unknown_passage', `${field} = ${text} is not a row of the served corpus (${corpusRows} rows)`, field);
  }
  return text;
}

/** Refuses a list of passage ids that names a row twice. */
export function checkDistinct(passageIds: readonly string[], name: string): void {
  const seen = new Map<string, number>();
  passageIds.forEach((passageId, i) => {
    const first = seen.get(passageId);
    if (first !== undefined) {
      reject('duplicate_passage', `passage ${passageId} appears twice (${name}[${first}] and ${name}[${i}])`, `${name}[${i}]`);
    }
    seen.set(passageId, i);
  });
}
