import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  constructRecords,
  newConstructionSummary,
  recordsFromRound,
  validateRound,
  type ConstructionSummary,
} from '../../src/training/construction.js';
import { constructTrainingFile } from '../../src/training/construction-file.js';
import { rejectionOf } from '../../src/training/fields.js';
import { itemsOfArray } from '../../src/training/jsonl.js';
import { validateRecord, type TrainingRecord } from '../../src/training/record.js';
import { SAMPLE_ROWS, scoredRound, temporaryDir } from '../support/training-fixtures.js';

const ROUND_OPTIONS = { dataset: 'default', corpusRows: SAMPLE_ROWS };

function build(scores: readonly (readonly [0 | 1, number])[], seed = 7, overrides: Record<string, unknown> = {}) {
  return recordsFromRound(validateRound(scoredRound(scores, overrides), ROUND_OPTIONS), seed);
}

function records(outcome: ReturnType<typeof build>): TrainingRecord[] {
  assert.ok('records' in outcome, `round was skipped: ${JSON.stringify(outcome)}`);
  return outcome.records;
}

async function constructAll(rounds: unknown[], seed: number, dataset = ROUND_OPTIONS.dataset): Promise<{ records: TrainingRecord[]; summary: ConstructionSummary }> {
  const summary = newConstructionSummary(seed);
  const out: TrainingRecord[] = [];
  for await (const built of constructRecords(itemsOfArray(rounds), { ...ROUND_OPTIONS, dataset, seed }, summary)) out.push(...built);
  return { records: out, summary };
}

/** `count` GAC-0 candidates with falling LR (all distinct, below any positive here). */
function wrong(count: number, from = 50): [0, number][] {
  return Array.from({ length: count }, (_, i) => [0, from - i] as [0, number]);
}

describe('step-4 construction', function () {
  it('ranks by GAC then LR, keeps ties in retrieval order, one record per tied positive, all 15 negatives in ranked order', function () {
    // Candidate i is row 100 + i; [GAC, LR] in retrieval order.
    const out = records(
      build([
        [0, 90], [1, 80], [1, 70], [1, 80], [0, 90], [0, 10], [1, 65], [0, 50], [0, 50],
        [0, 95], [1, 79], [0, 0], [0, 20], [0, 30], [0, 40], [0, 60], [0, 70],
      ]),
    );
    // Ranked: 101 (1,80), 103 (1,80) | 110 (1,79), 102 (1,70), 106 (1,65), 109 (0,95), 100 (0,90),
    // 104 (0,90), 116 (0,70), 115 (0,60), 107 (0,50), 108 (0,50), 114, 113, 112, 105, 111.
    const negatives = ['110', '102', '106', '109', '100', '104', '116', '115', '107', '108', '114', '113', '112', '105', '111'];
    const negativeScores = [
      { em: 1, local_utility: 0.79 }, { em: 1, local_utility: 0.7 }, { em: 1, local_utility: 0.65 },
      { em: 0, local_utility: 0.95 }, { em: 0, local_utility: 0.9 }, { em: 0, local_utility: 0.9 },
      { em: 0, local_utility: 0.7 }, { em: 0, local_utility: 0.6 }, { em: 0, local_utility: 0.5 },
      { em: 0, local_utility: 0.5 }, { em: 0, local_utility: 0.4 }, { em: 0, local_utility: 0.3 },
      { em: 0, local_utility: 0.2 }, { em: 0, local_utility: 0.1 }, { em: 0, local_utility: 0 },
    ];
    const common = {
      dataset: 'nq',
      query_id: 'train_5',
      question: 'Who wrote the anthem?',
      round_index: 2,
      history_queries: ['anthem author'],
      query_text: 'anthem lyrics writer',
    };
    assert.deepEqual(out, [
      { ...common, passage_ids: ['101', ...negatives], scores: [{ em: 1, local_utility: 0.8 }, ...negativeScores] },
      { ...common, passage_ids: ['103', ...negatives], scores: [{ em: 1, local_utility: 0.8 }, ...negativeScores] },
    ]);
    for (const record of out) assert.deepEqual(validateRecord(record, SAMPLE_ROWS), record);
  });

  it('keeps a round with exactly 15 negatives and skips one with 14', function () {
    const kept = records(build([[1, 75], ...wrong(15)]));
    assert.deepEqual(kept.map((record) => record.passage_ids), [
      ['100', '101', '102', '103', '104', '105', '106', '107', '108', '109', '110', '111', '112', '113', '114', '115'],
    ]);
    assert.deepEqual(build([[1, 75], ...wrong(14)]), { skipped: 'too_few_negatives' });
    // A second positive is not a negative: 2 positives + 14 others is still too few.
    assert.deepEqual(build([[1, 75], [1, 75], ...wrong(14)]), { skipped: 'too_few_negatives' });
  });

  it('needs the top candidate at LR >= 60: 59 is skipped, 60 is kept', function () {
    assert.deepEqual(build([...wrong(15, 58), [1, 59]]), { skipped: 'top_below_threshold' });
    const kept = records(build([...wrong(15, 58), [1, 60]]));
    assert.equal(kept.length, 1);
    assert.equal(kept[0]!.passage_ids[0], '115');
    assert.deepEqual(kept[0]!.scores[0], { em: 1, local_utility: 0.6 });
    assert.deepEqual(kept[0]!.passage_ids.slice(1), ['100', '101', '102', '103', '104', '105', '106', '107', '108', '109', '110', '111', '112', '113', '114']);
  });

  it('skips a round whose top candidate has GAC 0, however relevant', function () {
    assert.deepEqual(build([[0, 100], ...wrong(19)]), { skipped: 'top_not_correct' });
    assert.deepEqual(build([]), { skipped: 'top_not_correct' });
  });

  it('makes at most 3 records from more than 3 tied positives: the first three in retrieval order, the rest in no record', function () {
    const out = records(build([[0, 99], [1, 88], [1, 88], ...wrong(14), [1, 88], [1, 88]]));
    // Positives are rows 101, 102, 117, 118; 100 (0,99) then 103..116 are the 15 negatives.
    const negatives = ['100', '103', '104', '105', '106', '107', '108', '109', '110', '111', '112', '113', '114', '115', '116'];
    assert.deepEqual(out.map((record) => record.passage_ids), [['101', ...negatives], ['102', ...negatives], ['117', ...negatives]]);
    assert.ok(out.every((record) => !record.passage_ids.includes('118')));
  });

  it('samples 15 of more negatives with a seeded generator: same seed same sample, another seed another sample', function () {
    const scores: [0 | 1, number][] = [[1, 90], ...wrong(19)];
    const first = records(build(scores, 1));
    const again = records(build(scores, 1));
    const other = records(build(scores, 2));
    assert.deepEqual(again, first);
    assert.notDeepEqual(other[0]!.passage_ids, first[0]!.passage_ids);
    for (const record of [first[0]!, other[0]!]) {
      const [positive, ...negatives] = record.passage_ids;
      assert.equal(positive, '100');
      assert.equal(negatives.length, 15);
      assert.equal(new Set(negatives).size, 15);
      // Ranked order here is retrieval order (LR falls with i), so the sample must be ascending.
      assert.deepEqual(negatives, [...negatives].sort((a, b) => Number(a) - Number(b)));
      assert.ok(negatives.every((id) => Number(id) >= 101 && Number(id) <= 119));
    }
  });

  it('gives a round the same records whatever else is in its batch and in what order', async function () {
    const rounds = [
      scoredRound([[1, 90], ...wrong(19)], { query_id: 'a' }),
      scoredRound([[1, 70], ...wrong(19)], { query_id: 'b' }),
      scoredRound([[1, 80], ...wrong(18)], { query_id: 'c', round_index: 3 }),
    ];
    const forward = await constructAll(rounds, 11);
    const backward = await constructAll([...rounds].reverse(), 11);
    const byQuery = (list: TrainingRecord[]) => Object.fromEntries(list.map((record) => [record.query_id, record]));
    assert.deepEqual(byQuery(backward.records), byQuery(forward.records));
    const alone = await constructAll([rounds[1]], 11);
    assert.deepEqual(alone.records, [byQuery(forward.records).b]);
  });

  it('counts kept, skipped by reason and invalid rounds with their positions', async function () {
    const { records: out, summary } = await constructAll(
      [
        scoredRound([[1, 90], ...wrong(15)]),
        scoredRound([[0, 90], ...wrong(15)]),
        scoredRound([[1, 40], ...wrong(15, 30)]),
        scoredRound([[1, 90], ...wrong(3)]),
        { ...scoredRound([[1, 90]]), question: 5 },
        scoredRound([[1, 90], [0, 120]]),
        { ...scoredRound([[1, 90]]), candidates: [{ passage_id: 1000, local_relevance: 90, answer_correct: 1 }] },
        { ...scoredRound([]), candidates: [{ passage_id: 3, local_relevance: 90, answer_correct: 0.5 }] },
      ],
      3,
    );
    assert.equal(out.length, 1);
    assert.deepEqual(
      { ...summary, invalidRounds: summary.invalidRounds.map(({ index, reason, field }) => ({ index, reason, field })) },
      {
        seed: 3,
        rounds: 8,
        kept: 1,
        records: 1,
        skipped: { top_not_correct: 1, top_below_threshold: 1, too_few_negatives: 1 },
        invalid: 4,
        invalidRounds: [
          { index: 4, reason: 'wrong_type', field: 'question' },
          { index: 5, reason: 'invalid_value', field: 'candidates[1].local_relevance' },
          { index: 6, reason: 'unknown_passage', field: 'candidates[0].passage_id' },
          { index: 7, reason: 'invalid_value', field: 'candidates[0].answer_correct' },
        ],
      },
    );
  });

  it('refuses a round with an empty dataset or a query_text that carries the question joined with [SEP], and an empty default dataset', async function () {
    const invalid = (overrides: Record<string, unknown>) => {
      try {
        validateRound({ ...scoredRound([[1, 90]]), ...overrides }, ROUND_OPTIONS);
      } catch (error) {
        return rejectionOf(error);
      }
      return assert.fail('expected a rejection');
    };
    assert.deepEqual(invalid({ dataset: '' }), { reason: 'invalid_value', message: 'dataset must not be empty', field: 'dataset' });
    await assert.rejects(constructAll([scoredRound([[1, 90], ...wrong(15)], { dataset: undefined })], 0, ''), {
      code: 'bad_request',
      message: 'dataset must not be empty',
    });
    assert.deepEqual(
      [invalid({ query_text: 'Who founded Copenhagen? [SEP] Absalon' }).reason, invalid({ query_text: 'Who founded Copenhagen? [SEP] Absalon' }).field],
      ['query_has_separator', 'query_text'],
    );
  });

  it('fills in a missing dataset and history, and accepts numeric passage ids', function () {
    const round = validateRound({ ...scoredRound([[1, 90]]), dataset: undefined, history_queries: undefined }, ROUND_OPTIONS);
    assert.equal(round.dataset, 'default');
    assert.deepEqual(round.history_queries, []);
    const numeric = validateRound({ ...scoredRound([]), candidates: [{ passage_id: 42, local_relevance: 61, answer_correct: 1 }] }, ROUND_OPTIONS);
    assert.equal(numeric.candidates[0]!.passage_id, '42');
  });

  it('constructs from a JSONL file into a JSONL file with the same records as in memory', async function () {
    const dir = await temporaryDir('construct-file');
    try {
      const rounds = [scoredRound([[1, 90], ...wrong(19)], { query_id: 'x' }), scoredRound([[0, 90], ...wrong(19)], { query_id: 'y' })];
      const input = path.join(dir, 'rounds.jsonl');
      const output = path.join(dir, 'records.jsonl');
      await writeFile(input, `${rounds.map((round) => JSON.stringify(round)).join('\n')}\n\nnot json`);
      const summary = await constructTrainingFile(input, output, { ...ROUND_OPTIONS, seed: 5 });
      const expected = await constructAll(rounds, 5);
      const written = (await readFile(output, 'utf8')).split('\n');
      assert.equal(written.pop(), '');
      assert.deepEqual(written.map((line) => JSON.parse(line)), expected.records);
      assert.equal(summary.rounds, 3);
      assert.equal(summary.kept, 1);
      assert.deepEqual(summary.invalidRounds.map(({ index, line, reason }) => ({ index, line, reason })), [{ index: 2, line: 4, reason: 'malformed_json' }]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
