import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setImmediate as nextTurn } from 'node:timers/promises';
import request from 'supertest';
import { ActiveRetriever, type ServingOptions } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { BatchStats, RetrievalResult, SearchHit, ThroughputObserver } from '../../src/engine/types.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import { isServiceError } from '../support/assert-service-error.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { createHarness, metricValue } from '../support/app-harness.js';

/** Big enough that it is still being encoded when the requests after it arrive. */
const OCCUPIER: QueryInput[] = Array.from({ length: 4096 }, (_, i) => ({
  question: `question number ${i} about the history of the united states and its presidents`,
  query: `expedition ${i} ethnologist philologist cathedral river`,
}));

const QUESTIONS = ['who wrote hamlet', 'pavia cathedral', 'river thames source', 'first moon landing', 'battle of hastings'];

function rows(hits: SearchHit[][]): { rowIndex: number; id: string }[][] {
  return hits.map((list) => list.map((hit) => ({ rowIndex: hit.rowIndex, id: hit.document.id })));
}

async function untilQueued(active: ActiveRetriever, queries: number): Promise<void> {
  while (active.throughput().queuedQueries < queries) await nextTurn();
}

/** An observer that keeps each batch's stats in `batches` and ignores the rest. */
function batchesInto(batches: BatchStats[]): ThroughputObserver {
  return { batch: (stats) => batches.push(stats), cacheLookups: () => undefined, overloaded: () => undefined, swapped: () => undefined, paused: () => undefined };
}

describe('Cross-request batching, backpressure and the result cache (real tiny retrievers)', function () {
  let first: RetrieverFiles;
  let second: RetrieverFiles;
  const opened: ActiveRetriever[] = [];

  before(async function () {
    [first, second] = await Promise.all([
      buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS }),
      buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: SAMPLE_CORPUS }),
    ]);
  });

  after(async function () {
    await Promise.all(opened.map((active) => active.close()));
  });

  async function serving(options: ServingOptions, files = first, version = 'a'): Promise<ActiveRetriever> {
    const active = new ActiveRetriever(options);
    opened.push(active);
    await active.activate(await Retriever.load(files, { version }));
    return active;
  }

  it('merges requests that arrive while a batch runs, and each gets its own results in its own order', async function () {
    const active = await serving({ batching: {}, resultCacheBytes: 0 });
    const batches: BatchStats[] = [];
    active.observeThroughput(batchesInto(batches));
    const harness = createHarness(active);
    const requests: QueryInput[][] = QUESTIONS.map((question, i) =>
      Array.from({ length: 1 + (i % 3) }, (_, j) => ({ query: `${question} ${j}` })),
    );
    const expected = await Promise.all(requests.map((inputs) => active.current!.encodeSearchFetch(inputs, 3)));

    const occupier = active.retrieve(OCCUPIER, 3);
    const merged = await Promise.all(requests.map((inputs) => active.retrieve(inputs, 3)));
    await occupier;

    merged.forEach((result, i) => {
      assert.equal(result.hits.length, requests[i]!.length);
      assert.deepEqual(rows(result.hits), rows(expected[i]!.hits));
      result.hits.flat().forEach((hit, at) => assert.ok(Math.abs(hit.score - expected[i]!.hits.flat()[at]!.score) < 1e-4));
    });
    const together = batches.at(-1)!;
    assert.equal(together.requests, requests.length);
    assert.equal(together.queries, requests.flat().length);
    const exposition = await harness.metrics.registry.metrics();
    const batchCount = metricValue(exposition, 'retriever_batch_requests_count')!;
    const requestSum = metricValue(exposition, 'retriever_batch_requests_sum')!;
    assert.equal(batchCount, 2);
    assert.equal(requestSum, 1 + requests.length);
    assert.equal(metricValue(exposition, 'retriever_batch_queries_sum'), OCCUPIER.length + requests.flat().length);
  });

  it('encodes and searches identical final query texts once and gives them identical results', async function () {
    const active = await serving({ batching: {}, resultCacheBytes: 0 });
    const batches: BatchStats[] = [];
    active.observeThroughput(batchesInto(batches));
    const occupier = active.retrieve(OCCUPIER, 3);
    // The same Agentic-R text pre-joined by the client and joined by the template is one query.
    const joined = { query: 'who wrote hamlet [SEP] hamlet author' };
    const split = { question: 'who wrote hamlet', query: 'hamlet author' };
    const [one, two, three] = await Promise.all([
      active.retrieve([joined, joined, { query: 'pavia' }], 3),
      active.retrieve([split], 3),
      active.retrieve([{ query: 'pavia' }, joined], 2),
    ]);
    await occupier;
    assert.deepEqual(one.hits[0], one.hits[1]);
    assert.deepEqual(two.hits[0], one.hits[0]);
    assert.deepEqual(three.hits[1], one.hits[0]!.slice(0, 2));
    assert.deepEqual(three.hits[0], one.hits[2]!.slice(0, 2));
    assert.deepEqual(batches.at(-1), { ...batches.at(-1)!, requests: 3, queries: 6, uniqueQueries: 2 });
  });

  it('refuses a request at once with 503, Retry-After and code overloaded when the queue is full, then recovers', async function () {
    const active = await serving({ resultCacheBytes: 0, batching: { maxQueuedQueries: 1 } });
    const harness = createHarness(active);
    const occupier = active.retrieve(OCCUPIER, 3);
    const queued = active.retrieve([{ query: 'hamlet' }], 3);
    await untilQueued(active, 1);

    const refused = await request(harness.app).post('/retrieve').send({ queries: ['pavia'], topk: 3 });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.equal(refused.body.error.code, 'overloaded');
    await assert.rejects(active.retrieve([{ query: 'thames' }], 3), isServiceError('overloaded', /limit 1/));

    await Promise.all([occupier, queued]);
    const recovered = await request(harness.app).post('/retrieve').send({ queries: ['pavia', 'thames'], topk: 3, return_scores: true });
    assert.equal(recovered.status, 200);
    assert.equal(recovered.body.result.length, 2);
    const exposition = await harness.metrics.registry.metrics();
    assert.equal(metricValue(exposition, 'retriever_overloaded_requests_total'), 2);
    assert.equal(metricValue(exposition, 'retriever_queue_queries'), 0);
  });

  it('answers 503 timeout to a request whose deadline passes while it waits, and never runs it', async function () {
    const active = await serving({ batching: {}, resultCacheBytes: 0 });
    const batches: BatchStats[] = [];
    active.observeThroughput(batchesInto(batches));
    const harness = createHarness(active, { requestTimeoutMs: 1 });
    const occupier = active.retrieve(OCCUPIER, 3);

    const expired = await request(harness.app).post('/retrieve').send({ queries: ['pavia'], topk: 3 });
    assert.equal(expired.status, 503);
    assert.equal(expired.headers['retry-after'], '1');
    assert.equal(expired.body.error.code, 'timeout');
    assert.equal(expired.body.error.message, 'retrieval of 1 queries did not finish within 1 ms', 'the route answers with its deadline, the one timer');
    await assert.rejects(active.retrieve([{ query: 'thames' }], 3, { signal: AbortSignal.abort() }), isServiceError('timeout', /deadline passed/));

    await occupier;
    await nextTurn();
    assert.deepEqual(batches.map((batch) => batch.queries), [OCCUPIER.length]);
    assert.equal(active.throughput().queuedQueries, 0);
  });

  it('answers an empty request at once, even behind a running batch, without queueing or batching it', async function () {
    const active = await serving({ batching: {}, resultCacheBytes: 1 << 20 });
    const batches: BatchStats[] = [];
    active.observeThroughput(batchesInto(batches));
    const occupier = active.retrieve(OCCUPIER, 3);
    assert.deepEqual(await active.retrieve([], 3), { hits: [], version: 'a', timings: { encodeMs: 0, searchMs: 0, fetchMs: 0 } });
    assert.equal(batches.length, 0, 'answered while the occupier still runs');
    await occupier;
    assert.deepEqual(batches.map((batch) => batch.queries), [OCCUPIER.length]);
  });

  it('drops a queued request whose client has gone away, without running it', async function () {
    const active = await serving({ batching: {}, resultCacheBytes: 0 });
    const batches: BatchStats[] = [];
    active.observeThroughput(batchesInto(batches));
    const server = createHarness(active).app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const occupier = active.retrieve(OCCUPIER, 3);
      const body = JSON.stringify({ queries: ['pavia', 'thames'], topk: 3 });
      const client = http.request({
        port: (server.address() as AddressInfo).port,
        host: '127.0.0.1',
        method: 'POST',
        path: '/retrieve',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      });
      client.on('error', () => undefined);
      client.end(body);
      await untilQueued(active, 2);
      client.destroy();
      while (active.throughput().queuedQueries > 0) await nextTurn();
      await occupier;
      await nextTurn();
      assert.deepEqual(batches.map((batch) => batch.queries), [OCCUPIER.length]);
    } finally {
      server.close();
    }
  });

  it('answers repeated queries from the cache with identical bodies, and a version swap invalidates it', async function () {
    const active = await serving({ batching: {}, resultCacheBytes: 1 << 20 });
    const harness = createHarness(active);
    const body = { queries: ['who wrote hamlet', 'pavia cathedral'], topk: 3, return_scores: true };
    const post = () => request(harness.app).post('/retrieve').send(body);

    const fresh = await post();
    const cached = await post();
    assert.equal(fresh.status, 200);
    assert.equal(cached.text, fresh.text);
    let exposition = await harness.metrics.registry.metrics();
    assert.equal(metricValue(exposition, 'retriever_result_cache_lookups_total', { result: 'miss' }), 2);
    assert.equal(metricValue(exposition, 'retriever_result_cache_lookups_total', { result: 'hit' }), 2);
    assert.equal(metricValue(exposition, 'retriever_result_cache_entries'), 2);
    assert.ok(metricValue(exposition, 'retriever_result_cache_bytes')! > 0);

    const next = await Retriever.load(second, { version: 'b' });
    const expectedB: RetrievalResult = await next.encodeSearchFetch(body.queries.map((query) => ({ query })), 3);
    await active.activate(next);
    exposition = await harness.metrics.registry.metrics();
    assert.equal(metricValue(exposition, 'retriever_result_cache_entries'), 0);
    const swapped = await post();
    assert.equal(swapped.headers['x-retriever-version'], 'b');
    assert.notEqual(swapped.text, fresh.text);
    assert.deepEqual(
      swapped.body.result.map((list: { document: { id: string } }[]) => list.map((item) => item.document.id)),
      expectedB.hits.map((list) => list.map((hit) => hit.document.id)),
    );
    exposition = await harness.metrics.registry.metrics();
    assert.equal(metricValue(exposition, 'retriever_result_cache_lookups_total', { result: 'miss' }), 4);
  });
});
