import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import { readManifest } from '../../src/encoder/manifest.js';
import { readVocabularyFile } from '../../src/encoder/tokenizer-files.js';
import { WorkerCrossEncoder } from '../../src/encoder/worker-cross-encoder.js';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { resolveModelFolder } from '../../src/engine/model-folder.js';
import { PairBatcher } from '../../src/engine/pair-batcher.js';
import { passageText, PassageReranker } from '../../src/engine/reranker.js';
import { Retriever } from '../../src/engine/retriever.js';
import { VERSION_HEADER } from '../../src/http/retrieve-routes.js';
import { createHarness, metricValue, type Harness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { realFixture } from '../support/real-service.js';
import { renderLikeSearchR1, type ScoredItem } from '../support/search-r1-client.js';
import { writeRerankerCheckpoint } from '../support/reranker-fixtures.js';
import { generateRerankerWeights } from '../../src/encoder/weights.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';

const BATCHING = { maxBatchPairs: 2560, maxBatchTokens: 163_840, maxQueuedPairs: 81_920 };
const QUERIES = ['pavia cathedral architect dome', 'iowa highway route paved'];

describe('reranking (serve --reranker_model): /retrieve retrieves then reranks, POST /rerank; real engine, cross-encoder and HTTP', function () {
  this.timeout(120_000);
  let dir: string;
  let active: ActiveRetriever;
  let reranker: PassageReranker;
  let direct: WorkerCrossEncoder;
  let harness: Harness;

  /** The cross-encoder's own score of each candidate, computed apart from the service. */
  async function directScores(query: string, documents: readonly CorpusRow[]): Promise<number[]> {
    return [...(await direct.score(documents.map((document) => [query, passageText(document.contents)] as const)))];
  }

  async function retrieved(query: string, topk: number): Promise<CorpusRow[]> {
    const result = await active.retrieve([{ query }], topk);
    return result.hits[0]!.map((hit) => hit.document);
  }

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'rerank-http-'));
    const files = await realFixture();
    const { architecture } = await readManifest(files.modelDir);
    const tokens = await readVocabularyFile(path.join(files.modelDir, 'vocab.txt'));
    const checkpoint = await writeRerankerCheckpoint(path.join(dir, 'ms-marco-stand-in'), {
      architecture,
      tokens,
      weights: generateRerankerWeights(architecture, 31),
      dtype: 'F16',
    });
    const modelDir = await resolveModelFolder(checkpoint, { cacheDir: path.join(dir, 'models'), fp16: false, kind: 'reranker' });
    active = new ActiveRetriever();
    await active.activate(await Retriever.load(files, { version: 'rerank-v1' }));
    reranker = await PassageReranker.load(modelDir, { device: 'cpu' }, BATCHING);
    direct = await WorkerCrossEncoder.load(modelDir, { device: 'cpu' });
    harness = createHarness(active, { rerankerModel: checkpoint }, undefined, reranker);
  });

  after(async function () {
    await Promise.allSettled([active?.close(), reranker?.close(), direct?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('reranks each query against its own topk_retrieval candidates only, best cross-encoder score first', async function () {
    const own = await Promise.all(QUERIES.map((query) => retrieved(query, 6)));
    const ownIds = own.map((documents) => new Set(documents.map((document) => document.id)));
    assert.ok([...ownIds[0]!].some((id) => !ownIds[1]!.has(id)), 'the two queries retrieve different candidates');

    const res = await request(harness.app).post('/retrieve').send({ queries: QUERIES, topk_retrieval: 6, topk_rerank: 3, return_scores: true }).expect(200);
    assertMatchesOpenApi('POST', '/retrieve', res);
    assert.equal(res.headers[VERSION_HEADER.toLowerCase()], 'rerank-v1');
    const result = res.body.result as ScoredItem[][];
    assert.equal(result.length, 2);
    for (const [i, items] of result.entries()) {
      assert.equal(items.length, 3);
      for (const item of items) assert.ok(ownIds[i]!.has(item.document.id), `query ${i} answered ${item.document.id}, not one of its own candidates`);
      const scores = await directScores(QUERIES[i]!, own[i]!);
      const expected = own[i]!
        .map((document, j) => ({ id: document.id, score: scores[j]! }))
        .sort((a, b) => b.score - a.score)
        .slice(0, 3);
      assert.deepEqual(items.map((item) => item.document.id), expected.map((e) => e.id));
      items.forEach((item, j) => assert.ok(Math.abs(item.score - expected[j]!.score) < 1e-6, `${item.score} vs ${expected[j]!.score}`));
      assert.ok(items.every((item) => item.score > 0 && item.score < 1), 'sigmoid scores');
    }
    assert.match(renderLikeSearchR1(result[0]!), /^Doc 1\(Title: "[^"]+"\) .+\nDoc 2\(Title: /s);
  });

  it('defaults to --retrieval_topk 10 then --reranking_topk 3; plain topk is the final count; return_scores false answers bare rows', async function () {
    const candidates = await retrieved(QUERIES[0]!, 10);
    const scores = await directScores(QUERIES[0]!, candidates);
    const best = candidates.map((document, j) => ({ document, score: scores[j]! })).sort((a, b) => b.score - a.score);

    const byDefault = await request(harness.app).post('/retrieve').send({ queries: [QUERIES[0]], return_scores: true }).expect(200);
    assert.deepEqual(byDefault.body.result[0].map((item: ScoredItem) => item.document.id), best.slice(0, 3).map((e) => e.document.id));
    const plain = await request(harness.app).post('/retrieve').send({ queries: [QUERIES[0]], topk: 5 }).expect(200);
    assertMatchesOpenApi('POST', '/retrieve', plain);
    assert.deepEqual(plain.body.result[0], best.slice(0, 5).map((e) => e.document));
    const same = await request(harness.app).post('/retrieve').send({ queries: [QUERIES[0]], topk: 2, topk_rerank: 2 }).expect(200);
    assert.equal(same.body.result[0].length, 2);
  });

  it('refuses topk_rerank above topk_retrieval, and topk disagreeing with topk_rerank, with 400s naming the field', async function () {
    const over = await request(harness.app).post('/retrieve').send({ queries: ['x'], topk_retrieval: 4, topk_rerank: 5 }).expect(400);
    assert.equal(over.body.error.field, 'topk_rerank');
    assert.match(over.body.error.message, /5 passages cannot be kept out of 4 retrieved/);
    const overDefault = await request(harness.app).post('/retrieve').send({ queries: ['x'], topk: 11 }).expect(400);
    assert.equal(overDefault.body.error.field, 'topk');
    const disagree = await request(harness.app).post('/retrieve').send({ queries: ['x'], topk: 2, topk_rerank: 3 }).expect(400);
    assert.match(disagree.body.error.message, /disagrees with topk_rerank/);
    assertMatchesOpenApi('POST', '/retrieve', disagree);
  });

  describe('POST /rerank (Search-R1 rerank_server.py body)', function () {
    it('scores each query against its own list, answers /retrieve\'s shape with the documents as sent', async function () {
      const lists = await Promise.all(QUERIES.map((query) => retrieved(query, 4)));
      // The second list comes as /retrieve items {document, score}, as a client may pass results on.
      const documents = [lists[0], lists[1]!.map((document) => ({ document, score: 0.5 }))];
      const res = await request(harness.app).post('/rerank').send({ queries: QUERIES, documents, rerank_topk: 2, return_scores: true }).expect(200);
      assertMatchesOpenApi('POST', '/rerank', res);
      for (const [i, items] of (res.body.result as ScoredItem[][]).entries()) {
        const scores = await directScores(QUERIES[i]!, lists[i]!);
        const expected = lists[i]!.map((document, j) => ({ document, score: scores[j]! })).sort((a, b) => b.score - a.score).slice(0, 2);
        assert.deepEqual(items.map((item) => item.document), expected.map((e) => e.document));
        items.forEach((item, j) => assert.ok(Math.abs(item.score - expected[j]!.score) < 1e-6));
      }
      const bare = await request(harness.app).post('/rerank').send({ queries: [QUERIES[0]], documents: [[{ contents: '"T"\nno id here' }]] }).expect(200);
      assert.deepEqual(bare.body, { result: [[{ contents: '"T"\nno id here' }]] });
      assertMatchesOpenApi('POST', '/rerank', bare);
    });

    for (const [name, body, field, pattern] of [
      ['documents not a list', { queries: ['q'], documents: { a: 1 } }, 'documents', /a list of candidate lists/],
      ['a list per query', { queries: ['q', 'r'], documents: [[]] }, 'documents', /1 lists but there are 2 queries/],
      ['an inner list that is not a list', { queries: ['q'], documents: ['"T"\ntext'] }, 'documents[0]', /must be a list of documents/],
      ['a document without contents', { queries: ['q'], documents: [[{ contents: 'x' }, { id: '3', text: 'y' }]] }, 'documents[0][1]', /no string "contents"/],
      ['more candidates than --max_topk', { queries: ['q'], documents: [Array.from({ length: 1001 }, () => ({ contents: 'x' }))] }, 'documents[0]', /1001 documents exceed the limit of 1000/],
      ['more queries than --max_queries', { queries: Array.from({ length: 4097 }, () => 'q'), documents: [] }, 'queries', /4097 queries exceed the limit/],
      ['a non-string query', { queries: [3], documents: [[]] }, 'queries[0]', /must be a string/],
      ['a bad rerank_topk', { queries: ['q'], documents: [[]], rerank_topk: -1 }, 'rerank_topk', /integer from 0 to 1000/],
    ] as const) {
      it(`400 for ${name}`, async function () {
        const res = await request(harness.app).post('/rerank').send(body).expect(400);
        assert.equal(res.body.error.field, field);
        assert.match(res.body.error.message, pattern);
        assertMatchesOpenApi('POST', '/rerank', res);
      });
    }

    it('400 naming --reranker_model on a server without a reranker', async function () {
      const plain = createHarness(active);
      const res = await request(plain.app).post('/rerank').send({ queries: ['q'], documents: [[{ contents: 'x' }]] }).expect(400);
      assert.match(res.body.error.message, /--reranker_model/);
      assertMatchesOpenApi('POST', '/rerank', res);
      // Without a reranker /retrieve ignores the rerank server's fields, as the plain reference does.
      const retrieve = await request(plain.app).post('/retrieve').send({ queries: ['q'], topk: 2, topk_rerank: 7 }).expect(200);
      assert.equal(retrieve.body.result[0].length, 2);
    });
  });

  it('reports rerank time and pairs per batch in /metrics', async function () {
    await request(harness.app).post('/retrieve').send({ queries: QUERIES, topk_retrieval: 4, topk_rerank: 1 }).expect(200);
    const exposition = (await request(harness.app).get('/metrics').expect(200)).text;
    assert.ok(metricValue(exposition, 'retriever_rerank_duration_seconds_count')! >= 1);
    assert.ok(metricValue(exposition, 'retriever_rerank_pairs_per_batch_sum')! >= 8);
  });

  it('merges the pairs of requests that arrive while a call runs into one call', async function () {
    const calls: number[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const gated = {
      score: async (pairs: Parameters<WorkerCrossEncoder['score']>[0]) => {
        calls.push(pairs.length);
        if (calls.length === 1) await held;
        return direct.score(pairs);
      },
    };
    const batcher = new PairBatcher(gated, BATCHING);
    const pair = (i: number) => [[`q${i}`, 'passage'] as const, [`q${i}`, 'other passage'] as const];
    const first = batcher.score(pair(0));
    const rest = [1, 2, 3].map((i) => batcher.score(pair(i)));
    release();
    const answers = await Promise.all([first, ...rest]);
    assert.deepEqual(calls, [2, 6]);
    assert.deepEqual(answers.map((scores) => scores.length), [2, 2, 2, 2]);
    const alone = await direct.score(pair(2));
    assert.deepEqual(answers[2], alone);
  });

  it('refuses pairs past its queue limit (503 overloaded) and drops those whose deadline passes (503 timeout), counting pairs, not queries', async function () {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const gated = {
      score: async (pairs: Parameters<WorkerCrossEncoder['score']>[0]) => {
        await held;
        return direct.score(pairs);
      },
    };
    const batcher = new PairBatcher(gated, { ...BATCHING, maxQueuedPairs: 3 });
    const pairs = (n: number) => Array.from({ length: n }, (_, i) => [`q${i}`, 'passage'] as const);
    const running = batcher.score(pairs(2));
    const queued = batcher.score(pairs(2));
    await assert.rejects(batcher.score(pairs(2)), { code: 'overloaded', message: '2 pairs are already waiting (limit 3); retry shortly' });
    const deadline = new AbortController();
    const expiring = batcher.score(pairs(1), deadline.signal);
    deadline.abort();
    await assert.rejects(expiring, { code: 'timeout', message: 'reranking of 1 pairs left the queue: its deadline passed or its client went away' });
    release();
    assert.deepEqual((await Promise.all([running, queued])).map((scores) => scores.length), [2, 2]);
  });

  it('keeps its reranker across a hot swap of the retriever version (the reranker is fixed per server)', async function () {
    const other = await buildRetrieverFiles({ preset: 'tiny', seed: 8, corpus: SAMPLE_CORPUS });
    await active.activate(await Retriever.load(other, { version: 'rerank-v2' }));
    const res = await request(harness.app).post('/retrieve').send({ queries: [QUERIES[1]], topk_retrieval: 5, topk_rerank: 2, return_scores: true }).expect(200);
    assert.equal(res.headers[VERSION_HEADER.toLowerCase()], 'rerank-v2');
    const candidates = await retrieved(QUERIES[1]!, 5);
    const scores = await directScores(QUERIES[1]!, candidates);
    const expected = candidates.map((document, j) => ({ id: document.id, score: scores[j]! })).sort((a, b) => b.score - a.score).slice(0, 2);
    assert.deepEqual(res.body.result[0].map((item: ScoredItem) => item.document.id), expected.map((e) => e.id));
  });
});
