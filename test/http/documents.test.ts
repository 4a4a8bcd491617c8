import assert from 'node:assert/strict';
import request from 'supertest';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import type { Express } from 'express';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever } from '../../src/engine/retriever.js';
import { VERSION_HEADER } from '../../src/http/retrieve-routes.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { loadRealService, realFixture, type RealService } from '../support/real-service.js';
import { sampleRows } from '../support/stand-in-service.js';

/** The real engine over the wiki18 sample (1,000 rows, ids "0".."999"), with `--max_queries 5`. */
describe('/documents on the real engine over the wiki18 sample', function () {
  let real: RealService;
  let app: Express;
  let rows: CorpusRow[];

  before(async function () {
    rows = await sampleRows();
    real = await loadRealService(await realFixture(), 'documents-v1');
    app = createHarness(real.service, { maxQueries: 5 }).app;
  });

  after(async function () {
    await real?.close();
  });

  /** `GET /documents/{path}` when `body` is absent, else `POST /documents{path}` with it. */
  async function badRequest(path: string, body: unknown, field: string, message: RegExp): Promise<void> {
    const answer = body === undefined ? await request(app).get(`/documents/${path}`) : await request(app).post(`/documents${path}`).send(body as object);
    assert.equal(answer.status, 400, JSON.stringify(answer.body));
    assert.equal(answer.body.error.code, 'bad_request');
    assert.equal(answer.body.error.field, field);
    assert.match(answer.body.error.message, message);
    assertMatchesOpenApi(body === undefined ? 'GET' : 'POST', body === undefined ? '/documents/{id}' : '/documents', answer);
  }

  describe('by the corpus id field', function () {
    it('GET /documents/{id} answers the whole row, with the version that read it', async function () {
      const res = await request(app).get('/documents/17').expect(200);
      assert.deepEqual(res.body, rows[17]);
      assert.match(res.body.contents, /^"[^"\n]+"\n/);
      assert.equal(res.headers[VERSION_HEADER.toLowerCase()], 'documents-v1');
      assertMatchesOpenApi('GET', '/documents/{id}', res);
    });

    it('POST /documents answers the rows in the order asked, repeats included; integer ids mean their decimal string', async function () {
      const res = await request(app).post('/documents').send({ ids: ['999', '0', 42, '999', '500'] }).expect(200);
      assert.deepEqual(
        res.body.documents.map((row: CorpusRow) => row.id),
        ['999', '0', '42', '999', '500'],
      );
      assert.deepEqual(res.body.documents, [rows[999], rows[0], rows[42], rows[999], rows[500]]);
      assert.equal(res.headers[VERSION_HEADER.toLowerCase()], 'documents-v1');
      assertMatchesOpenApi('POST', '/documents', res);
    });

    it('ids: [] answers no documents', async function () {
      const res = await request(app).post('/documents').send({ ids: [] }).expect(200);
      assert.deepEqual(res.body, { documents: [] });
    });

    it('an unknown id is a 404 naming it; in a list, the 404 lists every unknown id once, in the order asked, and no rows', async function () {
      const one = await request(app).get('/documents/no-such-passage').expect(404);
      assert.deepEqual(one.body, { error: { code: 'not_found', message: 'id "no-such-passage" not in the corpus', field: 'id', ids: ['no-such-passage'] } });
      assertMatchesOpenApi('GET', '/documents/{id}', one);

      const many = await request(app).post('/documents').send({ ids: ['3', 'x', '1000', 'x', '007'] }).expect(404);
      assert.deepEqual(many.body, {
        error: { code: 'not_found', message: 'ids "x", "1000", "007" not in the corpus', field: 'ids', ids: ['x', '1000', '007'] },
      });
      assertMatchesOpenApi('POST', '/documents', many);
    });

    it('an id with a slash, percent-encoded, is looked up as the whole id', async function () {
      const res = await request(app).get('/documents/a%2Fb').expect(404);
      assert.deepEqual(res.body.error.ids, ['a/b']);
    });
  });

  describe('by row number (?by=row)', function () {
    it('answers row i for i from 0 to the last row, as integers or digit strings', async function () {
      assert.deepEqual((await request(app).get('/documents/999?by=row').expect(200)).body, rows[999]);
      assert.deepEqual((await request(app).get('/documents/0?by=row').expect(200)).body, rows[0]);
      const res = await request(app).post('/documents?by=row').send({ ids: [5, '6', 0] }).expect(200);
      assert.deepEqual(res.body.documents, [rows[5], rows[6], rows[0]]);
      assertMatchesOpenApi('POST', '/documents', res);
    });

    it('a row past the end is a 404 naming it and the corpus size', async function () {
      const one = await request(app).get('/documents/1000?by=row').expect(404);
      assert.deepEqual(one.body, {
        error: { code: 'not_found', message: 'row 1000 past the end of the corpus (1000 rows, numbered from 0)', field: 'id', ids: [1000] },
      });
      const many = await request(app).post('/documents?by=row').send({ ids: [999, 1000, 123456789] }).expect(404);
      assert.deepEqual(many.body.error.ids, [1000, 123456789]);
      assertMatchesOpenApi('POST', '/documents', many);
    });

    it('a row that is not a non-negative integer is a 400 naming the field', async function () {
      await badRequest('-1?by=row', undefined, 'id', /must be a row number \(an integer from 0\), got "-1"/);
      await badRequest('1.5?by=row', undefined, 'id', /must be a row number/);
      await badRequest('abc?by=row', undefined, 'id', /must be a row number/);
      await badRequest('?by=row', { ids: [1, -1] }, 'ids[1]', /got number -1/);
      await badRequest('?by=row', { ids: [2.5] }, 'ids[0]', /got number 2\.5/);
      await badRequest('?by=row', { ids: ['1e3'] }, 'ids[0]', /got "1e3"/);
    });
  });

  describe('versions', function () {
    it('before a version serves, /documents answers 503 not_ready with Retry-After', async function () {
      const loading = createHarness(new ActiveRetriever()).app;
      const res = await request(loading).get('/documents/0').expect(503);
      assert.equal(res.body.error.code, 'not_ready');
      assert.equal(res.headers['retry-after'], '5');
      assertMatchesOpenApi('GET', '/documents/{id}', res);
    });


    it('every version serves the same corpus: after a swap the new version reads the same rows, and the header names it', async function () {
      const before = await request(app).post('/documents').send({ ids: ['17', '900'] }).expect(200);
      await real.active.activate(await Retriever.load(await realFixture(), { version: 'documents-v2' }));
      const after = await request(app).post('/documents').send({ ids: ['17', '900'] }).expect(200);
      assert.equal(after.headers[VERSION_HEADER.toLowerCase()], 'documents-v2');
      assert.deepEqual(after.body, before.body);
      assert.deepEqual((await request(app).get('/documents/900?by=row').expect(200)).body, rows[900]);
    });
  });

  describe('bad requests', function () {
    it('a body that is not an object, ids missing or not a list, ids that are neither strings nor integers: 400 naming the field', async function () {
      await badRequest('', ['0'], 'body', /must be a JSON object such as \{"ids"/);
      await badRequest('', { queries: ['0'] }, 'ids', /required: an array/);
      await badRequest('', { ids: '0' }, 'ids', /must be an array, got "0"/);
      await badRequest('', { ids: { 0: '0' } }, 'ids', /must be an array, got an object/);
      await badRequest('', { ids: ['0', null] }, 'ids[1]', /must be a string \(or an integer\), got null/);
      await badRequest('', { ids: [1.5] }, 'ids[0]', /got number 1\.5/);
      await badRequest('', { ids: [['0']] }, 'ids[0]', /got an array/);
      await badRequest('', { ids: [true] }, 'ids[0]', /got boolean true/);
    });

    it('more ids than --max_queries (the bound of /retrieve\'s queries) is a 400', async function () {
      await badRequest('', { ids: ['0', '1', '2', '3', '4', '5'] }, 'ids', /6 ids exceed the limit of 5 per request \(--max_queries\)/);
      const atLimit = await request(app).post('/documents').send({ ids: ['0', '1', '2', '3', '4'] }).expect(200);
      assert.equal(atLimit.body.documents.length, 5);
    });

    it('?by= other than id or row is a 400', async function () {
      await badRequest('0?by=line', undefined, 'by', /must be "id" .* or "row"/);
      await badRequest('?by=row&by=id', { ids: ['0'] }, 'by', /got an array/);
    });
  });
});
