import assert from 'node:assert/strict';
import { ServiceError } from '../../src/errors.js';
import { rejectionOf } from '../../src/training/fields.js';
import { fromLegacyRecord, titleAndText } from '../../src/training/legacy.js';
import { serialiseRecord, validateRecord } from '../../src/training/record.js';
import { makeRecord, SAMPLE_ROWS } from '../support/training-fixtures.js';

function rejection(run: () => unknown) {
  try {
    run();
  } catch (error) {
    return rejectionOf(error);
  }
  assert.fail('expected a rejection');
}

describe('training record validation', function () {
  it('returns the stored shape: contract fields only, in contract order', function () {
    const record = makeRecord();
    const withExtras = { extra: 1, ...record, scores: record.scores.map((score) => ({ ...score, note: 'x' })) };
    const validated = validateRecord(withExtras, SAMPLE_ROWS);
    assert.deepEqual(validated, record);
    assert.equal(serialiseRecord(validated), JSON.stringify(record));
  });

  it('refuses a negative tied with the positive on both scores or above it, and an id past the last corpus row', function () {
    const tied = makeRecord();
    tied.scores[7] = { ...tied.scores[0]! };
    assert.deepEqual(rejection(() => validateRecord(tied, SAMPLE_ROWS)), {
      reason: 'negative_ties_positive',
      message: `passage_ids[7] ties the positive (em 1, local_utility ${tied.scores[0]!.local_utility}): a candidate as good as the best is a positive, not a negative; send it as the positive of its own record`,
      field: 'scores[7]',
    });
    const tiedOnEmOnly = makeRecord();
    tiedOnEmOnly.scores[7] = { em: 1, local_utility: tiedOnEmOnly.scores[0]!.local_utility - 0.01 };
    assert.deepEqual(validateRecord(tiedOnEmOnly, SAMPLE_ROWS), tiedOnEmOnly);
    const above = makeRecord();
    above.scores[7] = { em: 1, local_utility: 0.86 };
    assert.deepEqual(rejection(() => validateRecord(above, SAMPLE_ROWS)), {
      reason: 'positive_not_first',
      message: 'passage_ids[7] (em 1, local_utility 0.86) outranks the positive',
      field: 'scores[7]',
    });
    const lastRow = makeRecord({}, SAMPLE_ROWS - 16);
    assert.equal(validateRecord(lastRow, SAMPLE_ROWS).passage_ids[15], '999');
    assert.equal(rejection(() => validateRecord(makeRecord({}, SAMPLE_ROWS - 15), SAMPLE_ROWS)).reason, 'unknown_passage');
  });

  it('names the field and reason for bad scores, ids and shapes', function () {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ scores: makeRecord().scores.map((s, i) => (i === 2 ? { em: 0 } : s)) }, 'missing_field', 'scores[2].local_utility'],
      [{ scores: makeRecord().scores.map((s, i) => (i === 2 ? { ...s, em: '0' } : s)) }, 'wrong_type', 'scores[2].em'],
      [{ scores: makeRecord().scores.map((s, i) => (i === 2 ? { ...s, local_utility: 1.5 } : s)) }, 'invalid_value', 'scores[2].local_utility'],
      [{ passage_ids: [0, ...makeRecord().passage_ids.slice(1)] }, 'wrong_type', 'passage_ids[0]'],
      [{ passage_ids: ['-1', ...makeRecord().passage_ids.slice(1)] }, 'invalid_value', 'passage_ids[0]'],
      [{ passage_ids: [], scores: [] }, 'invalid_value', 'passage_ids'],
      [{ history_queries: ['a', 3] }, 'wrong_type', 'history_queries[1]'],
      [{ round_index: 1.5 }, 'invalid_value', 'round_index'],
      [{ dataset: null }, 'missing_field', 'dataset'],
      [{ dataset: '' }, 'invalid_value', 'dataset'],
      [{ query_text: 'Where did Horatio Hale study? [SEP] horatio hale education' }, 'query_has_separator', 'query_text'],
      [{ query_text: 'horatio hale [SEP]' }, 'query_has_separator', 'query_text'],
    ];
    for (const [overrides, reason, field] of cases) {
      const found = rejection(() => validateRecord({ ...makeRecord(), ...overrides }, SAMPLE_ROWS));
      assert.deepEqual([found.reason, found.field], [reason, field], JSON.stringify(overrides));
    }
    assert.equal(rejection(() => validateRecord([makeRecord()], SAMPLE_ROWS)).reason, 'wrong_type');
  });

  it('rethrows what is not a rejection', function () {
    assert.throws(() => rejectionOf(new ServiceError('internal', 'disk gone')), /disk gone/);
  });
});

describe('tevatron legacy format', function () {
  it('reads a query without [SEP] as both question and sub-query, and names a missing docid', function () {
    const [record] = fromLegacyRecord(
      { query_id: 7, query: 'who wrote hamlet', positive_passages: [{ docid: '3' }], negative_passages: [{ docid: 4 }] },
      'nq',
      SAMPLE_ROWS,
    );
    assert.deepEqual(record, {
      dataset: 'nq',
      query_id: '7',
      question: 'who wrote hamlet',
      round_index: 1,
      history_queries: [],
      query_text: 'who wrote hamlet',
      passage_ids: ['3', '4'],
      scores: [{ em: 1, local_utility: 1 }, { em: 0, local_utility: 0 }],
    });
    assert.deepEqual(
      rejection(() => fromLegacyRecord({ query_id: 'x', query: 'q', positive_passages: [{ title: 't' }] }, 'nq', SAMPLE_ROWS)),
      { reason: 'missing_field', message: 'positive_passages[0].docid is required', field: 'positive_passages[0].docid' },
    );
    assert.equal(rejection(() => fromLegacyRecord({ query_id: 'x', query: 'q', positive_passages: [] }, 'nq', SAMPLE_ROWS)).reason, 'invalid_value');
  });

  it('names the docid field the client sent when a docid is not a row of the served corpus', function () {
    const legacy = { query_id: 'x', query: 'q', positive_passages: [{ docid: '3' }], negative_passages: [{ docid: '4' }, { docid: SAMPLE_ROWS }] };
    assert.deepEqual(rejection(() => fromLegacyRecord(legacy, 'nq', SAMPLE_ROWS)), {
      reason: 'unknown_passage',
      message: `negative_passages[1].docid = ${SAMPLE_ROWS} is not a row of the served corpus (${SAMPLE_ROWS} rows)`,
      field: 'negative_passages[1].docid',
    });
    const positive = { ...legacy, positive_passages: [{ docid: 'doc-3' }] };
    assert.deepEqual(rejection(() => fromLegacyRecord(positive, 'nq', SAMPLE_ROWS)).field, 'positive_passages[0].docid');
  });

  it('splits contents into title (surrounding quotes removed, doubled ones too) and text at the first newline', function () {
    assert.deepEqual(titleAndText('"Pavia Cathedral"\non March 17, 1989.\nmore'), { title: 'Pavia Cathedral', text: 'on March 17, 1989.\nmore' });
    assert.deepEqual(titleAndText('""Havn""\ntext "quoted"'), { title: 'Havn', text: 'text "quoted"' });
    assert.deepEqual(titleAndText('Absalon\ntext'), { title: 'Absalon', text: 'text' });
    assert.deepEqual(titleAndText('no newline'), { title: 'no newline', text: '' });
  });
});
