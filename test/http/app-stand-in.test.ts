import assert from 'node:assert/strict';
import request from 'supertest';
import { ServiceError, type ErrorCode } from '../../src/errors.js';
import { statusForCode } from '../../src/http/errors.js';
import { VERSION_HEADER } from '../../src/http/retrieve-routes.js';
import { createHarness, metricValue } from '../support/app-harness.js';
import { assertMatchesOpenApi, assertMatchesSchema, openApiDocument } from '../support/openapi-schemas.js';
import { sampleRows, StandInService } from '../support/stand-in-service.js';

/**
 * The HTTP layer's own behaviour against a stand-in engine (fixed wiki18 rows): request mapping
 * onto the service call, error mapping, readiness and logging. The contract against the real
 * engine is in retrieve-contract.test.ts.
 */
describe('HTTP app with a stand-in service', () => {
  let rows: Awaited<ReturnType<typeof sampleRows>>;
  before(async () => {
    rows = await sampleRows();
  });

  describe('request mapping', () => {
    it('passes questions beside their queries, and the default topk for missing/null/0', async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service);
      for (const topk of [undefined, null, 0]) {
        await request(app).post('/retrieve').send({ queries: ['a'], topk }).expect(200);
      }
      await request(app)
        .post('/retrieve')
        .send({ queries: ['sub one', 'sub two'], questions: ['Q1?', 'Q2?'], topk: 2 })
        .expect(200);
      assert.deepEqual(
        service.calls.map((call) => call.topk),
        [3, 3, 3, 2],
      );
      assert.deepEqual(service.calls[3]!.inputs, [
        { query: 'sub one', question: 'Q1?' },
        { query: 'sub two', question: 'Q2?' },
      ]);
      assert.deepEqual(service.calls[0]!.inputs, [{ query: 'a' }]);
    });

    it('honours the aliases query, top_k and k, and agreeing duplicates', async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service);
      const single = await request(app).post('/retrieve').send({ query: 'solo', top_k: 2 }).expect(200);
      assert.equal(single.body.result.length, 1);
      assert.equal(single.body.result[0].length, 2);
      await request(app).post('/retrieve').send({ queries: ['x'], k: 4 }).expect(200);
      await request(app).post('/retrieve').send({ queries: ['x'], topk: 5, top_k: 5 }).expect(200);
      assert.deepEqual(
        service.calls.map((call) => [call.inputs.map((input) => input.query), call.topk]),
        [
          [['solo'], 2],
          [['x'], 4],
          [['x'], 5],
        ],
      );
    });

    it('coerces topk and return_scores as the reference server\'s pydantic (lax mode) does, as openapi.yaml documents', async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service);
      const topks: [unknown, number][] = [
        ['3', 3], [' 4 ', 4], ['+2', 2], ['005', 5], ['1_0', 10], ['6.0', 6], ['7.000', 7], [2.0, 2], [true, 1], [false, 3], ['0', 3],
      ];
      for (const [topk, expected] of topks) {
        const body = { queries: ['a'], topk };
        assertMatchesSchema('#/components/schemas/RetrieveRequest', body, `topk ${JSON.stringify(topk)}`);
        await request(app).post('/retrieve').send(body).expect(200);
        assert.equal(service.calls.at(-1)!.topk, expected, `topk ${JSON.stringify(topk)}`);
      }
      const flags: [unknown, boolean][] = [
        ['false', false], ['FALSE', false], ['no', false], ['Off', false], ['f', false], ['N', false], ['0', false], [0, false],
        ['true', true], ['True', true], ['yes', true], ['ON', true], ['t', true], ['y', true], ['1', true], [1, true],
      ];
      for (const [returnScores, expected] of flags) {
        const body = { queries: ['a'], topk: 1, return_scores: returnScores };
        assertMatchesSchema('#/components/schemas/RetrieveRequest', body, `return_scores ${JSON.stringify(returnScores)}`);
        const res = await request(app).post('/retrieve').send(body).expect(200);
        assert.equal('score' in res.body.result[0][0], expected, `return_scores ${JSON.stringify(returnScores)}`);
      }
    });

    it('answers queries: [] with {"result": []} without calling the engine', async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service);
      const res = await request(app).post('/retrieve').send({ queries: [], topk: 3, return_scores: true }).expect(200);
      assert.equal(res.text, '{"result":[]}');
      assert.equal(service.calls.length, 0);
    });

    it('answers queries: [] with {"result": []} before a retriever is loaded too, with no version header', async () => {
      const service = new StandInService(rows);
      service.loaded = false;
      const { app } = createHarness(service);
      const res = await request(app).post('/retrieve').send({ queries: [] }).expect(200);
      assert.equal(res.text, '{"result":[]}');
      assert.equal(res.headers[VERSION_HEADER.toLowerCase()], undefined);
    });
  });

  describe('malformed requests: a 4xx JSON error naming the field, then the next request still works', () => {
    const huge = 'x'.repeat(5000);
    const cases: { name: string; body: unknown; raw?: string; field: string; message: RegExp }[] = [
      { name: 'body is not JSON', raw: '{"queries": [', body: undefined, field: 'body', message: /not valid JSON/ },
      { name: 'body is a JSON array', body: ['q'], field: 'body', message: /must be a JSON object/ },
      { name: 'body is null', raw: 'null', body: undefined, field: 'body', message: /^body: must be a JSON object, got null$/ },
      { name: 'body is a number', raw: ' 42', body: undefined, field: 'body', message: /^body: must be a JSON object, got number$/ },
      { name: 'queries missing', body: { topk: 3 }, field: 'queries', message: /required/ },
      { name: 'queries is a string', body: { queries: 'q' }, field: 'queries', message: /must be an array of strings/ },
      { name: 'queries has a number', body: { queries: ['a', 7] }, field: 'queries[1]', message: /must be a string, got number 7/ },
      { name: 'queries has null', body: { queries: ['a', 'b', null] }, field: 'queries[2]', message: /got null/ },
      { name: 'query is not a string', body: { query: ['a'] }, field: 'query', message: /must be a string/ },
      { name: 'query and queries both', body: { query: 'a', queries: ['b'] }, field: 'query', message: /not both/ },
      { name: 'negative topk', body: { queries: ['a'], topk: -1 }, field: 'topk', message: /integer from 0 to 1000/ },
      { name: 'fractional topk', body: { queries: ['a'], topk: 2.5 }, field: 'topk', message: /got number 2.5/ },
      { name: 'huge topk', body: { queries: ['a'], topk: 1e9 }, field: 'topk', message: /--max_topk/ },
      { name: 'disagreeing top_k', body: { queries: ['a'], topk: 3, top_k: 4 }, field: 'top_k', message: /disagrees with topk/ },
      { name: 'bad k alias', body: { queries: ['a'], k: -2 }, field: 'k', message: /integer/ },
      { name: 'return_scores a string pydantic refuses', body: { queries: ['a'], return_scores: 'maybe' }, field: 'return_scores', message: /must be true or false .*got "maybe"/ },
      { name: 'return_scores 2', body: { queries: ['a'], return_scores: 2 }, field: 'return_scores', message: /got number 2/ },
      { name: 'return_scores " true" (pydantic strips no bool text)', body: { queries: ['a'], return_scores: ' true' }, field: 'return_scores', message: /got " true"/ },
      { name: 'topk "2.5"', body: { queries: ['a'], topk: '2.5' }, field: 'topk', message: /got "2\.5"/ },
      { name: 'topk "three"', body: { queries: ['a'], topk: 'three' }, field: 'topk', message: /got "three"/ },
      { name: 'topk "3."', body: { queries: ['a'], topk: '3.' }, field: 'topk', message: /got "3\."/ },
      { name: 'topk "1__0"', body: { queries: ['a'], topk: '1__0' }, field: 'topk', message: /got "1__0"/ },
      { name: 'topk an array', body: { queries: ['a'], topk: [3] }, field: 'topk', message: /got an array/ },
      { name: 'topk "-1"', body: { queries: ['a'], topk: '-1' }, field: 'topk', message: /integer from 0 to 1000/ },
      { name: 'questions too short', body: { queries: ['a', 'b'], questions: ['q'] }, field: 'questions', message: /1 entries but there are 2 queries/ },
      { name: 'questions not an array', body: { queries: ['a'], questions: 'q' }, field: 'questions', message: /array/ },
      { name: 'questions has a number', body: { queries: ['a'], questions: [5] }, field: 'questions[0]', message: /must be a string/ },
      { name: 'too many queries', body: { queries: Array(4097).fill('q') }, field: 'queries', message: /4097 queries exceed the limit of 4096/ },
      { name: 'query too long', body: { queries: ['ok', huge] }, field: 'queries[1]', message: /5000 characters exceed the limit of 4096/ },
    ];

    for (const testCase of cases) {
      it(`${testCase.name} → 400 naming ${testCase.field}`, async () => {
        const service = new StandInService(rows);
        const { app } = createHarness(service);
        const post = request(app).post('/retrieve').set('Content-Type', 'application/json');
        const res = await post.send(testCase.raw ?? JSON.stringify(testCase.body));
        assert.equal(res.status, 400, res.text);
        assert.match(res.headers['content-type'] ?? '', /application\/json/);
        assert.equal(res.body.error.code, 'bad_request');
        assert.equal(res.body.error.field, testCase.field);
        assert.match(res.body.error.message, testCase.message);
        assert.ok(res.body.error.message.startsWith(`${testCase.field}: `), res.body.error.message);
        assertMatchesOpenApi('POST', '/retrieve', res);
        assert.equal(service.calls.length, 0, 'the engine is not called');
        const next = await request(app).post('/retrieve').send({ queries: ['still serving'], topk: 1 }).expect(200);
        assert.equal(next.body.result[0].length, 1);
      });
    }

    it('a body sent as a form (curl -d without a JSON content type) → 400 saying how to send it', async () => {
      const { app } = createHarness(new StandInService(rows));
      const res = await request(app).post('/retrieve').type('form').send('queries=a').expect(400);
      assert.equal(res.body.error.field, 'body');
      assert.match(res.body.error.message, /Content-Type: application\/json/);
    });

    it("a JSON body without Content-Type (Python's requests.post(url, data=json.dumps(p))) is read as JSON, as FastAPI does", async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service);
      // superagent names a type for a string body; a Buffer goes out with none, as requests sends it.
      const res = await request(app).post('/retrieve').send(Buffer.from(JSON.stringify({ queries: ['untyped body'], topk: 2 })));
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.result[0].length, 2);
      assert.deepEqual(service.calls.map((call) => [call.inputs, call.topk]), [[[{ query: 'untyped body' }], 2]]);
      const textPlain = await request(app).post('/retrieve').type('text/plain').send(JSON.stringify({ queries: ['typed as text'] })).expect(400);
      assert.match(textPlain.body.error.message, /Content-Type: application\/json/);
    });

    it('an oversize body → 413 payload_too_large naming body, and the next request still works', async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service, { bodyLimit: '1kb' });
      const res = await request(app).post('/retrieve').send({ queries: Array(100).fill('twenty characters..') });
      assert.equal(res.status, 413, res.text);
      assert.equal(res.body.error.code, 'payload_too_large');
      assert.equal(res.body.error.field, 'body');
      assert.match(res.body.error.message, /1024 byte limit \(--body_limit\)/);
      assertMatchesOpenApi('POST', '/retrieve', res);
      await request(app).post('/retrieve').send({ queries: ['fits'] }).expect(200);
    });

    it('the default 64mb limit takes 2,560 queries of 4,096 characters', async () => {
      const service = new StandInService(rows);
      const { app } = createHarness(service);
      const queries = Array.from({ length: 2560 }, (_, position) => `${position} `.padEnd(4096, 'é'));
      const res = await request(app).post('/retrieve').send({ queries, topk: 1 });
      assert.equal(res.status, 200, res.text.slice(0, 300));
      assert.equal(res.body.result.length, 2560);
    });

    const encodings: { encoding: string; status: number; code: string; message: RegExp }[] = [
      { encoding: 'deflate', status: 400, code: 'bad_request', message: /^body: does not decode as its Content-Encoding says \(.+\)$/ },
      { encoding: 'gzip', status: 400, code: 'bad_request', message: /^body: does not decode as its Content-Encoding says/ },
      { encoding: 'br', status: 400, code: 'bad_request', message: /^body: does not decode as its Content-Encoding says/ },
      { encoding: 'x-unknown', status: 415, code: 'unsupported_media_type', message: /^body: Content-Encoding "x-unknown" is not supported; send identity, gzip, deflate or br$/ },
    ];
    for (const { encoding, status, code, message } of encodings) {
      it(`a plain body labelled Content-Encoding: ${encoding} → ${status} ${code} (never 5xx, which verl retries)`, async () => {
        const { app } = createHarness(new StandInService(rows));
        const res = await request(app)
          .post('/retrieve')
          .set('Content-Type', 'application/json')
          .set('Content-Encoding', encoding)
          .send(JSON.stringify({ queries: ['q'] }));
        assert.equal(res.status, status, res.text);
        assert.equal(res.body.error.code, code);
        assert.equal(res.body.error.field, 'body');
        assert.match(res.body.error.message, message);
        assertMatchesOpenApi('POST', '/retrieve', res);
        await request(app).post('/retrieve').send({ queries: ['still serving'], topk: 1 }).expect(200);
      });
    }

    it('unknown routes → 404 JSON', async () => {
      const { app } = createHarness(new StandInService(rows));
      const res = await request(app).get('/nope').expect(404);
      assert.deepEqual(res.body, { error: { code: 'not_found', message: 'no route GET /nope' } });
      const wrongMethod = await request(app).get('/retrieve').expect(404);
      assert.equal(wrongMethod.body.error.code, 'not_found');
    });
  });

  describe('engine errors map to statuses in one place', () => {
    it('maps every error code, and never answers 429', () => {
      const codes: ErrorCode[] = [
        'bad_request', 'unauthorized', 'not_found', 'conflict', 'payload_too_large', 'unsupported_media_type', 'not_ready', 'overloaded', 'timeout', 'corpus_changed', 'internal',
      ];
      assert.deepEqual(
        codes.map((code) => statusForCode(code)),
        [400, 401, 404, 409, 413, 415, 503, 503, 503, 503, 500],
      );
    });

    const cases: { error: ServiceError; status: number; retryAfter?: string }[] = [
      { error: new ServiceError('overloaded', 'queue full'), status: 503, retryAfter: '1' },
      { error: new ServiceError('timeout', 'too slow'), status: 503, retryAfter: '1' },
      { error: new ServiceError('not_ready', 'swapping', { retryAfterSeconds: 2.2 }), status: 503, retryAfter: '3' },
      { error: new ServiceError('internal', 'worker died'), status: 500 },
      { error: new ServiceError('bad_request', 'engine said no'), status: 400 },
    ];
    for (const { error, status, retryAfter } of cases) {
      it(`${error.code} → ${status}${retryAfter ? ` with Retry-After ${retryAfter}` : ''}`, async () => {
        const service = new StandInService(rows);
        service.failWith = error;
        const { app } = createHarness(service);
        const res = await request(app).post('/retrieve').send({ queries: ['q'] });
        assert.equal(res.status, status);
        assert.deepEqual(res.body, { error: { code: error.code, message: error.message } });
        assert.equal(res.headers['retry-after'], retryAfter);
        assertMatchesOpenApi('POST', '/retrieve', res);
      });
    }

    it('a non-ServiceError failure is a 500 that does not leak its message', async () => {
      const service = new StandInService(rows);
      service.failWith = new Error('secret stack detail') as ServiceError;
      const harness = createHarness(service);
      const res = await request(harness.app).post('/retrieve').send({ queries: ['q'] }).expect(500);
      assert.deepEqual(res.body, { error: { code: 'internal', message: 'internal error' } });
      assert.ok(harness.logLines.some((line) => line.msg === 'request failed' && line.level === 50));
    });

    it('a search past --request_timeout_ms → 503 timeout with Retry-After', async () => {
      const service = new StandInService(rows);
      service.gate = new Promise(() => undefined);
      const { app } = createHarness(service, { requestTimeoutMs: 50 });
      const res = await request(app).post('/retrieve').send({ queries: ['q', 'r'] }).expect(503);
      assert.equal(res.body.error.code, 'timeout');
      assert.match(res.body.error.message, /2 queries did not finish within 50 ms/);
      assert.equal(res.headers['retry-after'], '1');
    });
  });

  describe('readiness and identity', () => {
    it('/ready is 503 with stage and progress while loading, 200 after; /health is 200 throughout', async () => {
      const service = new StandInService(rows);
      service.loaded = false;
      const { app } = createHarness(service);
      const loading = await request(app).get('/ready').expect(503);
      assert.deepEqual(loading.body, { ready: false, stage: 'loading index', progress: 0.25 });
      assert.equal(loading.headers['retry-after'], '5');
      assertMatchesOpenApi('GET', '/ready', loading);
      assert.deepEqual((await request(app).get('/health').expect(200)).body, { status: 'ok' });
      const retrieve = await request(app).post('/retrieve').send({ queries: ['early'] }).expect(503);
      assert.equal(retrieve.body.error.code, 'not_ready');
      assert.equal(retrieve.headers['retry-after'], '5');
      const info = await request(app).get('/info').expect(200);
      assert.equal(info.body.retriever, null);
      assertMatchesOpenApi('GET', '/info', info);

      service.loaded = true;
      const ready = await request(app).get('/ready').expect(200);
      assert.deepEqual(ready.body, { ready: true, stage: 'ready' });
      assertMatchesOpenApi('GET', '/ready', ready);
    });

    it('/info names the service version from package.json and the active retriever', async () => {
      const { app } = createHarness(new StandInService(rows));
      const res = await request(app).get('/info').expect(200);
      assert.equal(res.body.service.name, 'agentic-retriever');
      assert.match(res.body.service.version, /^\d+\.\d+\.\d+/);
      assert.equal(res.body.retriever.version, 'stand-in-v1');
      assert.equal(res.body.retriever.indexRows, 1000);
      assertMatchesOpenApi('GET', '/info', res);
    });

    it('every retrieval path openapi.yaml documents is served (the /training routes have their own tests)', async () => {
      const { app } = createHarness(new StandInService(rows));
      const documented = Object.entries(openApiDocument.paths)
        .filter(([route]) => !route.startsWith('/training'))
        .flatMap(([route, operations]) => Object.keys(operations).map((method) => ({ route, method })));
      assert.ok(documented.length >= 6);
      for (const { route, method } of documented) {
        // `{id}` is a document's: row 0's id.
        const res = await request(app)[method as 'get' | 'post'](route.replace('{id}', '0')).send(method === 'post' ? { queries: [] } : undefined);
        assert.notEqual(res.status, 404, `${method.toUpperCase()} ${route} is documented but not served`);
      }
    });

    it('/openapi.yaml serves the repository document, with security headers from helmet but none that demand HTTPS', async () => {
      const { app } = createHarness(new StandInService(rows));
      const res = await request(app).get('/openapi.yaml').expect(200);
      assert.match(res.headers['content-type'] ?? '', /yaml/);
      assert.match(res.text, /^openapi: 3\.1\.0/);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['x-powered-by'], undefined);
      for (const path of ['/openapi.yaml', '/health']) {
        const headers = (await request(app).get(path).expect(200)).headers;
        assert.equal(headers['strict-transport-security'], undefined, path);
        assert.match(headers['content-security-policy'] ?? '', /default-src 'self'/, path);
        assert.doesNotMatch(headers['content-security-policy'] ?? '', /upgrade-insecure-requests/, path);
      }
    });
  });

  describe('logs and metrics', () => {
    it('logs method, route, status, duration and query count, never query text by default', async () => {
      const harness = createHarness(new StandInService(rows));
      await request(harness.app).post('/retrieve').send({ queries: ['private prompt text', 'another'] }).expect(200);
      const line = harness.logLines.find((entry) => entry.msg === 'request');
      assert.ok(line);
      assert.equal(line.method, 'POST');
      assert.equal(line.route, '/retrieve');
      assert.equal(line.status, 200);
      assert.equal(line.queries, 2);
      assert.equal(line.engineMs, 7, 'encode 4 + search 2 + fetch 1');
      assert.equal(typeof line.durationMs, 'number');
      assert.doesNotMatch(JSON.stringify(harness.logLines), /private prompt text/);
    });

    it('logs probes (/health, /ready, /metrics) at debug, not info', async () => {
      const harness = createHarness(new StandInService(rows));
      await request(harness.app).get('/health').expect(200);
      await request(harness.app).get('/metrics').expect(200);
      await request(harness.app).get('/info').expect(200);
      assert.deepEqual(
        harness.logLines.filter((line) => line.msg === 'request').map((line) => line.route),
        ['/info'],
      );
    });

    it('logs query text when --log_queries is on', async () => {
      const harness = createHarness(new StandInService(rows), { logQueries: true });
      await request(harness.app).post('/retrieve').send({ queries: ['visible query'] }).expect(200);
      const line = harness.logLines.find((entry) => entry.msg === 'request');
      assert.deepEqual(line?.queryTexts, ['visible query']);
    });

    it('/metrics counts the requests just made, by route and status, and the engine stages', async () => {
      const { app } = createHarness(new StandInService(rows));
      await request(app).post('/retrieve').send({ queries: ['a', 'b', 'c'] }).expect(200);
      await request(app).post('/retrieve').send({ queries: ['d'] }).expect(200);
      await request(app).post('/retrieve').send({ queries: 'bad' }).expect(400);
      await request(app).post('/retrieve').set('Content-Type', 'application/json').send('{').expect(400);
      await request(app).get('/health').expect(200);
      await request(app).get('/missing').expect(404);
      const text = (await request(app).get('/metrics').expect(200)).text;
      const requests = (labels: Record<string, string>) => metricValue(text, 'retriever_http_requests_total', labels);
      assert.equal(requests({ method: 'POST', route: '/retrieve', status: '200' }), 2);
      assert.equal(requests({ method: 'POST', route: '/retrieve', status: '400' }), 2);
      assert.equal(requests({ method: 'GET', route: '/health', status: '200' }), 1);
      assert.equal(requests({ method: 'GET', route: 'unmatched', status: '404' }), 1);
      assert.equal(metricValue(text, 'retriever_http_request_duration_seconds_count', { route: '/retrieve', status: '200' }), 2);
      assert.equal(metricValue(text, 'retriever_queries_per_request_count'), 2);
      assert.equal(metricValue(text, 'retriever_queries_per_request_sum'), 4);
      assert.equal(metricValue(text, 'retriever_stage_duration_seconds_count', { stage: 'encode' }), 2);
      assert.equal(metricValue(text, 'retriever_stage_duration_seconds_sum', { stage: 'encode' }), 0.008);
      assert.equal(metricValue(text, 'retriever_execution_provider', { provider: 'cpu' }), 1);
      assert.equal(metricValue(text, 'retriever_index_rows'), 1000);
      assert.equal(metricValue(text, 'retriever_ready'), 1);
      assert.ok((metricValue(text, 'process_cpu_user_seconds_total') ?? -1) >= 0, 'default process metrics');
    });
  });
});
