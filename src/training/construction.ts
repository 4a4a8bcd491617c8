import { createHash } from 'node:crypto';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
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
  rejectionOf,
  stringArrayField,
  stringField,
  type Rejection,
} from './fields.js';
import { ServiceError } from '../errors.js';
import { positionOf, type InputItem, type ItemPosition } from './jsonl.js';
import type { TrainingRecord } from './record.js';

/** The Agentic-R step-4 rule (contracts §4). */
export const CONSTRUCTION_RULE = {
  /** The top candidate's local relevance (0–100) must reach this. */
  minTopRelevance: 60,
  /** Records per round at most: one per positive, the first ones in ranked order. */
  maxPositivesPerRound: 3,
  /** Negatives per record, sampled from all non-positive candidates. */
  negativesPerRecord: 15,
} as const;

export interface ScoredCandidate {
  passage_id: string;
  /** The judge's local relevance LR, 0–100. */
  local_relevance: number;
  /** Global answer correctness GAC: 1 when the agent reached the gold answer with this passage. */
  answer_correct: 0 | 1;
}

/** One search round of an agent trajectory with its candidates scored, in retrieval order. */
export interface ScoredRound {
  dataset: string;
  query_id: string;
  question: string;
  round_index: number;
  history_queries: string[];
  query_text: string;
  candidates: ScoredCandidate[];
}

/** Dataset of rounds that name none, when the caller names none either. */
export const DEFAULT_ROUND_DATASET = 'default';

export type SkipReason = 'top_not_correct' | 'top_below_threshold' | 'too_few_negatives';

export interface RoundOptions {
  /** Dataset for rounds that name none. */
  dataset: string;
  /** When set, candidates must be rows of the served corpus. */
  corpusRows?: number;
}

export function validateRound(value: unknown, options: RoundOptions): ScoredRound {
  const object = objectAt(value, 'round');
  const dataset = object.dataset === undefined || object.dataset === null ? options.dataset : checkedName(nonEmptyStringField(object, 'dataset'), 'dataset');
  const history = object.history_queries === undefined || object.history_queries === null ? [] : stringArrayField(object, 'history_queries');
  const round: ScoredRound = {
    dataset,
    query_id: checkedName(stringField(object, 'query_id'), 'query_id'),
    question: stringField(object, 'question'),
    round_index: nonNegativeIntegerField(object, 'round_index'),
    history_queries: history,
    query_text: queryTextField(object),
    candidates: arrayField(object, 'candidates').map((candidate, i) => candidateAt(candidate, `candidates[${i}]`, options)),
  };
  checkDistinct(
    round.candidates.map((candidate) => candidate.passage_id),
    'candidates',
  );
  return round;
}

function candidateAt(value: unknown, field: string, options: RoundOptions): ScoredCandidate {
  const object = objectAt(value, field);
  if (object.passage_id === undefined || object.passage_id === null) {
    reject('missing_field', `${field}.passage_id is required`, `${field}.passage_id`);
  }
  const passageId = passageIdAt(object.passage_id, `${field}.passage_id`, options.corpusRows, true);
  const localRelevance = boundedNumberField(object, 'local_relevance', 0, 100, `${field}.`);
  const answerCorrect = boundedNumberField(object, 'answer_correct', 0, 1, `${field}.`);
  if (answerCorrect !== 0 && answerCorrect !== 1) {
    reject('invalid_value', `${field}.answer_correct must be 0 or 1, got ${answerCorrect}`, `${field}.answer_correct`);
  }
  return { passage_id: passageId, local_relevance: localRelevance, answer_correct: answerCorrect };
}

/** GAC desc, then LR desc; `Array.prototype.sort` is stable, so ties keep retrieval order. */
function rank(candidates: readonly ScoredCandidate[]): ScoredCandidate[] {
  return [...candidates].sort((a, b) => b.answer_correct - a.answer_correct || b.local_relevance - a.local_relevance);
}

/**
 * The records one round yields, or why it yields none. Negatives are sampled by a generator
 * seeded from (seed, dataset, query_id, round_index), so a round's records do not depend on
 * which other rounds share its batch or in what order they come.
 */
export function recordsFromRound(round: ScoredRound, seed: number): { records: TrainingRecord[] } | { skipped: SkipReason } {
  const ranked = rank(round.candidates);
  const top = ranked[0];
  if (!top || top.answer_correct !== 1) return { skipped: 'top_not_correct' };
  if (top.local_relevance < CONSTRUCTION_RULE.minTopRelevance) return { skipped: 'top_below_threshold' };
  const tiedWithTop = (candidate: ScoredCandidate) =>
    candidate.answer_correct === top.answer_correct && candidate.local_relevance === top.local_relevance;
  const positives = ranked.filter(tiedWithTop);
  const negatives = ranked.filter((candidate) => !tiedWithTop(candidate));
  if (negatives.length < CONSTRUCTION_RULE.negativesPerRecord) return { skipped: 'too_few_negatives' };
  const sampled = sampleInRankedOrder(negatives, CONSTRUCTION_RULE.negativesPerRecord, roundSeed(seed, round));
  const records = positives.slice(0, CONSTRUCTION_RULE.maxPositivesPerRound).map((positive) => ({
    dataset: round.dataset,
    query_id: round.query_id,
    question: round.question,
    round_index: round.round_index,
    history_queries: [...round.history_queries],
    query_text: round.query_text,
    passage_ids: [positive, ...sampled].map((candidate) => candidate.passage_id),
    scores: [positive, ...sampled].map((candidate) => ({
      em: candidate.answer_correct,
      local_utility: candidate.local_relevance / 100,
    })),
  }));
  return { records };
}

export function roundSeed(seed: number, round: Pick<ScoredRound, 'dataset' | 'query_id' | 'round_index'>): number {
  const digest = createHash('sha256')
    .update(JSON.stringify([seed, round.dataset, round.query_id, round.round_index]))
    .digest();
  return digest.readInt32LE(0);
}

/** `count` of `items` drawn uniformly without replacement (partial Fisher–Yates), kept in input order. */
function sampleInRankedOrder<T>(items: readonly T[], count: number, seed: number): T[] {
  const rng = xoroshiro128plus(seed);
  const order = items.map((_, i) => i);
  for (let i = 0; i < count; i += 1) {
    const j = uniformInt(rng, i, order.length - 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order
    .slice(0, count)
    .sort((a, b) => a - b)
    .map((i) => items[i]!);
}

export type InvalidRound = ItemPosition & Rejection;

export interface ConstructionSummary {
  seed: number;
  rounds: number;
  kept: number;
  records: number;
  skipped: Record<SkipReason, number>;
  invalid: number;
  /** The first invalid rounds, with where they were and why (capped, see `invalid` for the count). */
  invalidRounds: InvalidRound[];
}

const INVALID_ROUNDS_LISTED = 100;

export interface ConstructionOptions extends RoundOptions {
  seed: number;
}

export function newConstructionSummary(seed: number): ConstructionSummary {
  return {
    seed,
    rounds: 0,
    kept: 0,
    records: 0,
    skipped: { top_not_correct: 0, top_below_threshold: 0, too_few_negatives: 0 },
    invalid: 0,
    invalidRounds: [],
  };
}

/**
 * Builds records from scored rounds in input order, yielding each kept round's records before
 * reading the next round (so a file of any size streams through) and counting into `summary`.
 */
export async function* constructRecords(
  items: AsyncIterable<InputItem> | Iterable<InputItem>,
  options: ConstructionOptions,
  summary: ConstructionSummary,
): AsyncGenerator<TrainingRecord[]> {
  if (options.dataset === '') throw new ServiceError('bad_request', 'dataset must not be empty', { field: 'dataset' });
  for await (const item of items) {
    summary.rounds += 1;
    let round: ScoredRound;
    try {
      if ('parseError' in item) reject('malformed_json', `not JSON: ${item.parseError}`);
      round = validateRound(item.value, options);
    } catch (error) {
      summary.invalid += 1;
      if (summary.invalidRounds.length < INVALID_ROUNDS_LISTED) summary.invalidRounds.push({ ...positionOf(item), ...rejectionOf(error) });
      continue;
    }
    const outcome = recordsFromRound(round, options.seed);
    if ('skipped' in outcome) {
      summary.skipped[outcome.skipped] += 1;
      continue;
    }
    summary.kept += 1;
    summary.records += outcome.records.length;
    yield outcome.records;
  }
}
