import { createHash } from 'node:crypto';
import {
  arrayField,
  boundedNumberField,
  checkDistinct,
  checkedName,
  nonEmptyStringField,
  nonNegativeIntegerField,
  objectAt,
  passageIdAt,
  queryTextField,
  reject,
  stringArrayField,
  stringField,
  type JsonObject,
} from './fields.js';

/** `em`: global answer correctness (GAC, 0 or 1); `local_utility`: the judge's LR / 100. */
export interface PassageScore {
  em: number;
  local_utility: number;
}

/** One Agentic-R "step 4" training record (contracts §4): `passage_ids[0]` is the positive. */
export interface TrainingRecord {
  dataset: string;
  query_id: string;
  question: string;
  round_index: number;
  history_queries: string[];
  query_text: string;
  passage_ids: string[];
  scores: PassageScore[];
}

/** Higher first: by `em`, then by `local_utility` — the order construction ranks candidates in. */
export function compareScores(a: PassageScore, b: PassageScore): number {
  return b.em - a.em || b.local_utility - a.local_utility;
}

/**
 * Checks an Agentic-R record and returns it in the stored shape: exactly the contract's fields
 * (unknown fields are dropped, so they cannot make a re-sent record look new).
 */
export function validateRecord(value: unknown, corpusRows: number): TrainingRecord {
  const object = objectAt(value, 'record');
  const record: TrainingRecord = {
    dataset: checkedName(nonEmptyStringField(object, 'dataset'), 'dataset'),
    query_id: checkedName(stringField(object, 'query_id'), 'query_id'),
    question: stringField(object, 'question'),
    round_index: nonNegativeIntegerField(object, 'round_index'),
    history_queries: stringArrayField(object, 'history_queries'),
    query_text: queryTextField(object),
    passage_ids: [],
    scores: [],
  };
  const passageIds = arrayField(object, 'passage_ids');
  const scores = arrayField(object, 'scores');
  if (passageIds.length === 0) reject('invalid_value', 'passage_ids must hold at least the positive passage', 'passage_ids');
  if (scores.length !== passageIds.length) {
    reject('misaligned_scores', `scores has ${scores.length} entries for ${passageIds.length} passage_ids`, 'scores');
  }
  record.passage_ids = passageIds.map((id, i) => passageIdAt(id, `passage_ids[${i}]`, corpusRows));
  record.scores = scores.map((score, i) => scoreAt(score, `scores[${i}]`));
  checkDistinct(record.passage_ids, 'passage_ids');
  checkPositiveFirst(record.scores);
  return record;
}

function scoreAt(value: unknown, field: string): PassageScore {
  const object: JsonObject = objectAt(value, field);
  return {
    em: boundedNumberField(object, 'em', 0, 1, `${field}.`),
    local_utility: boundedNumberField(object, 'local_utility', 0, 1, `${field}.`),
  };
}

/**
 * The positive must answer correctly and rank first. A negative may not tie it on both scores:
 * by the Agentic-R rule every candidate tied with the top one is a positive.
 */
function checkPositiveFirst(scores: readonly PassageScore[]): void {
  const positive = scores[0]!;
  if (positive.em !== 1) reject('positive_not_first', `scores[0].em must be 1 for the positive, got ${positive.em}`, 'scores[0].em');
  scores.forEach((score, i) => {
    const order = i === 0 ? -1 : compareScores(positive, score);
    if (order > 0) {
      reject(
        'positive_not_first',
        `passage_ids[${i}] (em ${score.em}, local_utility ${score.local_utility}) outranks the positive`,
        `scores[${i}]`,
      );
    }
    if (order === 0) {
      reject(
        'negative_ties_positive',
        `passage_ids[${i}] ties the positive (em ${score.em}, local_utility ${score.local_utility}): a candidate as good as the best is a positive, not a negative; send it as the positive of its own record`,
        `scores[${i}]`,
      );
    }
  });
}

/**
 * The stored line of a record: its canonical serialisation, the contract's fields in the
 * contract's order whatever order the object was built in, so equal content gives equal bytes.
 */
export function serialiseRecord(record: TrainingRecord): string {
  return JSON.stringify({
    dataset: record.dataset,
    query_id: record.query_id,
    question: record.question,
    round_index: record.round_index,
    history_queries: record.history_queries,
    query_text: record.query_text,
    passage_ids: record.passage_ids,
    scores: record.scores.map(({ em, local_utility }) => ({ em, local_utility })),
  });
}

/** Idempotency key of a stored line: 128 bits of SHA-256 (collisions are out of reach at any corpus size). */
export function recordKey(line: string): string {
  return createHash('sha256').update(line).digest('base64url').slice(0, 22);
}
