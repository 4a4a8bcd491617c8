import assert from 'node:assert/strict';
import request from 'supertest';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { sampleRows, StandInService } from '../support/stand-in-service.js';

describe('/ and /docs over HTTP (the page itself is driven in a browser by docs-page.test)', function () {
  it('/ answers JSON links to any client and an HTML page of links to a browser', async function () {
    const { app } = createHarness(new StandInService(await sampleRows()));
    const json = await request(app).get('/').set('Accept', '*/*').expect(200);
    assert.match(json.headers['content-type'] ?? '', /^application\/json/);
    assert.equal(json.body.service.name, 'agentic-retriever');
    assert.equal(json.body.docs, '/docs');
    assert.equal(json.body.openapi, '/openapi.yaml');
    assertMatchesOpenApi('GET', '/', json);
    const plain = await request(app).get('/').set('Accept', 'text/plain').expect(200);
    assert.deepEqual(plain.body, json.body, 'a type it cannot have still gets the JSON, never a 406');

    const html = await request(app).get('/').set('Accept', 'text/html,application/xhtml+xml,*/*;q=0.8').expect(200);
    assert.match(html.headers['content-type'] ?? '', /^text\/html/);
    assert.match(html.text, /<a href="\/docs">\/docs<\/a>/);
    assert.match(html.text, /<a href="\/openapi.yaml">/);
  });

  it('/docs is a page without inline scripts under helmet\'s CSP, loading Swagger UI and its start-up from this server', async function () {
    const { app } = createHarness(new StandInService(await sampleRows()));
    const page = await request(app).get('/docs').expect(200);
    assert.match(page.headers['content-type'] ?? '', /^text\/html/);
    assert.match(page.headers['content-security-policy'] ?? '', /script-src 'self'/);
    const scripts = [...page.text.matchAll(/<script([^>]*)>([^<]*)<\/script>/g)];
    assert.deepEqual(
      scripts.map(([, attributes, inline]) => [attributes.trim(), inline]),
      [
        ['src="/docs/swagger-ui-bundle.js"', ''],
        ['src="/docs/start.js"', ''],
      ],
    );
    const bundle = await request(app).get('/docs/swagger-ui-bundle.js').expect(200);
    assert.match(bundle.headers['content-type'] ?? '', /javascript/);
    assert.match(bundle.text, /SwaggerUIBundle/);
    const start = await request(app).get('/docs/start.js').expect(200);
    assert.match(start.text, /url: '\/openapi.yaml'/);
    assert.match(start.text, /validatorUrl: null/);
    await request(app).get('/docs/swagger-ui.css').expect(200).expect('content-type', /css/);
    // The package's sample page points at the petstore demo on the internet: not served.
    const sample = await request(app).get('/docs/index.html').expect(404);
    assert.equal(sample.body.error.code, 'not_found');
    await request(app).get('/docs/swagger-initializer.js').expect(404);
  });
});
