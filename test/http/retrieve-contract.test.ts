import assert from 'node:assert/strict';
import request from 'supertest';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever } from '../../src/engine/retriever.js';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import { VERSION_HEADER } from '../../src/http/retrieve-routes.js';
import { createHarness, metricValue, type Harness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { loadRealService, realFixture, type RealService } from '../support/real-service.js';
import { renderLikeSearchR1, type ScoredItem } from '../support/search-r1-client.js';
import { sampleRows } from '../support/stand-in-service.js';

function ids(result: (ScoredItem | CorpusRow)[][]): string[][] {
  return result.map((hits) => hits.map((hit) => ('document' in hit ? (hit.document as CorpusRow).id : hit.id)));
}

describe('readiness of the real engine', function () {
  it('/ready is 503 with the loading stage before the retriever is active, 200 after; /retrieve waits with 503', async () => {
    const active = new ActiveRetriever();
    const { app } = createHarness(active);
    const before = await request(app).get('/ready').expect(503);
    assert.equal(before.headers['retry-after'], '5');
    assert.deepEqual(before.body, { ready: false, stage: 'starting' });
    assertMatchesOpenApi('GET', '/ready', before);
    const early = await request(app).post('/retrieve').send({ queries: ['too early'] }).expect(503);
    assert.equal(early.body.error.code, 'not_ready');
    assert.ok(Number(early.headers['retry-after']) > 0);
    const idle = (await request(app).get('/metrics').expect(200)).text;
    assert.match(idle, /^# TYPE retriever_active_version gauge$/m);
    assert.doesNotMatch(idle, /^retriever_active_version\{/m, 'no version is active yet');

    const seen: unknown[] = [];
    const retriever = await Retriever.load(await realFixture(), {
      version: 'readiness-v1',
      onStage: (stage, progress, step) => {
        active.loading(stage, progress, step);
        seen.push(active.readiness());
      },
    });
    assert.ok(seen.length > 0 && seen.every((state) => (state as { ready: boolean }).ready === false));
    assert.equal((await request(app).get('/ready')).status, 503, 'loaded but not yet active');
    await active.activate(retriever);
    try {
      const after = await request(app).get('/ready').expect(200);
      assert.equal(after.body.ready, true);
      assertMatchesOpenApi('GET', '/ready', after);
      const served = await request(app).post('/retrieve').send({ queries: ['now'] }).expect(200);
      assert.equal(served.headers[VERSION_HEADER.toLowerCase()], 'readiness-v1');
      const metrics = (await request(app).get('/metrics').expect(200)).text;
      assert.equal(metricValue(metrics, 'retriever_active_version', { version: 'readiness-v1' }), 1);
    } finally {
      await active.close();
    }
  });
});

/** The Search-R1 `/retrieve` contract (contracts.md §1–§2) against the real engine over HTTP. */
describe('POST /retrieve contract (real engine: tiny model, FAISS Flat over the wiki18 sample)', function () {
  let real: RealService;
  let harness: Harness;
  let rows: CorpusRow[];

  before(async function () {
    rows = await sampleRows();
    real = await loadRealService(await realFixture());
    harness = createHarness(real.service, { maxTopk: 2000 });
  });

  after(async function () {
    await real?.close();
  });

  async function retrieve(body: unknown) {
    const res = await request(harness.app).post('/retrieve').send(body as object);
    assert.equal(res.status, 200, res.text.slice(0, 500));
    assertMatchesOpenApi('POST', '/retrieve', res);
    return res;
  }

  it('return_scores: true → {document: whole corpus row, score} lists, best first, request order', async () => {
    const queries = ['who wrote the iliad', 'pavia cathedral', 'history of the roman empire'];
    const res = await retrieve({ queries, topk: 4, return_scores: true });
    assert.equal(res.headers[VERSION_HEADER.toLowerCase()], real.service.info()!.version);
    const result = res.body.result as ScoredItem[][];
    assert.equal(result.length, 3);
    for (const hits of result) {
      assert.equal(hits.length, 4);
      for (const hit of hits) {
        assert.deepEqual(Object.keys(hit).sort(), ['document', 'score']);
        assert.deepEqual(hit.document, rows[Number(hit.document.id)], 'row fetched by position, every field kept');
        assert.ok(hit.score <= 1.0001 && hit.score >= -1.0001, `cosine ${hit.score}`);
      }
      const scores = hits.map((hit) => hit.score);
      assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
    }
    // Each list is that query's own answer: asking one at a time gives the same rows.
    for (const [position, query] of queries.entries()) {
      const single = await retrieve({ queries: [query], topk: 4, return_scores: true });
      assert.deepEqual(ids(single.body.result), [ids(result)[position]]);
    }
  });

  it('return_scores false or absent → bare corpus rows, the same ones', async () => {
    const queries = ['the river flows', 'a famous painter'];
    const scored = await retrieve({ queries, topk: 3, return_scores: true });
    for (const body of [{ queries, topk: 3, return_scores: false }, { queries, topk: 3 }]) {
      const bare = await retrieve(body);
      const expected = (scored.body.result as ScoredItem[][]).map((hits) => hits.map((hit) => hit.document));
      assert.deepEqual(bare.body.result, expected);
    }
  });

  it('topk missing, null and 0 use the configured default (3); explicit topk is honoured', async () => {
    for (const topk of [undefined, null, 0]) {
      const res = await retrieve({ queries: ['a', 'b'], topk, return_scores: true });
      assert.deepEqual(
        res.body.result.map((hits: unknown[]) => hits.length),
        [3, 3],
      );
    }
    const five = await retrieve({ queries: ['a'], topk: 5 });
    assert.equal(five.body.result[0].length, 5);
    const custom = createHarness(real.service, { topk: 7 });
    const res = await request(custom.app).post('/retrieve').send({ queries: ['a'] }).expect(200);
    assert.equal(res.body.result[0].length, 7);
  });

  it('queries: [] → exactly {"result":[]}', async () => {
    const res = await retrieve({ queries: [], topk: 3, return_scores: true });
    assert.equal(res.text, '{"result":[]}');
  });

  it('unknown fields are ignored', async () => {
    const plain = await retrieve({ queries: ['castle'], topk: 2, return_scores: true });
    const extra = await retrieve({ queries: ['castle'], topk: 2, return_scores: true, model: 'x', temperature: 0.7 });
    assert.deepEqual(extra.body, plain.body);
  });

  it('Unicode and empty-string queries are answered in place, order and lengths kept', async () => {
    const queries = ['', 'Zürich Hauptbahnhof', '東京タワー', 'émigré café — naïve', '🙂', ''];
    const res = await retrieve({ queries, return_scores: true });
    assert.deepEqual(
      res.body.result.map((hits: unknown[]) => hits.length),
      [3, 3, 3, 3, 3, 3],
    );
    assert.deepEqual(ids(res.body.result)[0], ids(res.body.result)[5], 'the same text gets the same rows');
    const reversed = await retrieve({ queries: [...queries].reverse(), return_scores: true });
    assert.deepEqual(ids(reversed.body.result), ids(res.body.result).reverse());
  });

  it('questions compose "{question} [SEP] {query}" via the manifest: same hits as the client-joined text', async () => {
    const composed = await retrieve({
      queries: ['Who founded Rome? [SEP] founder of rome', 'Where is Pavia? [SEP] pavia location'],
      topk: 5,
      return_scores: true,
    });
    const split = await retrieve({
      queries: ['founder of rome', 'pavia location'],
      questions: ['Who founded Rome?', 'Where is Pavia?'],
      topk: 5,
      return_scores: true,
    });
    assert.deepEqual(ids(split.body.result), ids(composed.body.result));
    const scores = (body: { result: ScoredItem[][] }) => body.result.flat().map((hit) => hit.score);
    scores(split.body).forEach((score, at) => assert.ok(Math.abs(score - scores(composed.body)[at]!) < 1e-5));
    const queryOnly = await retrieve({ queries: ['founder of rome'], topk: 5, return_scores: true });
    assert.notDeepEqual(scores(queryOnly.body), scores(split.body).slice(0, 5), 'the question changes the encoding');
  });

  it('aliases: query (one string) and top_k / k mean queries and topk', async () => {
    const canonical = await retrieve({ queries: ['ancient greek poetry'], topk: 4, return_scores: true });
    for (const body of [
      { query: 'ancient greek poetry', topk: 4, return_scores: true },
      { queries: ['ancient greek poetry'], top_k: 4, return_scores: true },
      { queries: ['ancient greek poetry'], k: 4, return_scores: true },
    ]) {
      assert.deepEqual((await retrieve(body)).body, canonical.body);
    }
  });

  it("renders like Search-R1's agent for every row of the wiki18 sample (titles keep their quotes)", async () => {
    const res = await retrieve({ queries: ['wikipedia'], topk: rows.length, return_scores: true });
    const hits = res.body.result[0] as ScoredItem[];
    assert.equal(hits.length, rows.length, 'topk above the index rows is every row');
    assert.deepEqual(new Set(hits.map((hit) => hit.document.id)).size, rows.length);
    const rendered = renderLikeSearchR1(hits).split('\n').filter((line) => line.startsWith('Doc '));
    assert.equal(rendered.length, rows.length);
    for (const [position, hit] of hits.entries()) {
      const row = rows[Number(hit.document.id)]!;
      const newline = row.contents.indexOf('\n');
      const expected = `Doc ${position + 1}(Title: ${row.contents.slice(0, newline)}) ${row.contents.slice(newline + 1)}`;
      assert.equal(rendered[position], expected);
    }
    // The sample has both kinds of title line; the agent shows each exactly as stored.
    const quoted = rows.find((row) => row.contents.startsWith('"'))!;
    const bare = rows.find((row) => !row.contents.startsWith('"'))!;
    const renderedFor = (row: CorpusRow) => rendered[hits.findIndex((hit) => hit.document.id === row.id)]!;
    assert.match(renderedFor(quoted), /^Doc \d+\(Title: "[^"]+"\) /);
    assert.match(renderedFor(bare), /^Doc \d+\(Title: [^"]/);
  });

  describe('malformed requests against the real engine: 4xx JSON naming the field, then still serving', () => {
    const cases: { name: string; raw: string; status: number; field: string }[] = [
      { name: 'not JSON', raw: '{"queries": ["a"', status: 400, field: 'body' },
      { name: 'queries not an array', raw: '{"queries": "a"}', status: 400, field: 'queries' },
      { name: 'non-string entry', raw: '{"queries": ["a", {"q": 1}]}', status: 400, field: 'queries[1]' },
      { name: 'negative topk', raw: '{"queries": ["a"], "topk": -3}', status: 400, field: 'topk' },
      { name: 'fractional topk', raw: '{"queries": ["a"], "topk": 1.5}', status: 400, field: 'topk' },
      { name: 'huge topk', raw: '{"queries": ["a"], "topk": 100000000}', status: 400, field: 'topk' },
      { name: 'questions of the wrong length', raw: '{"queries": ["a", "b"], "questions": ["q"]}', status: 400, field: 'questions' },
    ];
    for (const testCase of cases) {
      it(`${testCase.name} → ${testCase.status} naming ${testCase.field}`, async () => {
        const res = await request(harness.app).post('/retrieve').set('Content-Type', 'application/json').send(testCase.raw);
        assert.equal(res.status, testCase.status);
        assert.equal(res.body.error.code, 'bad_request');
        assert.equal(res.body.error.field, testCase.field);
        assertMatchesOpenApi('POST', '/retrieve', res);
        const next = await retrieve({ queries: ['after the error'], topk: 2 });
        assert.equal(next.body.result[0].length, 2);
      });
    }

    it('oversize body → 413, then still serving', async () => {
      const small = createHarness(real.service, { bodyLimit: '10kb' });
      const res = await request(small.app).post('/retrieve').send({ queries: Array(1000).fill('x'.repeat(20)) });
      assert.equal(res.status, 413);
      assert.equal(res.body.error.field, 'body');
      await request(small.app).post('/retrieve').send({ queries: ['fine'] }).expect(200);
    });
  });

  it('/metrics counts the requests just made and the engine stage timings', async () => {
    const fresh = createHarness(real.service);
    await request(fresh.app).post('/retrieve').send({ queries: ['one', 'two', 'three'] }).expect(200);
    await request(fresh.app).post('/retrieve').send({ queries: ['four'] }).expect(200);
    await request(fresh.app).post('/retrieve').send({ queries: [7] }).expect(400);
    const text = (await request(fresh.app).get('/metrics').expect(200)).text;
    assert.equal(metricValue(text, 'retriever_http_requests_total', { route: '/retrieve', status: '200' }), 2);
    assert.equal(metricValue(text, 'retriever_http_requests_total', { route: '/retrieve', status: '400' }), 1);
    assert.equal(metricValue(text, 'retriever_queries_per_request_sum'), 4);
    for (const stage of ['encode', 'search', 'fetch']) {
      assert.equal(metricValue(text, 'retriever_stage_duration_seconds_count', { stage }), 2);
    }
    assert.equal(metricValue(text, 'retriever_execution_provider', { provider: 'cpu' }), 1);
    assert.equal(metricValue(text, 'retriever_active_version', { version: 'contract-v1' }), 1);
    assert.equal(metricValue(text, 'retriever_index_rows'), rows.length);
    assert.equal(metricValue(text, 'retriever_ready'), 1);
  });

  it('/info describes the loaded retriever and matches openapi.yaml', async () => {
    const res = await request(harness.app).get('/info').expect(200);
    assertMatchesOpenApi('GET', '/info', res);
    assert.equal(res.body.ready, true);
    assert.equal(res.body.retriever.indexRows, rows.length);
    assert.equal(res.body.retriever.corpusRows, rows.length);
    assert.equal(res.body.retriever.manifest.queryPrefix, 'query: ');
    assert.deepEqual(res.body.retriever.search, {
      backend: 'onnx',
      sessions: [{ provider: 'cpu', precision: 'fp32', firstRow: 0, rows: rows.length }],
    });
  });

  it('/health answers while a large batch is in the engine (it completes before the batch does)', async () => {
    const queries = Array.from({ length: 1024 }, (_, position) => `${position} ${'long query words '.repeat(20)}`);
    const order: string[] = [];
    const big = request(harness.app)
      .post('/retrieve')
      .send({ queries, topk: 10 })
      .then((res) => {
        order.push('batch');
        return res;
      });
    // Ask for /health only once the batch is in the engine, so the order is not a race of sends.
    await real.retrieveStarted();
    const health = await request(harness.app).get('/health');
    order.push('health');
    assert.equal(health.status, 200);
    const batch = await big;
    assert.equal(batch.status, 200);
    assert.equal(batch.body.result.length, 1024);
    assert.deepEqual(order, ['health', 'batch']);
  });
});
