import assert from 'node:assert/strict';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import type { SwapPlan } from '../../src/index/search-memory.js';
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

  const CUDA0 = { name: 'cuda:0', activeBytes: 1e9, nextBytes: 1e9, encoderBytes: { active: 0, next: 0 }, budgetBytes: 1.5e9, limitBytes: 1.5e9 };
  /** How a replacement was planned; ActiveRetriever only reports it. */
  const REPLACE: SwapPlan = {
    mode: 'replace',
    reason: 'both versions need 2 GB per device, over the search memory budget of 1.5 GB',
    fits: false,
    device: CUDA0,
    devices: [CUDA0],
    host: { activeBytes: 0, nextBytes: 0, usableBytes: 8e9 },
  };

  /** A load the test finishes: `called` settles when the replacement asks for it. */
  function heldLoad() {
    let called!: () => void;
    const asked = new Promise<void>((resolve) => (called = resolve));
    let finish!: (outcome: Retriever | Error) => void;
    const outcome = new Promise<Retriever | Error>((resolve) => (finish = resolve));
    const load = async (): Promise<Retriever> => {
      called();
      const settled = await outcome;
      if (settled instanceof Error) throw settled;
      return settled;
    };
    return { load, asked, finish };
  }

  it('replace: closes the serving version once its admitted requests end, holds new ones (queue limit, deadline) while the next loads, then answers them from it', async function () {
    const active = new ActiveRetriever({ batching: { maxQueuedQueries: 4 } });
    const a = await Retriever.load(first, { version: 'a' });
    await active.activate(a);
    const admitted = active.retrieve(BIG_BATCH, 3);
    const next = heldLoad();
    const replaced = active.replace(next.load, () => assert.fail('the old version is reloaded only when the new one fails'), REPLACE);

    const held = active.retrieve([{ query: 'hamlet' }], 3);
    await assert.rejects(active.retrieve(BIG_BATCH.slice(0, 4), 3), isServiceError('overloaded', /1 queries are already waiting \(limit 4\)/));
    const deadline = new AbortController();
    const expiring = active.retrieve([{ query: 'othello' }], 3, { signal: deadline.signal });
    deadline.abort();
    await assert.rejects(expiring, isServiceError('timeout', /deadline passed/));
    assert.deepEqual(active.readiness(), { ready: true, stage: 'replacing', step: 'closing version a to load its replacement' });
    assert.equal(active.info()?.replacing, true);

    assert.equal((await admitted).version, 'a');
    await next.asked;
    // The new version loads only once the old one is closed: its memory is free.
    await assert.rejects(a.encodeSearchFetch([{ query: 'hamlet' }], 3), isServiceError('not_ready', /closed/));
    assert.equal(active.throughput().queuedRequests, 1);
    const b = await Retriever.load(second, { version: 'b' });
    const expected = await b.encodeSearchFetch([{ query: 'hamlet' }], 3);
    next.finish(b);
    const { retriever, failure } = await replaced;
    assert.equal(retriever, b);
    assert.equal(failure, undefined);
    assert.deepEqual((await held).hits, expected.hits);
    assert.equal((await held).version, 'b');
    assert.deepEqual(active.info()?.swap, REPLACE);
    assert.equal(active.info()?.replacing, undefined);
    await active.close();
  });

  it('replace: a new version that fails to load gives way to the reloaded old one, which answers the held requests', async function () {
    const active = new ActiveRetriever();
    await active.activate(await Retriever.load(first, { version: 'a' }));
    const next = heldLoad();
    const replaced = active.replace(next.load, () => Retriever.load(first, { version: 'a' }), REPLACE);
    const held = active.retrieve([{ query: 'hamlet' }], 3);
    await next.asked;
    next.finish(new Error('model.onnx is missing'));
    const { retriever, failure } = await replaced;
    assert.equal(retriever.version, 'a');
    assert.equal(failure?.message, 'model.onnx is missing');
    assert.equal((await held).version, 'a');
    assert.deepEqual(active.readiness(), { ready: true, stage: 'serving', search: retriever.index.placement });
    assert.equal(active.readiness().search?.sessions[0]?.rows, 1000);
    await active.close();
  });

  it('replace: when the old version does not reload either, held requests get 503 at once and the service is not ready', async function () {
    const active = new ActiveRetriever();
    await active.activate(await Retriever.load(first, { version: 'a' }));
    const next = heldLoad();
    const replaced = active.replace(next.load, () => Promise.reject(new Error('index file gone')), REPLACE);
    const held = active.retrieve([{ query: 'hamlet' }], 3);
    await next.asked;
    next.finish(new Error('model.onnx is missing'));
    const down = /^no version serves: model\.onnx is missing; reloading the replaced version failed too: index file gone$/;
    await assert.rejects(replaced, isServiceError('internal', down));
    await assert.rejects(held, isServiceError('not_ready', down));
    assert.equal(active.readiness().ready, false);
    await active.close();
  });
});
