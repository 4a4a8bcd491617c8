import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ScoredCandidate } from '../../src/training/construction.js';
import type { TrainingRecord } from '../../src/training/record.js';
export { SAMPLE_CORPUS as samplePath } from './sample-data.js';

/** Rows of the 1k wiki18 sample: passage ids must be below it. */
export const SAMPLE_ROWS = 1000;

export function temporaryDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `training-${prefix}-`));
}

/** A valid 16-passage record: positive row `first`, negatives the next 15 rows, utilities falling. */
export function makeRecord(overrides: Partial<TrainingRecord> = {}, first = 0): TrainingRecord {
  const passageIds = Array.from({ length: 16 }, (_, i) => String(first + i));
  return {
    dataset: 'hotpotqa',
    query_id: 'train_17',
    question: 'Which city hosts the cathedral?',
    round_index: 1,
    history_queries: [],
    query_text: 'cathedral city',
    passage_ids: passageIds,
    scores: passageIds.map((_, i) => (i === 0 ? { em: 1, local_utility: 0.85 } : { em: 0, local_utility: (15 - i) / 20 })),
    ...overrides,
  };
}

/** Candidates in retrieval order from `[answer_correct, local_relevance]` pairs; passage i is row 100 + i. */
export function candidates(scores: readonly (readonly [0 | 1, number])[]): ScoredCandidate[] {
  return scores.map(([answerCorrect, localRelevance], i) => ({
    passage_id: String(100 + i),
    local_relevance: localRelevance,
    answer_correct: answerCorrect,
  }));
}

export function scoredRound(scores: readonly (readonly [0 | 1, number])[], overrides: Record<string, unknown> = {}) {
  return {
    dataset: 'nq',
    query_id: 'train_5',
    question: 'Who wrote the anthem?',
    round_index: 2,
    history_queries: ['anthem author'],
    query_text: 'anthem lyrics writer',
    candidates: candidates(scores),
    ...overrides,
  };
}
