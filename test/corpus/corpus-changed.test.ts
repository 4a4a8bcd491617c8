import assert from 'node:assert/strict';
import { appendFile, copyFile, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { realFixture } from '../support/real-service.js';
import { temporaryDir } from '../support/version-fixtures.js';
import { isServiceError } from '../support/assert-service-error.js';

const CHANGED = /^corpus changed, restart the server \(.+wiki18\.jsonl is not the file the server loaded\)$/;

/** Ways a corpus file changes under a running server. */
const CHANGES: Record<string, (file: string) => Promise<void>> = {
  'appended to': (file) => appendFile(file, '{"id": "extra", "contents": "a row added while serving"}\n'),
  'truncated': async (file) => truncate(file, 1000),
  'edited in place, same size': async (file) => {
    const text = await readFile(file, 'utf8');
    await writeFile(file, text.replace('Evan Morris', 'Evan Norris'));
  },
  'replaced by a rename': async (file) => {
    await copyFile(file, `${file}.new`);
    await appendFile(`${file}.new`, '{"id": "extra", "contents": "x"}\n');
    await rename(`${file}.new`, file);
  },
};

describe('a corpus changed under a running server answers 503 corpus_changed, never other rows or a 500', function () {
  let fixture: RetrieverFiles;
  let dir: string;

  before(async function () {
    fixture = await realFixture();
  });

  beforeEach(async function () {
    dir = await temporaryDir('corpus-changed');
  });

  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function copiedFiles(): Promise<RetrieverFiles> {
    const corpusPath = path.join(dir, 'wiki18.jsonl');
    await copyFile(fixture.corpusPath, corpusPath);
    return { ...fixture, corpusPath, sidecarPath: path.join(dir, 'wiki18.offsets') };
  }

  for (const [change, apply] of Object.entries(CHANGES)) {
    it(`CorpusStore: ${change}`, async function () {
      const { corpusPath, sidecarPath } = await copiedFiles();
      const corpus = await CorpusStore.open(corpusPath, { sidecarPath });
      try {
        assert.equal((await corpus.readRow(0)).id, '0');
        await apply(corpusPath);
        await assert.rejects(corpus.readRows([0, 5]), isServiceError('corpus_changed', CHANGED));
        await assert.rejects(corpus.passages().next(), isServiceError('corpus_changed', CHANGED));
      } finally {
        await corpus.close();
      }
    });
  }

  it('over HTTP: 503 corpus_changed with Retry-After, logged once at error level, for every later request', async function () {
    const files = await copiedFiles();
    const active = new ActiveRetriever();
    await active.activate(await Retriever.load(files, { version: 'v1' }));
    try {
      const harness = createHarness(active);
      await request(harness.app).post('/retrieve').send({ queries: ['who was evan morris'], topk: 2 }).expect(200);
      await CHANGES['appended to']!(files.corpusPath);
      // Fresh query texts: a cached result would not touch the corpus.
      for (const query of ['who lobbied for genentech', 'horatio hale expedition']) {
        const res = await request(harness.app).post('/retrieve').send({ queries: [query], topk: 2 });
        assert.equal(res.status, 503, res.text);
        assert.equal(res.body.error.code, 'corpus_changed');
        assert.match(res.body.error.message, CHANGED);
        assert.equal(res.headers['retry-after'], '60');
        assertMatchesOpenApi('POST', '/retrieve', res);
      }
      const logged = harness.logLines.filter((line) => line.level === 50);
      assert.equal(logged.length, 1, JSON.stringify(logged));
      assert.match(String(logged[0]!.msg), CHANGED);
    } finally {
      await active.close();
    }
  });
});
