import assert from 'node:assert/strict';
import { readFile, rm, stat } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Express } from 'express';
import request from 'supertest';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import { ServiceError } from '../../src/errors.js';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { JSON_TRAINING_BODY_LIMIT, trainingRouter } from '../../src/http/training-routes.js';
import { versionRouter } from '../../src/http/version-routes.js';
import { INGEST_SLICE_ITEMS } from '../../src/training/ingest.js';
import { REJECTION_REASONS } from '../../src/training/fields.js';
import type { TevatronRecord } from '../../src/training/legacy.js';
import type { TrainingRecord } from '../../src/training/record.js';
import { EXAMPLES_FILE, TrainingExampleStore } from '../../src/training/store.js';
import { VersionManager } from '../../src/versions/version-manager.js';
import { createHarness, metricValue } from '../support/app-harness.js';
import { assertMatchesOpenApi, assertMatchesSchema, openApiDocument } from '../support/openapi-schemas.js';
import { StandInService } from '../support/stand-in-service.js';
import { makeRecord, samplePath, scoredRound, temporaryDir } from '../support/training-fixtures.js';

const TOKEN = 'training-secret-7f3a';
const AUTH = `Bearer ${TOKEN}`;

function jsonl(values: readonly unknown[]): string {
  return values.map((value) => JSON.stringify(value)).join('\n');
}

function parseJsonl<T>(text: string): T[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as T);
}

/** The JSON Lines export checked line by line against the schema openapi.yaml names for its format. */
function exportedLines<T>(res: request.Response, schema: 'TrainingRecord' | 'TevatronRecord'): T[] {
  assertMatchesOpenApi('GET', '/training/examples', res);
  assert.match(res.headers['content-type'] ?? '', /^application\/x-ndjson/);
  const lines = parseJsonl<T>(res.text);
  lines.forEach((line, i) => assertMatchesSchema(`#/components/schemas/${schema}`, line, `export line ${i + 1}`));
  return lines;
}

/** The four data operations openapi.yaml documents under /training (versions and jobs have their own tests). */
const DATA_OPERATIONS = Object.entries(openApiDocument.paths)
  .filter(([route]) => route.startsWith('/training') && !/^\/training\/(versions|jobs)/.test(route))
  .flatMap(([route, operations]) => Object.keys(operations).map((method) => ({ route, method: method.toUpperCase() })));

describe('training routes (real app, real corpus store, real HTTP)', function () {
  let dir: string;
  let corpus: CorpusStore;
  let store: TrainingExampleStore;
  let corpusLoaded: boolean;
  let app: Express;

  function makeApp(options: { bodyLimit?: string; appBodyLimit?: string } = {}): Express {
    const router = trainingRouter({
      store: () => store,
      corpus: () => (corpusLoaded ? corpus : undefined),
      token: TOKEN,
      ...(options.bodyLimit ? { bodyLimit: options.bodyLimit } : {}),
    });
    return createHarness(new StandInService([]), options.appBodyLimit ? { bodyLimit: options.appBodyLimit } : {}, [router]).app;
  }

  beforeEach(async function () {
    dir = await temporaryDir('routes');
    corpus = await CorpusStore.open(samplePath, { sidecarPath: path.join(dir, 'corpus.offsets') });
    store = await TrainingExampleStore.open(path.join(dir, 'store'));
    corpusLoaded = true;
    app = makeApp();
  });

  afterEach(async function () {
    await store.close();
    await corpus.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('authentication', function () {
    it('answers 401 with the error body and a Bearer challenge without a token or with a wrong one', async function () {
      const missing = await request(app).get('/training/stats').expect(401);
      assert.deepEqual(missing.body, { error: { code: 'unauthorized', message: 'missing bearer token' } });
      assert.equal(missing.headers['www-authenticate'], 'Bearer');
      assertMatchesOpenApi('GET', '/training/stats', missing);
      const wrong = await request(app).get('/training/stats').set('Authorization', `Bearer ${TOKEN}x`).expect(401);
      assert.deepEqual(wrong.body, { error: { code: 'unauthorized', message: 'invalid bearer token' } });
      assertMatchesOpenApi('GET', '/training/stats', wrong);
      await request(app).get('/training/stats').set('Authorization', `Basic ${TOKEN}`).expect(401);
      await request(app).post('/training/examples').type('application/x-ndjson').send(jsonl([makeRecord()])).expect(401);
      assert.equal(store.stats().records, 0);
      await request(app).get('/training/stats').set('Authorization', AUTH).expect(200);
    });

    it('counts refused requests in retriever_http_requests_total under their route, not as unmatched', async function () {
      const harness = createHarness(new StandInService([]), {}, [trainingRouter({ store: () => store, corpus: () => corpus, token: TOKEN })]);
      for (const { method, route } of DATA_OPERATIONS) {
        await (method === 'POST' ? request(harness.app).post(route).send([makeRecord()]) : request(harness.app).get(route)).expect(401);
      }
      await request(harness.app).get('/training/stats').set('Authorization', `Bearer ${TOKEN}x`).expect(401);
      await request(harness.app).get('/training/no-such-route').expect(404);
      const text = (await request(harness.app).get('/metrics').expect(200)).text;
      const count = (method: string, route: string, status: string) => metricValue(text, 'retriever_http_requests_total', { method, route, status });
      for (const { method, route } of DATA_OPERATIONS) assert.equal(count(method, route, '401'), route === '/training/stats' ? 2 : 1, `${method} ${route}`);
      assert.equal(count('GET', 'unmatched', '401'), undefined);
      assert.equal(count('GET', 'unmatched', '404'), 1);
    });

    it('refuses to build the routes without a token unless authentication is turned off by name', async function () {
      assert.throws(() => trainingRouter({ store: () => store, corpus: () => corpus }), (error: unknown) => {
        assert.ok(error instanceof ServiceError);
        assert.match(error.message, /need a bearer token/);
        return true;
      });
      assert.throws(() => trainingRouter({ store: () => store, corpus: () => corpus, token: '' }), ServiceError);
      const open = createHarness(new StandInService([]), {}, [trainingRouter({ store: () => store, corpus: () => corpus, allowUnauthenticated: true })]).app;
      await request(open).get('/training/stats').expect(200);
    });
  });

  describe('names', function () {
    it('refuses control characters and lone surrogates in dataset, query_id, a construction dataset and a version label, naming the character; texts keep them', async function () {
      const records = [
        makeRecord({ dataset: 'hotpot\u0000qa' }),
        makeRecord({ query_id: 'train_\uD800' }),
        makeRecord({ query_id: 'train_\u009B17' }),
        // Paired surrogates are one character (an emoji), and texts are the reference's to judge.
        makeRecord({ query_id: 'train_\u{1F600}', question: 'Which city\u0001 hosts the cathedral?', query_text: 'cathedral\u0007 city' }),
      ];
      const ingest = await request(app).post('/training/examples').set('Authorization', AUTH).send(records).expect(200);
      assert.deepEqual(
        (ingest.body.results as Record<string, unknown>[]).map(({ status, reason, field, message }) => ({ status, reason, field, message })),
        [
          {
            status: 'rejected',
            reason: 'invalid_value',
            field: 'dataset',
            message: 'dataset must not hold control characters or lone surrogates: a control character (U+0000) at position 6',
          },
          {
            status: 'rejected',
            reason: 'invalid_value',
            field: 'query_id',
            message: 'query_id must not hold control characters or lone surrogates: a lone surrogate (U+D800) at position 6',
          },
          {
            status: 'rejected',
            reason: 'invalid_value',
            field: 'query_id',
            message: 'query_id must not hold control characters or lone surrogates: a control character (U+009B) at position 6',
          },
          { status: 'accepted', reason: undefined, field: undefined, message: undefined },
        ],
      );
      const exported = await request(app).get('/training/examples').set('Authorization', AUTH).expect(200);
      assert.deepEqual(
        parseJsonl<TrainingRecord>(exported.text).map((record) => [record.query_id, record.question]),
        [['train_\u{1F600}', 'Which city\u0001 hosts the cathedral?']],
      );

      const round = scoredRound([[1, 80], ...Array.from({ length: 15 }, (_, i) => [0, 40 - i] as [0, number])], { dataset: null });
      const construct = await request(app).post('/training/construct').set('Authorization', AUTH).send({ rounds: [round], dataset: 'nq\u001B' }).expect(400);
      assert.deepEqual(construct.body.error, {
        code: 'bad_request',
        message: 'dataset must not hold control characters or lone surrogates: a control character (U+001B) at position 2',
        field: 'dataset',
      });

      const versions = await VersionManager.open({ dataDir: path.join(dir, 'data'), active: new ActiveRetriever(), fp16: false });
      try {
        const withVersions = createHarness(new StandInService([]), {}, [versionRouter({ versions, token: TOKEN })]).app;
        const labelled = await request(withVersions)
          .post('/training/versions')
          .set('Authorization', AUTH)
          .send({ model_path: dir, build_index: true, label: 'v2\u000A' })
          .expect(400);
        assert.deepEqual(labelled.body.error, {
          code: 'bad_request',
          message: 'label must not hold control characters or lone surrogates: a control character (U+000A) at position 2',
          field: 'label',
        });
        assert.deepEqual(versions.list().versions, []);
      } finally {
        await versions.close();
      }
    });
  });

  describe('openapi.yaml', function () {
    it('documents exactly the four data operations, and each is served, answering what it documents', async function () {
      assert.deepEqual(
        DATA_OPERATIONS.map(({ method, route }) => `${method} ${route}`).sort(),
        ['GET /training/examples', 'GET /training/stats', 'POST /training/construct', 'POST /training/examples'],
      );
      const wrong = Array.from({ length: 15 }, (_, i) => [0, 40 - i] as [0, number]);
      const bodies: Record<string, unknown> = {
        'POST /training/examples': [makeRecord()],
        'POST /training/construct': { rounds: [scoredRound([[1, 80], ...wrong], { dataset: null })], seed: -3 },
      };
      for (const { method, route } of DATA_OPERATIONS) {
        const send = (authorization?: string) => {
          const req = method === 'POST' ? request(app).post(route) : request(app).get(route);
          if (authorization) req.set('Authorization', authorization);
          return method === 'POST' ? req.send(bodies[`${method} ${route}`] as object) : req;
        };
        const refused = await send().expect(401);
        assertMatchesOpenApi(method, route, refused);
        const served = await send(AUTH);
        assert.equal(served.status, 200, `${method} ${route} is documented but answered ${served.status}`);
        assertMatchesOpenApi(method, route, served);
      }
      const stats = await request(app).get('/training/stats').set('Authorization', AUTH).expect(200);
      assert.deepEqual(Object.keys(stats.body.datasets), ['default', 'hotpotqa']);
      assert.equal(stats.body.datasets.default.records, 1);
    });

    it('lists exactly the rejection reason codes the validators use', function () {
      const documented = openApiDocument.components.schemas.RejectionReason as { enum: string[] };
      assert.deepEqual(documented.enum, [...REJECTION_REASONS]);
    });
  });

  describe('POST /training/examples', function () {
    it('rejects one record per reason code with its position and message, stores the valid one, answers 200', async function () {
      const valid = makeRecord({ query_id: 'valid' });
      const { question: _question, ...withoutQuestion } = makeRecord();
      const misaligned = makeRecord();
      misaligned.scores = misaligned.scores.slice(0, 15);
      const outranked = makeRecord();
      outranked.scores[4] = { em: 1, local_utility: 0.9 };
      const wrongPositive = makeRecord();
      wrongPositive.scores[0] = { em: 0, local_utility: 0.99 };
      const repeated = makeRecord();
      repeated.passage_ids[5] = '0';
      const tied = makeRecord();
      tied.scores[3] = { ...tied.scores[0]! };
      const joined = makeRecord({ query_text: 'Who founded Copenhagen? [SEP] Absalon' });
      const body = [
        jsonl([valid, withoutQuestion, { ...makeRecord(), round_index: '1' }, { ...makeRecord(), passage_ids: ['01', ...makeRecord().passage_ids.slice(1)] }]),
        '{"dataset": "nq", "query_id": ',
        jsonl([misaligned, { ...makeRecord(), passage_ids: ['1000', ...makeRecord().passage_ids.slice(1)] }, outranked, wrongPositive, repeated, tied, joined]),
      ].join('\n');
      const response = await request(app).post('/training/examples').set('Authorization', AUTH).type('application/x-ndjson').send(body).expect(200);
      assertMatchesOpenApi('POST', '/training/examples', response);
      const results = response.body.results as Record<string, unknown>[];
      assert.deepEqual(
        results.map(({ index, line, status, reason, field }) => ({ index, line, status, reason, field })),
        [
          { index: 0, line: 1, status: 'accepted', reason: undefined, field: undefined },
          { index: 1, line: 2, status: 'rejected', reason: 'missing_field', field: 'question' },
          { index: 2, line: 3, status: 'rejected', reason: 'wrong_type', field: 'round_index' },
          { index: 3, line: 4, status: 'rejected', reason: 'invalid_value', field: 'passage_ids[0]' },
          { index: 4, line: 5, status: 'rejected', reason: 'malformed_json', field: undefined },
          { index: 5, line: 6, status: 'rejected', reason: 'misaligned_scores', field: 'scores' },
          { index: 6, line: 7, status: 'rejected', reason: 'unknown_passage', field: 'passage_ids[0]' },
          { index: 7, line: 8, status: 'rejected', reason: 'positive_not_first', field: 'scores[4]' },
          { index: 8, line: 9, status: 'rejected', reason: 'positive_not_first', field: 'scores[0].em' },
          { index: 9, line: 10, status: 'rejected', reason: 'duplicate_passage', field: 'passage_ids[5]' },
          { index: 10, line: 11, status: 'rejected', reason: 'negative_ties_positive', field: 'scores[3]' },
          { index: 11, line: 12, status: 'rejected', reason: 'query_has_separator', field: 'query_text' },
        ],
      );
      assert.match(results[6]!.message as string, /1000 is not a row of the served corpus \(1000 rows\)/);
      assert.match(results[5]!.message as string, /scores has 15 entries for 16 passage_ids/);
      assert.match(results[4]!.message as string, /^not JSON: /);
      assert.deepEqual(
        { received: response.body.received, accepted: response.body.accepted, duplicate: response.body.duplicate, rejected: response.body.rejected },
        { received: 12, accepted: 1, duplicate: 0, rejected: 11 },
      );
      const statsResponse = await request(app).get('/training/stats').set('Authorization', AUTH).expect(200);
      assertMatchesOpenApi('GET', '/training/stats', statsResponse);
      const stats = statsResponse.body;
      assert.equal(stats.records, 1);
      assert.deepEqual(stats.rejections, {
        malformed_json: 1,
        missing_field: 1,
        wrong_type: 1,
        invalid_value: 1,
        misaligned_scores: 1,
        unknown_passage: 1,
        positive_not_first: 2,
        duplicate_passage: 1,
        query_has_separator: 1,
        negative_ties_positive: 1,
      });
      const stored = exportedLines<TrainingRecord>(await request(app).get('/training/examples').set('Authorization', AUTH).expect(200), 'TrainingRecord');
      assert.deepEqual(stored, [valid]);
    });

    it('answers duplicate for a re-sent batch and leaves the store unchanged', async function () {
      const records = [makeRecord({ query_id: 'a' }), makeRecord({ query_id: 'b' }, 30)];
      const first = await request(app).post('/training/examples').set('Authorization', AUTH).send(records).expect(200);
      assert.deepEqual(first.body.results, [{ index: 0, status: 'accepted' }, { index: 1, status: 'accepted' }]);
      assertMatchesOpenApi('POST', '/training/examples', first);
      const file = path.join(dir, 'store', EXAMPLES_FILE);
      const before = await readFile(file, 'utf8');
      const again = await request(app).post('/training/examples').set('Authorization', AUTH).send({ records }).expect(200);
      assert.deepEqual(again.body.results, [{ index: 0, status: 'duplicate' }, { index: 1, status: 'duplicate' }]);
      assert.equal(again.body.duplicate, 2);
      assertMatchesOpenApi('POST', '/training/examples', again);
      assert.equal(await readFile(file, 'utf8'), before);
      const statsResponse = await request(app).get('/training/stats').set('Authorization', AUTH).expect(200);
      assertMatchesOpenApi('GET', '/training/stats', statsResponse);
      assert.deepEqual(statsResponse.body.datasets, {
        hotpotqa: { records: 2, queries: 2, rounds: 2, positives: 2, byRound: { '1': 2 } },
      });
      assert.equal(statsResponse.body.records, 2);
      assert.equal(statsResponse.body.duplicates, 2);
    });

    it('accepts a tevatron legacy record as one stored record per positive', async function () {
      const legacy = {
        query_id: 'legacy-1',
        query: 'Who founded Copenhagen? [SEP] Absalon Havn castle',
        positive_passages: [{ docid: '32', title: 'Absalon', text: '...' }, { docid: 29, title: 'Absalon', text: '...' }],
        negative_passages: [{ docid: '0', title: 'Evan Morris', text: '...' }, { docid: '1', title: 'Horatio Hale', text: '...' }],
      };
      const response = await request(app).post('/training/examples').set('Authorization', AUTH).send([legacy]).expect(200);
      assert.deepEqual(response.body.results, [{ index: 0, status: 'accepted', records: 2 }]);
      assertMatchesOpenApi('POST', '/training/examples', response);
      const stored = exportedLines<TrainingRecord>(await request(app).get('/training/examples').set('Authorization', AUTH).expect(200), 'TrainingRecord');
      const common = {
        dataset: 'tevatron',
        query_id: 'legacy-1',
        question: 'Who founded Copenhagen?',
        round_index: 1,
        history_queries: [],
        query_text: 'Absalon Havn castle',
      };
      const scores = [{ em: 1, local_utility: 1 }, { em: 0, local_utility: 0 }, { em: 0, local_utility: 0 }];
      assert.deepEqual(stored, [
        { ...common, passage_ids: ['32', '0', '1'], scores },
        { ...common, passage_ids: ['29', '0', '1'], scores },
      ]);
    });

    it('takes JSONL bodies far above the app JSON limit, up to its own limit (413 beyond it)', async function () {
      app = makeApp({ appBodyLimit: '1kb', bodyLimit: '300kb' });
      const records = Array.from({ length: 40 }, (_, i) => makeRecord({ query_id: `big-${i}`, question: 'q'.repeat(4000) }));
      const body = jsonl(records);
      assert.ok(body.length > 150_000);
      const accepted = await request(app).post('/training/examples').set('Authorization', AUTH).type('application/x-ndjson').send(body).expect(200);
      assert.equal(accepted.body.accepted, 40);
      assertMatchesOpenApi('POST', '/training/examples', accepted);
      const tooLarge = await request(app)
        .post('/training/examples')
        .set('Authorization', AUTH)
        .type('application/x-ndjson')
        .send(`${body}\n${body}`)
        .expect(413);
      assert.equal(tooLarge.body.error.code, 'payload_too_large');
      assert.match(tooLarge.body.error.message, /training body limit \(307200 bytes\)/);
      assertMatchesOpenApi('POST', '/training/examples', tooLarge);
    });

    it('answers a body its Content-Encoding does not describe with 400, an unknown encoding with 415, and stores nothing', async function () {
      const body = jsonl([makeRecord({ query_id: 'encoded' })]);
      for (const [encoding, status, code] of [['deflate', 400, 'bad_request'], ['br', 400, 'bad_request'], ['x-unknown', 415, 'unsupported_media_type']] as const) {
        const res = await request(app).post('/training/examples').set('Authorization', AUTH).type('application/x-ndjson').set('Content-Encoding', encoding).send(body);
        assert.equal(res.status, status, `${encoding}: ${res.text}`);
        assert.equal(res.body.error.code, code);
        assert.equal(res.body.error.field, 'body');
        assertMatchesOpenApi('POST', '/training/examples', res);
      }
      assert.equal(store.stats().records, 0);
    });

    it('answers /health while a 20k-record JSON Lines ingest is in progress, then reports every record in order (real port)', async function () {
      const count = 20_000;
      assert.ok(count > 20 * INGEST_SLICE_ITEMS, 'the ingest must span many slices');
      const lines = Array.from({ length: count }, (_, i) => JSON.stringify(makeRecord({ query_id: `bulk-${i}` }, i % 900)));
      lines[7_001] = '{"dataset": "nq", "query_id": ';
      lines[19_998] = lines[3]!;
      const server = createServer(app).listen(0, '127.0.0.1');
      try {
        await new Promise((resolve) => server.once('listening', resolve));
        const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        const order: string[] = [];
        const ingest = request(url).post('/training/examples').set('Authorization', AUTH).type('application/x-ndjson').send(lines.join('\n'));
        const ingested = ingest.then((res) => {
          order.push('ingest');
          return res;
        });
        // Once the first slice is stored the ingest is under way; /health must not wait for its end.
        while (store.stats().records === 0 && order.length === 0) await nextTurn();
        const health = await request(url).get('/health').expect(200);
        order.push('health');
        assert.deepEqual(health.body, { status: 'ok' });
        const response = await ingested;
        assert.deepEqual(order, ['health', 'ingest']);
        assert.equal(response.status, 200);
        assertMatchesOpenApi('POST', '/training/examples', response);
        const { results, ...counts } = response.body as { results: Record<string, unknown>[] };
        assert.deepEqual(counts, { received: count, accepted: count - 2, duplicate: 1, rejected: 1 });
        assert.equal(results.length, count);
        results.forEach((result, i) => assert.deepEqual([result.index, result.line], [i, i + 1]));
        assert.deepEqual(results[7_001], { index: 7_001, line: 7_002, status: 'rejected', reason: 'malformed_json', message: results[7_001]!.message });
        assert.match(results[7_001]!.message as string, /^not JSON: /);
        assert.deepEqual(results[19_998], { index: 19_998, line: 19_999, status: 'duplicate' });
        assert.equal(results.filter((result) => result.status === 'accepted').length, count - 2);
        const stats = store.stats();
        assert.deepEqual([stats.records, stats.duplicates, stats.rejections.malformed_json], [count - 2, 1, 1]);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('refuses a JSON body above the JSON limit with 413 pointing to JSON Lines, storing nothing', async function () {
      const padded = [{ ...makeRecord(), padding: 'x'.repeat(JSON_TRAINING_BODY_LIMIT) }];
      const response = await request(app).post('/training/examples').set('Authorization', AUTH).send(padded).expect(413);
      assert.equal(response.body.error.code, 'payload_too_large');
      assert.match(response.body.error.message, /JSON body may be at most 16777216 bytes; send larger uploads as JSON Lines/);
      assertMatchesOpenApi('POST', '/training/examples', response);
      assert.equal(store.stats().records, 0);
    });

    it('cuts off a chunked JSON Lines body (no Content-Length) where it passes the limit, with 413 (real port)', async function () {
      app = makeApp({ bodyLimit: '300kb' });
      const body = Buffer.from(jsonl(Array.from({ length: 900 }, (_, i) => makeRecord({ query_id: `chunked-${i}` }))));
      assert.ok(body.length > 2 * 300 * 1024);
      const server = createServer(app).listen(0, '127.0.0.1');
      try {
        await new Promise((resolve) => server.once('listening', resolve));
        const { port } = server.address() as AddressInfo;
        const answer = await new Promise<{ status: number; body: { error: { code: string; message: string } } }>((resolve, reject) => {
          const upload = httpRequest(
            { port, host: '127.0.0.1', method: 'POST', path: '/training/examples', headers: { authorization: AUTH, 'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked' } },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (chunk: Buffer) => chunks.push(chunk));
              res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString()) }));
              res.on('error', reject);
            },
          );
          // The server may answer and close while the rest is still being written.
          upload.on('error', () => undefined);
          for (let start = 0; start < body.length; start += 64 * 1024) upload.write(body.subarray(start, start + 64 * 1024));
          upload.end();
        });
        assert.equal(answer.status, 413);
        assert.deepEqual(answer.body.error, { code: 'payload_too_large', message: 'request body exceeds the training body limit (307200 bytes)', field: 'body' });
        // The ~430 records before the cut are fewer than one 500-record slice: none was stored.
        assert.equal(store.stats().records, 0);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('reads a gzip-compressed JSON Lines body, and refuses an unknown content encoding with 415, storing nothing', async function () {
      const body = gzipSync(jsonl([makeRecord({ query_id: 'zipped-1' }), makeRecord({ query_id: 'zipped-2' })]));
      const post = (encoding: string) =>
        request(app).post('/training/examples').set('Authorization', AUTH).type('application/x-ndjson').set('Content-Encoding', encoding).send(body);
      const refused = await post('zstd-ish').expect(415);
      assert.deepEqual(refused.body.error, {
        code: 'unsupported_media_type',
        message: 'body: Content-Encoding "zstd-ish" is not supported; send identity, gzip, deflate or br',
        field: 'body',
      });
      assertMatchesOpenApi('POST', '/training/examples', refused);
      assert.equal(store.stats().records, 0);
      const accepted = await post('gzip').expect(200);
      assert.deepEqual(accepted.body.results, [{ index: 0, line: 1, status: 'accepted' }, { index: 1, line: 2, status: 'accepted' }]);
    });

    it('parses structured-syntax JSON types (application/*+json) as JSON, not as JSON Lines', async function () {
      const response = await request(app)
        .post('/training/examples')
        .set('Authorization', AUTH)
        .type('application/vnd.api+json')
        .send(JSON.stringify({ records: [makeRecord({ query_id: 'plus-json' })] }))
        .expect(200);
      assert.equal(response.body.accepted, 1);
      assert.equal(response.body.results[0].status, 'accepted');
    });

    it('answers 400 when the body itself is unusable, storing nothing', async function () {
      const post = () => request(app).post('/training/examples').set('Authorization', AUTH);
      const notJson = await post().type('application/json').send('{"records": [').expect(400);
      assert.equal(notJson.body.error.code, 'bad_request');
      assert.match(notJson.body.error.message, /not valid JSON/);
      const wrongShape = await post().send({ items: [makeRecord()] }).expect(400);
      assert.match(wrongShape.body.error.message, /an array or an object with a "records" array/);
      const empty = await post().type('application/x-ndjson').send('\n\n').expect(400);
      assert.match(empty.body.error.message, /holds no records/);
      const binary = await post().type('application/octet-stream').send(Buffer.from(jsonl([makeRecord()]))).expect(400);
      assert.match(binary.body.error.message, /JSON Lines \(application\/x-ndjson\) or JSON/);
      for (const refused of [notJson, wrongShape, empty, binary]) {
        assert.equal(refused.body.error.field, 'body');
        assertMatchesOpenApi('POST', '/training/examples', refused);
      }
      assert.equal(store.stats().records, 0);
    });

    it('answers 503 while the corpus is not loaded (passage ids cannot be checked yet)', async function () {
      corpusLoaded = false;
      const response = await request(app).post('/training/examples').set('Authorization', AUTH).send([makeRecord()]).expect(503);
      assert.equal(response.body.error.code, 'not_ready');
      assert.equal(response.headers['retry-after'], '5');
      assertMatchesOpenApi('POST', '/training/examples', response);
      assert.equal(store.stats().records, 0);
      const construct = await request(app).post('/training/construct').set('Authorization', AUTH).send([scoredRound([[1, 90]])]).expect(503);
      assertMatchesOpenApi('POST', '/training/construct', construct);
    });
  });

  describe('GET /training/examples', function () {
    it('streams JSONL filtered by dataset and round, and refuses unknown formats and bad rounds', async function () {
      const records = [
        makeRecord({ dataset: 'nq', round_index: 1 }),
        makeRecord({ dataset: 'nq', round_index: 2 }),
        makeRecord({ dataset: 'hotpotqa', round_index: 2 }),
      ];
      await request(app).post('/training/examples').set('Authorization', AUTH).send(records).expect(200);
      const get = (query: string) => request(app).get(`/training/examples${query}`).set('Authorization', AUTH);
      assert.deepEqual(exportedLines(await get('').expect(200), 'TrainingRecord'), records);
      assert.deepEqual(exportedLines(await get('?format=jsonl&dataset=nq&round=2').expect(200), 'TrainingRecord'), [records[1]]);
      assert.deepEqual(exportedLines(await get('?round=2').expect(200), 'TrainingRecord'), records.slice(1));
      assert.equal((await get('?dataset=trivia').expect(200)).text, '');
      for (const [query, field] of [['?format=csv', 'format'], ['?round=-1', 'round'], ['?round=1.5', 'round'], ['?dataset=nq&dataset=hotpotqa', 'dataset']]) {
        const refused = await get(query!).expect(400);
        assert.equal(refused.body.error.field, field, query);
        assertMatchesOpenApi('GET', '/training/examples', refused);
      }
    });

    it('exports the stored format while the corpus loads, and answers 503 for tevatron, which reads passages from it', async function () {
      await request(app).post('/training/examples').set('Authorization', AUTH).send([makeRecord()]).expect(200);
      corpusLoaded = false;
      const get = (query: string) => request(app).get(`/training/examples${query}`).set('Authorization', AUTH);
      assert.deepEqual(exportedLines(await get('').expect(200), 'TrainingRecord'), [makeRecord()]);
      const loading = await get('?format=tevatron').expect(503);
      assert.equal(loading.body.error.code, 'not_ready');
      assertMatchesOpenApi('GET', '/training/examples', loading);
    });

    it('exports tevatron format with passage titles and texts resolved from the wiki18 sample', async function () {
      const record = makeRecord({ query_id: 'tev', passage_ids: ['0', '29', '32', '999'], scores: [
        { em: 1, local_utility: 0.9 }, { em: 0, local_utility: 0.5 }, { em: 0, local_utility: 0.4 }, { em: 0, local_utility: 0 },
      ] });
      await request(app).post('/training/examples').set('Authorization', AUTH).send([record]).expect(200);
      const response = await request(app).get('/training/examples?format=tevatron').set('Authorization', AUTH).expect(200);
      const [exported, ...rest] = exportedLines<TevatronRecord>(response, 'TevatronRecord');
      assert.equal(rest.length, 0);
      assert.equal(exported!.query_id, 'tev');
      assert.equal(exported!.query, 'Which city hosts the cathedral? [SEP] cathedral city');
      assert.deepEqual(exported!.positive_passages.map((p) => p.docid), ['0']);
      assert.deepEqual(exported!.negative_passages.map((p) => p.docid), ['29', '32', '999']);
      const [evan] = exported!.positive_passages;
      const [absalon, havn, last] = exported!.negative_passages;
      // Row 0 has a quoted title; row 29 an unquoted one; row 32 keeps doubled quotes inside its text.
      assert.equal(evan!.title, 'Evan Morris');
      assert.ok(evan!.text.startsWith('Evan Morris Evan L. Morris (January 26, 1977 \u2013 July 9, 2015) was a lobbyist'));
      assert.equal(absalon!.title, 'Absalon');
      assert.ok(absalon!.text.startsWith('dragged forth and burnt. The whole population of Garz was then baptized'));
      assert.ok(havn!.text.startsWith('city of ""Havn"" (English: Harbour)'));
      const lines = (await readFile(samplePath, 'utf8')).split('\n');
      const contents = (row: number) => (JSON.parse(lines[row]!) as CorpusRow).contents;
      for (const [passage, row] of [[evan, 0], [absalon, 29], [havn, 32], [last, 999]] as const) {
        assert.ok([`"${passage!.title}"\n${passage!.text}`, `${passage!.title}\n${passage!.text}`].includes(contents(row)), `row ${row}`);
      }
    });
  });

  describe('POST /training/construct', function () {
    it('builds records from scored rounds, stores them, and answers the summary; re-sending is duplicate, another seed adds', async function () {
      const wrong = Array.from({ length: 19 }, (_, i) => [0, 50 - i] as [0, number]);
      const rounds = [
        scoredRound([[1, 90], ...wrong], { query_id: 'kept' }),
        scoredRound([[1, 30], ...wrong], { query_id: 'weak' }),
        { ...scoredRound([[1, 90]]), query_id: 12 },
      ];
      const post = (seed: number) =>
        request(app).post(`/training/construct?seed=${seed}`).set('Authorization', AUTH).type('application/x-ndjson').send(jsonl(rounds));
      const first = await post(4).expect(200);
      assertMatchesOpenApi('POST', '/training/construct', first);
      assert.deepEqual(first.body, {
        seed: 4,
        rounds: 3,
        kept: 1,
        records: 1,
        skipped: { top_not_correct: 0, top_below_threshold: 1, too_few_negatives: 0 },
        invalid: 1,
        invalidRounds: [{ index: 2, line: 3, reason: 'wrong_type', message: 'query_id must be a string', field: 'query_id' }],
        accepted: 1,
        duplicate: 0,
      });
      const again = await post(4).expect(200);
      assert.deepEqual([again.body.accepted, again.body.duplicate], [0, 1]);
      assertMatchesOpenApi('POST', '/training/construct', again);
      const other = await post(5).expect(200);
      assert.deepEqual([other.body.accepted, other.body.duplicate], [1, 0]);
      const stored = exportedLines<TrainingRecord>(await request(app).get('/training/examples').set('Authorization', AUTH).expect(200), 'TrainingRecord');
      assert.equal(stored.length, 2);
      assert.ok(stored.every((record) => record.query_id === 'kept' && record.passage_ids[0] === '100' && record.passage_ids.length === 16));
      assert.notDeepEqual(stored[0]!.passage_ids, stored[1]!.passage_ids);
      const viaJson = await request(app).post('/training/construct').set('Authorization', AUTH).send({ rounds, seed: 4 }).expect(200);
      assert.deepEqual([viaJson.body.seed, viaJson.body.duplicate], [4, 1]);
      assertMatchesOpenApi('POST', '/training/construct', viaJson);
      const badSeed = await request(app).post('/training/construct?seed=x').set('Authorization', AUTH).send({ rounds }).expect(400);
      assert.equal(badSeed.body.error.field, 'seed');
      assertMatchesOpenApi('POST', '/training/construct', badSeed);
      const badDataset = await request(app).post('/training/construct').set('Authorization', AUTH).send({ rounds, dataset: 7 }).expect(400);
      assert.equal(badDataset.body.error.field, 'dataset');
      assertMatchesOpenApi('POST', '/training/construct', badDataset);
      const noRounds = await request(app).post('/training/construct').set('Authorization', AUTH).send({ records: rounds }).expect(400);
      assert.match(noRounds.body.error.message, /an array or an object with a "rounds" array/);
      assertMatchesOpenApi('POST', '/training/construct', noRounds);
      assert.ok((await stat(path.join(dir, 'store', EXAMPLES_FILE))).size > 0);
    });
  });
});
