import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { FP16_MODEL_FILE, FP32_MODEL_FILE, makeModel } from '../../src/encoder/make-model.js';
import { bertConfigJson } from '../../src/encoder/hf-checkpoint.js';
import { readManifest } from '../../src/encoder/manifest.js';
import { PRESETS, presetArchitecture } from '../../src/encoder/presets.js';
import { writeSafetensors } from '../../src/encoder/safetensors.js';
import { readVocabularyFile, writeTokenizerFiles } from '../../src/encoder/tokenizer-files.js';
import { bertFeeds } from '../../src/encoder/onnx-encoder.js';
import { padBatch, WordPieceTokenizer } from '../../src/encoder/tokenizer.js';
import { deriveVocabulary } from '../../src/encoder/vocabulary.js';
import { generateBertWeights, type BertWeights } from '../../src/encoder/weights.js';
import { isServiceError } from '../support/assert-service-error.js';
import { SAMPLE_CORPUS } from '../support/sample-data.js';
import { DEMO_CORPUS_PATH } from '../../src/project-files.js';

const TOKENIZER_FILES = ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt'];

async function embed(modelFile: string, ids: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(modelFile, { intraOpNumThreads: 1 });
  const out = await session.run(bertFeeds(padBatch([ids], 0), session.inputNames));
  await session.release();
  return out['sentence_embedding']!.data as Float32Array;
}

describe('makeModel: model folders from presets and Hugging Face checkpoints', function () {
  let tmp: string;
  let passages: string[];

  before(async function () {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'make-model-'));
    const lines = (await readFile(SAMPLE_CORPUS, 'utf8')).trim().split('\n');
    passages = lines.slice(0, 100).map((line) => (JSON.parse(line) as { contents: string }).contents);
  });

  after(async function () {
    await rm(tmp, { recursive: true, force: true });
  });

  /** A tevatron-style checkpoint folder: config, weights, tokenizer files and trainer leftovers. */
  async function checkpoint(
    name: string,
    options: { tokenizer: 'full' | 'vocab-only'; drop?: string; extraTokens?: number; vocabulary?: (tokens: string[]) => string[] },
  ) {
    const dir = path.join(tmp, name);
    await mkdir(dir, { recursive: true });
    const tokens = deriveVocabulary(passages, { size: 2000 }).tokens;
    const arch = presetArchitecture(PRESETS.tiny, tokens.length - (options.extraTokens ?? 0));
    const weights: BertWeights = generateBertWeights(arch, 99);
    if (options.drop) weights.delete(options.drop);
    await writeFile(path.join(dir, 'config.json'), JSON.stringify(bertConfigJson(arch)));
    await writeSafetensors(path.join(dir, 'model.safetensors'), weights, 'F16', { format: 'pt' });
    await writeFile(path.join(dir, 'trainer_state.json'), '{}');
    if (options.tokenizer === 'full') {
      await writeTokenizerFiles(dir, tokens, { modelMaxLength: 512 });
    } else {
      const listed = options.vocabulary ? options.vocabulary(tokens) : tokens;
      await writeFile(path.join(dir, 'vocab.txt'), listed.join('\n') + '\n');
    }
    return { dir, arch, tokens };
  }

  describe('generated presets', function () {
    it('writes a complete tiny model folder with a trimmed corpus vocabulary and a filled-in manifest', async function () {
      const outDir = path.join(tmp, 'models', 'tiny', '1');
      const manifest = await makeModel({ outDir, preset: 'tiny', seed: 5, vocabularyCorpus: SAMPLE_CORPUS });
      assert.deepEqual((await readdir(outDir)).sort(), [FP32_MODEL_FILE, 'retriever.json', ...TOKENIZER_FILES].sort());
      assert.deepEqual(await readManifest(outDir), manifest);
      assert.equal(manifest.name, 'tiny');
      assert.equal(manifest.dimension, 32);
      assert.deepEqual(manifest.files, { fp32: FP32_MODEL_FILE });
      assert.deepEqual(manifest.outputs, { embedding: 'sentence_embedding', lastHiddenState: 'last_hidden_state' });
      assert.equal(manifest.queryPrefix, 'query: ');
      assert.equal(manifest.maxQueryLength, 256);
      assert.deepEqual({ ...manifest.provenance, createdAt: undefined }, {
        source: 'preset',
        preset: 'tiny',
        seed: 5,
        vocabularyFrom: SAMPLE_CORPUS,
        createdAt: undefined,
      });
      const tokens = await readVocabularyFile(path.join(outDir, 'vocab.txt'));
      assert.equal(manifest.architecture.vocabSize, tokens.length);
      assert.ok(tokens.length <= PRESETS.tiny.vocabulary.size);
      assert.equal(tokens[102], '[SEP]');
      assert.doesNotMatch(tokens.at(-1)!, /^\[unused\d+\]$/);
      assert.deepEqual(await readdir(path.dirname(outDir)), ['1'], 'no staging folder is left beside the model');
    });

    it('is deterministic for a seed: same seed, same model.onnx bytes; another seed, other bytes', async function () {
      const build = (name: string, seed: number) =>
        makeModel({ outDir: path.join(tmp, name), preset: 'tiny', seed, vocabularyCorpus: SAMPLE_CORPUS, vocabularyPassages: 200 }).then(
          () => readFile(path.join(tmp, name, FP32_MODEL_FILE)),
        );
      const [first, again, other] = [await build('seed-a', 11), await build('seed-b', 11), await build('seed-c', 12)];
      assert.ok(first.equals(again));
      assert.ok(!first.equals(other));
    });

    it('refuses an existing folder, and replaces it only when asked to overwrite', async function () {
      const outDir = path.join(tmp, 'existing');
      await mkdir(outDir);
      await writeFile(path.join(outDir, 'stale.txt'), 'old');
      const options = { outDir, preset: 'tiny' as const, vocabularyCorpus: SAMPLE_CORPUS, vocabularyPassages: 50 };
      await assert.rejects(makeModel(options), isServiceError('conflict', /already exists/));
      assert.deepEqual(await readdir(outDir), ['stale.txt']);
      await makeModel({ ...options, overwrite: true });
      assert.ok(!(await readdir(outDir)).includes('stale.txt'));
      assert.ok((await readdir(outDir)).includes('retriever.json'));
      assert.deepEqual((await readdir(tmp)).filter((name) => name.includes('partial')), []);
    });

    it('derives a preset\'s vocabulary from the bundled demo corpus when no vocabulary corpus is given', async function () {
      const implicit = path.join(tmp, 'default-vocabulary');
      const explicit = path.join(tmp, 'demo-vocabulary');
      const manifest = await makeModel({ outDir: implicit, preset: 'tiny', seed: 1 });
      await makeModel({ outDir: explicit, preset: 'tiny', seed: 1, vocabularyCorpus: DEMO_CORPUS_PATH });
      assert.equal(manifest.provenance.source === 'preset' && manifest.provenance.vocabularyFrom, DEMO_CORPUS_PATH);
      const vocabulary = await readVocabularyFile(path.join(implicit, 'vocab.txt'));
      assert.deepEqual(vocabulary, await readVocabularyFile(path.join(explicit, 'vocab.txt')));
      assert.notDeepEqual(vocabulary, deriveVocabulary([], { size: PRESETS.tiny.vocabulary.size }).tokens);
    });

    it('refuses bad options with a clear error', async function () {
      const outDir = path.join(tmp, 'never');
      await assert.rejects(
        makeModel({ outDir, preset: 'tiny', vocabularyCorpus: path.join(tmp, 'absent.jsonl') }),
        isServiceError('not_found', /absent\.jsonl not found/),
      );
      await assert.rejects(
        makeModel({ outDir, preset: 'huge' as 'tiny', vocabularyCorpus: SAMPLE_CORPUS }),
        isServiceError('bad_request', /unknown model preset "huge"/),
      );
      await assert.rejects(
        makeModel({ outDir, preset: 'tiny', checkpointDir: tmp }),
        isServiceError('bad_request', /either a preset or a checkpoint/),
      );
      await assert.rejects(readdir(outDir), { code: 'ENOENT' });
    });
  });

  describe('Hugging Face checkpoints', function () {
    it('converts an F16 checkpoint: its tokenizer files copied verbatim, fp16 graph beside fp32, provenance recorded', async function () {
      const { dir, tokens } = await checkpoint('checkpoint-500', { tokenizer: 'full' });
      const outDir = path.join(tmp, 'converted');
      const manifest = await makeModel({ outDir, checkpointDir: dir, fp16: true });
      assert.deepEqual(
        (await readdir(outDir)).sort(),
        [FP16_MODEL_FILE, FP32_MODEL_FILE, 'retriever.json', ...TOKENIZER_FILES].sort(),
      );
      for (const file of TOKENIZER_FILES) {
        assert.ok((await readFile(path.join(outDir, file))).equals(await readFile(path.join(dir, file))), file);
      }
      assert.equal(manifest.name, 'checkpoint-500');
      assert.deepEqual(manifest.files, { fp32: FP32_MODEL_FILE, fp16: FP16_MODEL_FILE });
      assert.equal(manifest.architecture.vocabSize, tokens.length);
      assert.equal(manifest.provenance.source, 'checkpoint');
      assert.equal(manifest.provenance.source === 'checkpoint' && manifest.provenance.weightsDtype, 'F16');
      assert.equal(manifest.provenance.source === 'checkpoint' && manifest.provenance.checkpointPath, dir);

      const ids = [101, 2000 - 1, 150, 700, 102];
      const full = await embed(path.join(outDir, FP32_MODEL_FILE), ids);
      const half = await embed(path.join(outDir, FP16_MODEL_FILE), ids);
      assert.equal(full.length, 32);
      assert.ok(full.every((v, i) => Math.abs(v - half[i]!) < 5e-3));
    });

    it('creates the folder and its files with the modes the umask allows (0755/0644 under 022), not 0700', async function () {
      const { dir } = await checkpoint('shared-checkpoint', { tokenizer: 'full' });
      const previous = process.umask(0o022);
      try {
        for (const [umask, dirMode, fileMode] of [[0o022, 0o755, 0o644], [0o027, 0o750, 0o640]] as const) {
          process.umask(umask);
          const outDir = path.join(tmp, `umask-${umask.toString(8)}`);
          await makeModel({ outDir, checkpointDir: dir });
          assert.equal((await stat(outDir)).mode & 0o777, dirMode, `folder under umask ${umask.toString(8)}`);
          for (const file of [FP32_MODEL_FILE, 'retriever.json']) {
            assert.equal((await stat(path.join(outDir, file))).mode & 0o777, fileMode, `${file} under umask ${umask.toString(8)}`);
          }
        }
      } finally {
        process.umask(previous);
      }
    });

    it('builds the tokenizer files from vocab.txt when the checkpoint has no tokenizer.json', async function () {
      const { dir } = await checkpoint('vocab-only', { tokenizer: 'vocab-only' });
      const outDir = path.join(tmp, 'from-vocab');
      await makeModel({ outDir, checkpointDir: dir, name: 'agentic-r' });
      assert.deepEqual((await readdir(outDir)).sort(), [FP32_MODEL_FILE, 'retriever.json', ...TOKENIZER_FILES].sort());
      assert.equal((await readManifest(outDir)).name, 'agentic-r');
      const tokenizer = await WordPieceTokenizer.load(outDir);
      const ids = await tokenizer.tokenIds('query: who founded [SEP] rome', 32);
      assert.equal(ids[0], 101);
      assert.equal(ids.at(-1), 102);
      assert.ok(ids.slice(1, -1).includes(102), 'the literal [SEP] is the special token');
    });

    it('refuses a tokenizer with more tokens than the model has embeddings', async function () {
      const { dir } = await checkpoint('short-embeddings', { tokenizer: 'full', extraTokens: 10 });
      await assert.rejects(
        makeModel({ outDir: path.join(tmp, 'short'), checkpointDir: dir }),
        isServiceError('bad_request', /tokenizer has \d+ tokens but the model only \d+ embeddings/),
      );
    });

    it('names the missing tensors of an incomplete checkpoint and creates no folder', async function () {
      const { dir } = await checkpoint('incomplete', { tokenizer: 'full', drop: 'encoder.layer.0.output.dense.bias' });
      const outDir = path.join(tmp, 'incomplete-model');
      await assert.rejects(
        makeModel({ outDir, checkpointDir: dir }),
        isServiceError('bad_request', /missing 1 BERT tensor\(s\): encoder\.layer\.0\.output\.dense\.bias/),
      );
      await assert.rejects(readdir(outDir), { code: 'ENOENT' });
    });

    it('removes its staging folder when the build fails midway', async function () {
      const { dir } = await checkpoint('no-mask-token', {
        tokenizer: 'vocab-only',
        vocabulary: (tokens) => tokens.map((token) => (token === '[MASK]' ? 'mask' : token)),
      });
      const parent = path.join(tmp, 'midway');
      await assert.rejects(
        makeModel({ outDir: path.join(parent, 'model'), checkpointDir: dir }),
        isServiceError('bad_request', /lacks the special token \[MASK\]/),
      );
      assert.deepEqual(await readdir(parent), []);
    });
  });
});
