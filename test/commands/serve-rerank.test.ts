import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { readManifest } from '../../src/encoder/manifest.js';
import { readVocabularyFile } from '../../src/encoder/tokenizer-files.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { writeRerankerCheckpoint } from '../support/reranker-fixtures.js';
import { generateRerankerWeights } from '../../src/encoder/weights.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../support/retriever-fixture.js';
import { serveOnce } from '../support/serve-child.js';
import { temporaryDir, writeCheckpoint } from '../support/version-fixtures.js';

const FATAL = 60;

/** Search-R1's `example/retriever/retrieval_launch_hierarchical.sh` flags, with local folders for its model ids. */
function hierarchicalLaunch(files: RetrieverFiles, rerankerPath: string): string[] {
  return [
    '--index_path', files.indexPath,
    '--corpus_path', files.corpusPath,
    '--retrieval_topk', '10',
    '--retriever_name', 'e5',
    '--retriever_model', files.modelDir,
    '--faiss_gpu',
    '--reranking_topk', '3',
    '--reranker_model', rerankerPath,
    '--reranker_batch_size', '32',
  ];
}

describe('serve with Search-R1\'s hierarchical (rerank) launch line (child process)', function () {
  this.timeout(120_000);
  let files: RetrieverFiles;
  let dir: string;
  let reranker: string;

  before(async function () {
    files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
    dir = await temporaryDir('serve-rerank');
    const { architecture } = await readManifest(files.modelDir);
    const tokens = await readVocabularyFile(path.join(files.modelDir, 'vocab.txt'));
    reranker = await writeRerankerCheckpoint(path.join(dir, 'ms-marco-MiniLM-L12-v2'), { architecture, tokens, weights: generateRerankerWeights(architecture, 5) });
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('serves with the flags unchanged: /retrieve answers 3 reranked {document, score} items of 10 retrieved, /rerank answers', async function () {
    const answers: unknown[] = [];
    const run = await serveOnce([...hierarchicalLaunch(files, reranker), '--data_dir', path.join(dir, 'data')], async (url) => {
      const post = async (route: string, body: unknown) =>
        (await fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json();
      answers.push(await post('/retrieve', { queries: ['pavia cathedral dome', 'iowa highway'], topk_retrieval: 10, topk_rerank: 3, return_scores: true }));
      answers.push(await post('/rerank', { queries: ['pavia'], documents: [[{ id: '0', contents: '"Pavia Cathedral"\nthe dome' }]], return_scores: true }));
    });
    assert.ok(run.ready?.ready, JSON.stringify(run.log.filter((line) => line.level >= 40)));
    const [retrieved, reranked] = answers as [{ result: { document: { id: string; contents: string }; score: number }[][] }, { result: unknown[][] }];
    assert.equal(retrieved.result.length, 2);
    for (const items of retrieved.result) {
      assert.equal(items.length, 3);
      assert.ok(items.every((item) => typeof item.document.contents === 'string' && item.score > 0 && item.score < 1));
      assert.ok(items[0]!.score >= items[1]!.score && items[1]!.score >= items[2]!.score);
    }
    assert.equal(reranked.result[0]!.length, 1);
    assert.ok(run.log.some((line) => line.msg === 'reranker loaded'));
  });

  for (const [name, model, pattern] of [
    ['a retriever model folder', () => files.modelDir, /is a retriever model folder \(retriever\.json\), not a reranker/],
    ['an embedding checkpoint (BertModel)', () => path.join(dir, 'embedding-checkpoint'), /a reranker must be a sequence classifier/],
  ] as const) {
    it(`refuses at start-up ${name} as --reranker_model, saying why`, async function () {
      if (name.startsWith('an embedding')) await writeCheckpoint(model(), files.modelDir, 3);
      const run = await serveOnce([...hierarchicalLaunch(files, model()), '--data_dir', path.join(dir, 'data')]);
      assert.equal(run.code, 1);
      const fatal = run.log.find((line) => line.level === FATAL);
      assert.match(fatal?.msg ?? '', pattern);
    });
  }

  it('refuses --reranking_topk above --retrieval_topk before loading anything', async function () {
    const run = await serveOnce([...hierarchicalLaunch(files, reranker), '--retrieval_topk', '2']);
    assert.notEqual(run.code, 0);
    assert.equal(run.info, undefined);
  });
});
