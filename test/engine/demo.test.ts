import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Retriever } from '../../src/engine/retriever.js';
import { buildRetrieverFiles, DEMO_CORPUS, repoRoot } from '../support/retriever-fixture.js';

interface DemoQuery {
  question: string;
  query: string;
  expectedRowIndex: number;
}

describe('the bundled demo: make-model --preset demo + build-index over demo/corpus.jsonl', function () {
  let retriever: Retriever;
  let queries: DemoQuery[];

  before(async function () {
    const text = await readFile(path.join(repoRoot, 'demo', 'queries.jsonl'), 'utf8');
    queries = text.trimEnd().split('\n').map((line) => JSON.parse(line) as DemoQuery);
    retriever = await Retriever.load(await buildRetrieverFiles({ preset: 'demo', seed: 0, corpus: DEMO_CORPUS }), { version: 'demo' });
  });

  after(async function () {
    await retriever?.close();
  });

  it('ranks the passage about a query\'s subject first, for every demo sub-query', async function () {
    assert.ok(queries.length >= 40);
    const { hits } = await retriever.encodeSearchFetch(queries.map(({ query }) => ({ query })), 3);
    const misses = queries.filter((q, i) => hits[i]![0]!.rowIndex !== q.expectedRowIndex).map((q) => q.query);
    assert.deepEqual(misses, []);
  });

  it('does the same for the Agentic-R form "{question} [SEP] {query}"', async function () {
    const { hits } = await retriever.encodeSearchFetch(queries.map(({ question, query }) => ({ question, query })), 3);
    const misses = queries.filter((q, i) => hits[i]![0]!.rowIndex !== q.expectedRowIndex).map((q) => q.query);
    assert.deepEqual(misses, []);
  });

  it('gives an unrelated query a clearly lower best score than a matching one', async function () {
    const { hits } = await retriever.encodeSearchFetch([{ query: queries[0]!.query }, { query: 'zzzz qqqq xxxx' }], 1);
    assert.ok(hits[0]![0]!.score > hits[1]![0]!.score + 0.1);
  });
});
