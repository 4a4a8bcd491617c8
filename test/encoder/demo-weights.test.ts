import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { demoBertWeights, lexicalWeights, SINK_DIMS } from '../../src/encoder/demo-weights.js';
import { makeModel } from '../../src/encoder/make-model.js';
import { buildBertOnnx } from '../../src/encoder/bert-graph.js';
import { bertFeeds, OnnxEncoder } from '../../src/encoder/onnx-encoder.js';
import { padBatch } from '../../src/encoder/tokenizer.js';
import { PRESETS, presetArchitecture } from '../../src/encoder/presets.js';
import { bertBasicWords, deriveVocabulary, type Vocabulary } from '../../src/encoder/vocabulary.js';
import { SAMPLE_CORPUS } from '../support/sample-data.js';

const PASSAGES = 60;

describe('demo preset: BERT weights that make an IDF-weighted lexical matcher', function () {
  let passages: string[];
  let vocabulary: Vocabulary;
  const idOf = (token: string) => vocabulary.tokens.indexOf(token);

  before(async function () {
    const lines = (await readFile(SAMPLE_CORPUS, 'utf8')).trim().split('\n');
    passages = lines.slice(0, PASSAGES).map((line) => (JSON.parse(line) as { contents: string }).contents);
    vocabulary = deriveVocabulary(passages, { size: 8000 });
  });

  it('weighs rare words fully and gives specials, punctuation, characters, prefixes and common words nothing', function () {
    const weights = lexicalWeights(vocabulary);
    const rare = vocabulary.tokens.findIndex((token, id) => /^[a-z]{4,}$/.test(token) && vocabulary.documentFrequency[id] === 1);
    assert.ok(rare > 0);
    assert.equal(weights[rare], 1);
    for (const token of ['[PAD]', '[CLS]', '[SEP]', '[UNK]', '[unused5]', '.', ',', 'e', '##e', 'the', 'of']) {
      assert.equal(weights[idOf(token)], 0, token);
    }
    const middling = vocabulary.tokens.findIndex((token, id) => /^[a-z]{4,}$/.test(token) && vocabulary.documentFrequency[id] === 5);
    assert.ok(weights[middling]! > 0 && weights[middling]! < 1, `weight ${weights[middling]}`);
  });

  it('the ONNX graph outputs exactly the normalised IDF-weighted sum of word directions', async function () {
    const arch = presetArchitecture(PRESETS.demo, vocabulary.tokens.length);
    const weights = demoBertWeights(arch, vocabulary, 3);
    const session = await ort.InferenceSession.create(buildBertOnnx(arch, weights), { intraOpNumThreads: 1 });
    const h = arch.hiddenSize;
    const lexicalDims = h - SINK_DIMS;
    const a = lexicalWeights(vocabulary);
    const words = weights.get('embeddings.word_embeddings.weight')!.data;
    const sentences = [
      ['[CLS]', 'evan', 'morris', 'was', 'a', 'lobbyist', '[SEP]'],
      ['[CLS]', 'the', 'cathedral', 'of', 'pavia', ',', 'cathedral', '[SEP]'],
    ];
    for (const sentence of sentences) {
      const ids = sentence.map(idOf);
      assert.ok(ids.every((id) => id >= 0), sentence.join(' '));
      const out = await session.run(bertFeeds(padBatch([ids], 0), session.inputNames));
      const bag = new Float64Array(h);
      for (const id of ids) {
        // A lexical row is a·u with ‖u‖ = √h; the token passes the layers unchanged.
        for (let d = 0; d < lexicalDims; d++) bag[d]! += words[id * h + d]!;
        assert.ok(Math.abs(Math.hypot(...words.subarray(id * h, id * h + lexicalDims)) - a[id]! * Math.sqrt(h)) < 1e-3);
      }
      const norm = Math.hypot(...bag);
      const embedding = out['sentence_embedding']!.data as Float32Array;
      const diff = Math.max(...embedding.map((v, d) => Math.abs(v - bag[d]! / norm)));
      assert.ok(diff < 1e-5, `diff ${diff}`);
      const hidden = out['last_hidden_state']!.data as Float32Array;
      assert.ok(hidden.every((v, i) => i % h < lexicalDims || v === 0), 'sink dims reach the output');
    }
    await session.release();
  });

  describe('retrieval over the first passages of the wiki18 sample', function () {
    let tmp: string;
    let encoder: OnnxEncoder;
    let passageVectors: Float32Array;

    before(async function () {
      tmp = await mkdtemp(path.join(os.tmpdir(), 'demo-weights-'));
      const modelDir = path.join(tmp, 'demo');
      await makeModel({ outDir: modelDir, preset: 'demo', vocabularyCorpus: SAMPLE_CORPUS, vocabularyPassages: PASSAGES });
      encoder = await OnnxEncoder.load(modelDir);
      passageVectors = await encoder.encodePassages(passages);
    });

    after(async function () {
      await encoder?.close();
      await rm(tmp, { recursive: true, force: true });
    });

    function ranking(query: Float32Array): number[] {
      const d = encoder.manifest.dimension;
      const scores = passages.map((_, row) => query.reduce((s, v, k) => s + v * passageVectors[row * d + k]!, 0));
      return scores.map((_, row) => row).sort((x, y) => scores[y]! - scores[x]!);
    }

    // wiki18 cuts articles into ~100-word passages, so a title names several rows: any of them is a hit.
    it("ranks first a passage of the article a title names, and every top hit shares a word with the query", async function () {
      const titles = passages.map((contents) => contents.slice(0, contents.indexOf('\n')).replaceAll('"', ''));
      const queries = await encoder.encodeQueries(titles.map((query) => ({ query })));
      const d = encoder.manifest.dimension;
      let firsts = 0;
      titles.forEach((title, row) => {
        const top = ranking(queries.subarray(row * d, (row + 1) * d))[0]!;
        if (titles[top] === title) firsts += 1;
        const passageWords = new Set(bertBasicWords(passages[top]!));
        assert.ok(
          bertBasicWords(title).some((word) => passageWords.has(word)),
          `"${title}" ranked "${titles[top]}" first, which shares none of its words`,
        );
      });
      assert.ok(firsts >= 0.9 * titles.length, `${firsts} of ${titles.length} titles found their article first`);
    });
  });
});
