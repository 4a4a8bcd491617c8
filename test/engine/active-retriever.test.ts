import assert from 'node:assert/strict';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import { isServiceError } from '../support/assert-service-error.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';

const BIG_BATCH: QueryInput[] = Array.from({ length: 600 }, (_, i) => ({
  question: `question number ${i} about the history of the united states`,
  query: `expedition ${i} ethnologist philologist`,
}));

describe('ActiveRetriever: the one reference serving swaps (two real tiny versions)', function () {
  let first: RetrieverFiles;
  let second: RetrieverFiles;

  before(async function () {
    [first, second] = await Promise.all([
      buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS }),
      buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: SAMPLE_CORPUS }),
    ]);
  });

  it('answers not_ready with the loading stage until a version is activated', async function () {
    const active = new ActiveRetriever();
    active.loading('corpus', 0.5);
    assert.deepEqual(active.readiness(), { ready: false, stage: 'corpus', progress: 0.5 });
    assert.equal(active.info(), undefined);
    await assert.rejects(active.retrieve([{ query: 'x' }], 3), isServiceError('not_ready', /stage: corpus/));
    active.failed(new Error('index missing'));
    assert.deepEqual(active.readiness(), { ready: false, stage: 'failed', error: 'index missing' });
  });

  it('lets an in-flight request finish on its version, serves new ones from the next, then releases the old one', async function () {
    const active = new ActiveRetriever();
    const a = await Retriever.load(first, { version: 'a' });
    const b = await Retriever.load(second, { version: 'b' });
    await active.activate(a);
    const expectedB = await b.encodeSearchFetch([{ query: 'hamlet' }], 3);

    const events: string[] = [];
    const inFlight = active.retrieve(BIG_BATCH, 3).then((result) => {
      events.push(`in-flight done on ${result.version}`);
      return result;
    });
    const swapped = active.activate(b).then(() => events.push('a released'));
    assert.equal(active.info()?.version, 'b');
    const next = await active.retrieve([{ query: 'hamlet' }], 3);
    events.push(`next on ${next.version}`);
    assert.deepEqual(next.hits, expectedB.hits);

    const old = await inFlight;
    await swapped;
    assert.equal(old.version, 'a');
    assert.equal(old.hits.length, BIG_BATCH.length);
    // Whether the next request or the big one finishes first is up to the machine; the release
    // must come after the big one either way.
    assert.deepEqual([...events].sort(), ['a released', 'in-flight done on a', 'next on b']);
    assert.ok(events.indexOf('in-flight done on a') < events.indexOf('a released'));
    // Released means closed: its encoder worker no longer answers.
    await assert.rejects(a.encodeSearchFetch([{ query: 'hamlet' }], 3), isServiceError('not_ready', /closed/));

    await active.close();
    assert.deepEqual(active.readiness(), { ready: false, stage: 'closed' });
    await assert.rejects(b.encodeSearchFetch([{ query: 'hamlet' }], 3), isServiceError('not_ready', /closed/));
  });
});
