import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { TruncationStrategy } from 'tokenizers';
import { bertFeeds } from '../../src/encoder/onnx-encoder.js';
import { makeModel } from '../../src/encoder/make-model.js';
import type { RerankerManifest } from '../../src/encoder/manifest.js';
import { OnnxCrossEncoder } from '../../src/encoder/onnx-cross-encoder.js';
import { presetArchitecture, PRESETS } from '../../src/encoder/presets.js';
import { padBatch, PairTokenizer } from '../../src/encoder/tokenizer.js';
import { WorkerCrossEncoder } from '../../src/encoder/worker-cross-encoder.js';
import { isServiceError } from '../support/assert-service-error.js';
import { writeRerankerCheckpoint } from '../support/reranker-fixtures.js';
import { generateRerankerWeights, type BertWeights } from '../../src/encoder/weights.js';
import { SAMPLE_CORPUS } from '../support/sample-data.js';
import { readReferenceFixture, referenceTokenizer } from './hf-reference/fixture.js';
import { referenceClassifierLogit } from './reference-bert.js';

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

async function samplePassages(count: number): Promise<string[]> {
  const lines = (await readFile(SAMPLE_CORPUS, 'utf8')).split('\n').filter((line) => line.trim() !== '');
  return lines.slice(0, count).map((line) => (JSON.parse(line) as { contents: string }).contents);
}

describe('cross-encoder (reranker) from a BertForSequenceClassification checkpoint, real ONNX Runtime', function () {
  this.timeout(60_000);
  let dir: string;
  let tokens: string[];
  let weights: BertWeights;
  let modelDir: string;
  let manifest: RerankerManifest;
  const architecture = () => manifest.architecture;

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cross-encoder-'));
    tokens = (await readReferenceFixture()).tokens;
    const arch = presetArchitecture(PRESETS.tiny, tokens.length);
    weights = generateRerankerWeights(arch, 515);
    const checkpoint = await writeRerankerCheckpoint(path.join(dir, 'checkpoint'), { architecture: arch, tokens, weights });
    modelDir = path.join(dir, 'model');
    manifest = await makeModel({ checkpointDir: checkpoint, outDir: modelDir, reranker: true, fp16: true, int8: 8 });
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('writes reranker.json: 512-token pairs, sigmoid scores, the logits output and the three graphs', function () {
    assert.equal(manifest.format, 'agentic-retriever/reranker-1');
    assert.equal(manifest.maxLength, 512);
    assert.equal(manifest.activation, 'sigmoid');
    assert.deepEqual(manifest.outputs, { logits: 'logits' });
    assert.deepEqual(manifest.files, { fp32: 'model.onnx', fp16: 'model.fp16.onnx', int8: 'model.int8.onnx' });
    assert.equal(manifest.provenance.source, 'checkpoint');
  });

  describe('pair tokenization against Hugging Face\'s Rust tokenizer (longest_first at 512)', function () {
    let ours: PairTokenizer;
    const pairs: [string, string][] = [];

    before(async function () {
      ours = await PairTokenizer.load(modelDir, manifest.maxLength);
      const passages = await samplePassages(40);
      const long = passages.slice(0, 8).join(' ');
      pairs.push(
        ['who wrote hamlet?', passages[0]!],
        ['', passages[1]!],
        ['query with [SEP] inside', ''],
        ['short query', long],
        [long, 'short passage'],
        [long, passages.slice(8, 16).join(' ')],
        [passages.slice(16, 19).join(' '), passages.slice(19, 21).join(' ')],
        ...passages.slice(21, 40).map((passage, i): [string, string] => [`question ${i} ΑΣ 𠀀`, passage]),
      );
    });

    it('gives the ids and token types of the reference tokenizer, truncated pairs included', async function () {
      const reference = referenceTokenizer(tokens);
      reference.setTruncation(512, { strategy: TruncationStrategy.LongestFirst });
      const expected = await Promise.all(pairs.map(async ([query, passage]) => reference.encode(query, passage)));
      const got = await ours.pairsOf(pairs);
      got.forEach((pair, i) => {
        assert.deepEqual(pair.ids, expected[i]!.getIds(), `pair ${i}`);
        assert.deepEqual(pair.typeIds, expected[i]!.getTypeIds(), `pair ${i}`);
      });
      assert.ok(got.filter((pair) => pair.ids.length === 512).length >= 3, 'the fixture truncates some pairs');
    });

    it('cuts the longer side first: a short query stays whole, two long sides split 254/255 after the 3 specials', async function () {
      const [shortQuery, longQuery, bothLong] = await ours.pairsOf([pairs[3]!, pairs[4]!, pairs[5]!]);
      const segments = (pair: { typeIds: number[] }) => [pair.typeIds.filter((t) => t === 0).length, pair.typeIds.filter((t) => t === 1).length];
      const queryTokens = (await ours.pairsOf([['short query', '']]))[0]!.ids.length - 3;
      assert.deepEqual(segments(shortQuery!), [queryTokens + 2, 512 - queryTokens - 2]);
      assert.equal(longQuery!.ids.length, 512);
      assert.equal(segments(longQuery!)[1], (await ours.pairsOf([['', 'short passage']]))[0]!.ids.length - 2);
      assert.deepEqual(segments(bothLong!), [254 + 2, 255 + 1]);
      assert.deepEqual([shortQuery!.ids[0], shortQuery!.ids.at(-1)], [101, 102]);
    });
  });

  describe('the graph against the TypeScript reference forward pass', function () {
    const sequences = async () => {
      const tokenizer = await PairTokenizer.load(modelDir, 64);
      const passages = await samplePassages(4);
      return tokenizer.pairsOf(passages.map((passage, i): [string, string] => [['who', 'what year was it', 'a b c d e f', 'hamlet'][i]!, passage]));
    };

    for (const [precision, file, tolerance] of [
      ['fp32', 'model.onnx', 1e-4],
      ['fp16', 'model.fp16.onnx', 0.05],
    ] as const) {
      it(`${precision}: logits of a padded batch of pairs equal the reference within ${tolerance}`, async function () {
        const pairs = await sequences();
        const session = await ort.InferenceSession.create(path.join(modelDir, file), { intraOpNumThreads: 1 });
        try {
          const batch = padBatch(pairs.map((p) => p.ids), 0, pairs.map((p) => p.typeIds));
          const out = (await session.run(bertFeeds(batch, session.inputNames)))['logits']!;
          assert.deepEqual(out.dims, [pairs.length, 1]);
          const logits = out.data as Float32Array;
          const expected = pairs.map((p) => referenceClassifierLogit(architecture(), weights, p.ids, p.typeIds));
          const spread = Math.max(...expected) - Math.min(...expected);
          assert.ok(spread > 0.02, `the fixture's logits spread (${spread}), far beyond the tolerance`);
          const worst = Math.max(...expected.map((e, i) => Math.abs(e - logits[i]!)));
          assert.ok(worst <= tolerance, `max abs logit difference ${worst}`);
        } finally {
          await session.release();
        }
      });
    }

    it('OnnxCrossEncoder.score answers sigmoid(logit) per pair in input order, whatever the batching', async function () {
      const passages = await samplePassages(7);
      const texts = passages.map((passage, i): [string, string] => [`query ${i % 3}`, passage]);
      const encoder = await OnnxCrossEncoder.load(modelDir, { batchLimits: { maxBatchSize: 3 } });
      try {
        const scores = await encoder.score(texts);
        const tokenized = await (await PairTokenizer.load(modelDir, 512)).pairsOf(texts);
        const expected = tokenized.map((p) => sigmoid(referenceClassifierLogit(architecture(), weights, p.ids, p.typeIds)));
        assert.equal(scores.length, 7);
        expected.forEach((value, i) => assert.ok(Math.abs(value - scores[i]!) < 3e-5, `pair ${i}: ${scores[i]} vs ${value}`));
      } finally {
        await encoder.close();
      }
    });

    it('int8 (opt-in) scores within 0.05 of fp32; the worker thread answers as the encoder in this thread does', async function () {
      const passages = await samplePassages(10);
      const texts = passages.map((passage): [string, string] => ['who was the king', passage]);
      const fp32 = await WorkerCrossEncoder.load(modelDir, { device: 'cpu' });
      const int8 = await WorkerCrossEncoder.load(modelDir, { device: 'cpu', precision: 'int8' });
      const local = await OnnxCrossEncoder.load(modelDir);
      try {
        assert.equal(int8.modelFile, 'model.int8.onnx');
        const [a, b, c] = await Promise.all([fp32.score(texts), int8.score(texts), local.score(texts)]);
        assert.deepEqual(a, c);
        a.forEach((score, i) => assert.ok(Math.abs(score - b[i]!) < 0.05, `pair ${i}: ${score} vs ${b[i]}`));
        assert.deepEqual(await fp32.score([]), new Float32Array(0));
      } finally {
        await Promise.all([fp32.close(), int8.close(), local.close()]);
      }
    });
  });

  it('--device cuda where CUDA cannot load (no CUDA provider here, nothing mocked): one warning, then the fp32 graph on CPU; --strict_device refuses', async function () {
    const warnings: string[] = [];
    const fallback = await WorkerCrossEncoder.load(modelDir, { device: 'cuda', warn: (message) => warnings.push(message) });
    try {
      assert.deepEqual([fallback.provider, fallback.modelFile], ['cpu', 'model.onnx']);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /CUDA execution provider unavailable/);
    } finally {
      await fallback.close();
    }
    await assert.rejects(WorkerCrossEncoder.load(modelDir, { device: 'cuda', strict: true }), isServiceError('internal', /CUDA was demanded \(strict\)/));
  });

  describe('refuses what is not a one-label sequence classifier', function () {
    const refused = async (name: string, configChanges: Record<string, unknown>, pattern: RegExp) => {
      const arch = architecture();
      const checkpoint = await writeRerankerCheckpoint(path.join(dir, name), { architecture: arch, tokens, weights, configChanges });
      await assert.rejects(makeModel({ checkpointDir: checkpoint, outDir: path.join(dir, `${name}-model`), reranker: true }), isServiceError('bad_request', pattern));
    };

    it('a BertModel (an embedding checkpoint)', () => refused('plain', { architectures: ['BertModel'] }, /must be a sequence classifier/));
    it('two labels', () => refused('two-labels', { id2label: { 0: 'no', 1: 'yes' } }, /one label \(num_labels 1\), this classifier has 2/));
    it('num_labels 3', () => refused('three-labels', { num_labels: 3 }, /this classifier has 3/));
    it('an activation CrossEncoder would not apply', () =>
      refused('softmax', { sentence_transformers: { activation_fn: 'torch.nn.modules.activation.Softmax' } }, /score activation/));
    it('a tokenizer with more tokens than the model has embeddings', async () => {
      const arch = { ...architecture(), vocabSize: 1000 };
      const small = generateRerankerWeights(arch, 1);
      const checkpoint = await writeRerankerCheckpoint(path.join(dir, 'vocab'), { architecture: arch, tokens, weights: small });
      await assert.rejects(
        makeModel({ checkpointDir: checkpoint, outDir: path.join(dir, 'vocab-model'), reranker: true }),
        isServiceError('bad_request', new RegExp(`tokenizer has ${tokens.length} tokens but the model only 1000 embeddings`)),
      );
    });
    it('keeps an Identity activation named by the config (sentence-transformers ≥ 4 and its older key)', async () => {
      for (const [name, changes] of [
        ['identity-v4', { sentence_transformers: { activation_fn: 'torch.nn.modules.linear.Identity' } }],
        ['identity-v3', { sbert_ce_default_activation_function: 'torch.nn.modules.linear.Identity' }],
      ] as const) {
        const checkpoint = await writeRerankerCheckpoint(path.join(dir, name), { architecture: architecture(), tokens, weights, configChanges: changes });
        const made = await makeModel({ checkpointDir: checkpoint, outDir: path.join(dir, `${name}-model`), reranker: true });
        assert.equal(made.activation, 'identity', name);
      }
    });
  });
});
