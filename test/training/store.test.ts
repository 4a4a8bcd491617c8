import assert from 'node:assert/strict';
import { appendFile, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ServiceError } from '../../src/errors.js';
import { COUNTERS_FILE, EXAMPLES_FILE, TrainingExampleStore } from '../../src/training/store.js';
import type { TrainingRecord } from '../../src/training/record.js';
import { makeRecord, temporaryDir } from '../support/training-fixtures.js';

async function collect(iterable: AsyncIterable<TrainingRecord>): Promise<TrainingRecord[]> {
  const out: TrainingRecord[] = [];
  for await (const record of iterable) out.push(record);
  return out;
}

describe('TrainingExampleStore', function () {
  let dir: string;
  let store: TrainingExampleStore | undefined;

  beforeEach(async function () {
    dir = await temporaryDir('store');
  });

  afterEach(async function () {
    await store?.close();
    store = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('appends records as canonical JSON lines and reads them back in order, across a reopen', async function () {
    store = await TrainingExampleStore.open(dir);
    const first = makeRecord({ query_id: 'a' });
    const second = makeRecord({ query_id: 'b', round_index: 2 });
    assert.deepEqual(await store.append([first, second]), ['accepted', 'accepted']);
    const text = await readFile(path.join(dir, EXAMPLES_FILE), 'utf8');
    assert.equal(text, `${JSON.stringify(first)}\n${JSON.stringify(second)}\n`);
    await store.close();
    store = await TrainingExampleStore.open(dir);
    assert.equal(store.truncatedBytes, 0);
    assert.deepEqual(await collect(store.records()), [first, second]);
  });

  it('answers duplicate for re-sent content, within one batch and after a reopen, and stores it once', async function () {
    store = await TrainingExampleStore.open(dir);
    const record = makeRecord();
    assert.deepEqual(await store.append([record, { ...record }]), ['accepted', 'duplicate']);
    const size = (await stat(path.join(dir, EXAMPLES_FILE))).size;
    await store.close();
    store = await TrainingExampleStore.open(dir);
    // Same content with its keys in another order is the same record.
    const reordered = Object.fromEntries(Object.entries(record).reverse()) as unknown as TrainingRecord;
    assert.deepEqual(await store.append([reordered, makeRecord({ round_index: 3 })]), ['duplicate', 'accepted']);
    assert.equal(store.stats().duplicates, 2);
    assert.equal((await collect(store.records())).length, 2);
    assert.ok((await stat(path.join(dir, EXAMPLES_FILE))).size > size);
  });

  it('filters the read-back by dataset and round', async function () {
    store = await TrainingExampleStore.open(dir);
    const records = [
      makeRecord({ dataset: 'nq', round_index: 1 }),
      makeRecord({ dataset: 'nq', round_index: 2 }),
      makeRecord({ dataset: 'hotpotqa', round_index: 2 }),
    ];
    await store.append(records);
    assert.deepEqual(await collect(store.records({ dataset: 'nq' })), records.slice(0, 2));
    assert.deepEqual(await collect(store.records({ roundIndex: 2 })), records.slice(1));
    assert.deepEqual(await collect(store.records({ dataset: 'hotpotqa', roundIndex: 1 })), []);
  });

  it('cuts a torn last line on open, keeps every complete record, and appends cleanly after it', async function () {
    store = await TrainingExampleStore.open(dir);
    const kept = makeRecord({ query_id: 'kept' });
    await store.append([kept]);
    await store.close();
    const torn = JSON.stringify(makeRecord({ query_id: 'torn' })).slice(0, 57);
    await appendFile(path.join(dir, EXAMPLES_FILE), torn);
    store = await TrainingExampleStore.open(dir);
    assert.equal(store.truncatedBytes, 57);
    assert.deepEqual(await collect(store.records()), [kept]);
    const next = makeRecord({ query_id: 'next' });
    assert.deepEqual(await store.append([next]), ['accepted']);
    await store.close();
    store = await TrainingExampleStore.open(dir);
    assert.deepEqual(await collect(store.records()), [kept, next]);
  });

  it('refuses to open over a damaged complete line instead of serving it', async function () {
    await writeFile(path.join(dir, EXAMPLES_FILE), `${JSON.stringify(makeRecord())}\n{"dataset": "nq", oops\n`);
    await assert.rejects(TrainingExampleStore.open(dir), (error: unknown) => {
      assert.ok(error instanceof ServiceError);
      assert.equal(error.code, 'internal');
      assert.match(error.message, /line 2 is not a JSON record/);
      return true;
    });
  });

  it('keeps statistics per dataset and round, and rejection counts by reason across a reopen', async function () {
    store = await TrainingExampleStore.open(dir);
    await store.append([
      makeRecord({ dataset: 'nq', query_id: 'q1', round_index: 1 }),
      makeRecord({ dataset: 'nq', query_id: 'q1', round_index: 1 }, 20),
      makeRecord({ dataset: 'nq', query_id: 'q1', round_index: 2 }),
      makeRecord({ dataset: 'nq', query_id: 'q2', round_index: 1 }),
      makeRecord({ dataset: 'hotpotqa', query_id: 'q1', round_index: 1 }),
    ]);
    // Same positive as the first record, other negatives: a new record, not a new positive.
    const first = makeRecord({ dataset: 'nq', query_id: 'q1', round_index: 1 });
    await store.append([{ ...first, passage_ids: ['0', ...first.passage_ids.slice(2), '99'] , scores: first.scores }]);
    await store.append([], ['unknown_passage', 'unknown_passage', 'malformed_json']);
    await store.close();
    store = await TrainingExampleStore.open(dir);
    const stats = store.stats();
    assert.equal(stats.records, 6);
    assert.deepEqual(stats.datasets, {
      hotpotqa: { records: 1, queries: 1, rounds: 1, positives: 1, byRound: { '1': 1 } },
      nq: { records: 5, queries: 2, rounds: 3, positives: 4, byRound: { '1': 4, '2': 1 } },
    });
    assert.equal(stats.rejections.unknown_passage, 2);
    assert.equal(stats.rejections.malformed_json, 1);
    assert.equal(stats.rejections.positive_not_first, 0);
    assert.deepEqual(JSON.parse(await readFile(path.join(dir, COUNTERS_FILE), 'utf8')).rejections.unknown_passage, 2);
  });

  it('serialises concurrent appends: no interleaved lines, every record stored once', async function () {
    store = await TrainingExampleStore.open(dir);
    const batches = Array.from({ length: 20 }, (_, b) =>
      Array.from({ length: 25 }, (_, i) => makeRecord({ query_id: `q${b}-${i}`, history_queries: ['x'.repeat(3000)] })),
    );
    const outcomes = await Promise.all(batches.map((batch) => store!.append(batch)));
    assert.ok(outcomes.flat().every((outcome) => outcome === 'accepted'));
    const lines = (await readFile(path.join(dir, EXAMPLES_FILE), 'utf8')).split('\n');
    assert.equal(lines.pop(), '');
    const stored = lines.map((line) => (JSON.parse(line) as TrainingRecord).query_id);
    assert.equal(stored.length, 500);
    assert.deepEqual(new Set(stored), new Set(batches.flat().map((record) => record.query_id)));
  });
});
