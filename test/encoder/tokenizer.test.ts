import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { isServiceError } from '../support/assert-service-error.js';
import { batchesByLength, batchesInInputOrder } from '../../src/encoder/length-batches.js';
import { padBatch, WordPieceTokenizer } from '../../src/encoder/tokenizer.js';
import { readVocabularyFile, writeTokenizerFiles } from '../../src/encoder/tokenizer-files.js';
import { deriveVocabulary } from '../../src/encoder/vocabulary.js';

const CORPUS = [
  'The Tragedy of Hamlet was written by Shakespeare.',
  'Shakespeare, the playwright: birth year 1564; the Globe theatre.',
  'Who wrote the query? The query was written in a year of note.',
];

describe('deriveVocabulary', () => {
  const vocabulary = deriveVocabulary(CORPUS, { size: 400 });
  const id = (token: string) => vocabulary.tokens.indexOf(token);

  it('lays out the specials as bert-base-uncased does', () => {
    assert.equal(vocabulary.tokens[0], '[PAD]');
    assert.equal(vocabulary.tokens[1], '[unused0]');
    assert.equal(vocabulary.tokens[99], '[unused98]');
    assert.deepEqual(vocabulary.tokens.slice(100, 104), ['[UNK]', '[CLS]', '[SEP]', '[MASK]']);
  });

  it('has exactly size tokens, no duplicates, padded with further [unusedN]', () => {
    assert.equal(vocabulary.tokens.length, 400);
    assert.equal(new Set(vocabulary.tokens).size, 400);
    assert.equal(vocabulary.tokens.at(-1)!.startsWith('[unused'), true);
    assert.ok(id('[unused99]') > 104);
  });

  it('holds every ASCII character and its ## form, lowercased, before the words', () => {
    for (const char of ['a', 'z', '0', '9', ',', ';']) {
      assert.ok(id(char) > 103 && id(char) < id('the'), char);
      assert.ok(id('##' + char) > 103 && id('##' + char) < id('the'), '##' + char);
    }
    assert.equal(id('A'), -1);
  });

  it('ranks whole words by frequency, ties alphabetically, lowercased with punctuation split off', () => {
    assert.equal(vocabulary.tokens[id('the')], 'the');
    const words = vocabulary.tokens.slice(id('the'), id('[unused99]'));
    assert.deepEqual(words.slice(0, 7), ['the', 'of', 'query', 'shakespeare', 'was', 'written', 'year']);
    assert.ok(!words.some((word) => /[A-Z.,:;]/.test(word)), words.join(' '));
  });

  it('counts the passages a token appears in; specials count everywhere', () => {
    assert.equal(vocabulary.documents, 3);
    assert.equal(vocabulary.documentFrequency[id('the')], 3);
    assert.equal(vocabulary.documentFrequency[id('shakespeare')], 2);
    assert.equal(vocabulary.documentFrequency[id('hamlet')], 1);
    assert.equal(vocabulary.documentFrequency[id('[SEP]')], 3);
    assert.equal(vocabulary.documentFrequency[id('[unused120]')], 3);
  });

  it('attributes out-of-vocabulary words to the character pieces they break into', () => {
    // 104 specials + 68 lowercase printable ASCII characters and their ## forms: no room for words.
    const small = deriveVocabulary(['xy xy', 'xy'], { size: 104 + 2 * 68 });
    assert.equal(small.tokens.includes('xy'), false);
    assert.equal(small.documentFrequency[small.tokens.indexOf('x')], 2);
    assert.equal(small.documentFrequency[small.tokens.indexOf('##y')], 2);
    assert.equal(small.documentFrequency[small.tokens.indexOf('q')], 0);
  });

  it('is deterministic', () => {
    const again = deriveVocabulary(CORPUS, { size: 400 });
    assert.deepEqual(again.tokens, vocabulary.tokens);
    assert.deepEqual(again.documentFrequency, vocabulary.documentFrequency);
  });

  it('rejects a size below the special block', () => {
    assert.throws(
      () => deriveVocabulary(CORPUS, { size: 50 }),
      isServiceError('bad_request', /at least 104/),
    );
  });
});

describe('WordPieceTokenizer on written tokenizer files', () => {
  let dir: string;
  let tokenizer: WordPieceTokenizer;
  const vocabulary = deriveVocabulary(CORPUS, { size: 400 });
  const id = (token: string) => vocabulary.tokens.indexOf(token);

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tokenizer-test-'));
    await writeTokenizerFiles(dir, vocabulary.tokens, { modelMaxLength: 512 });
    tokenizer = await WordPieceTokenizer.load(dir);
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('writes the four files of a Hugging Face BERT folder', async () => {
    const config = JSON.parse(await readFile(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    assert.equal(config.tokenizer_class, 'BertTokenizer');
    assert.equal(config.do_lower_case, true);
    assert.equal(config.model_max_length, 512);
    assert.equal(config.added_tokens_decoder['102'].content, '[SEP]');
    const specials = JSON.parse(await readFile(path.join(dir, 'special_tokens_map.json'), 'utf8'));
    assert.deepEqual(specials, {
      cls_token: '[CLS]',
      mask_token: '[MASK]',
      pad_token: '[PAD]',
      sep_token: '[SEP]',
      unk_token: '[UNK]',
    });
    const tokenizerJson = JSON.parse(await readFile(path.join(dir, 'tokenizer.json'), 'utf8'));
    assert.deepEqual(
      tokenizerJson.added_tokens.map((t: { id: number; special: boolean }) => [t.id, t.special]),
      [[0, true], [100, true], [101, true], [102, true], [103, true]],
    );
    assert.equal(tokenizerJson.model.vocab['shakespeare'], id('shakespeare'));
    assert.deepEqual(await readVocabularyFile(path.join(dir, 'vocab.txt')), vocabulary.tokens);
  });

  it('reads a literal [SEP] in the text as the special token 102, between the words around it', async () => {
    const ids = await tokenizer.tokenIds('query: who wrote hamlet [SEP] shakespeare birth year', 256);
    assert.deepEqual(tokenizer.tokensOf(ids), [
      '[CLS]', 'query', ':', 'who', 'wrote', 'hamlet', '[SEP]', 'shakespeare', 'birth', 'year', '[SEP]',
    ]);
    assert.equal(ids[6], 102);
    assert.deepEqual(ids, [101, id('query'), id(':'), id('who'), id('wrote'), id('hamlet'), 102,
      id('shakespeare'), id('birth'), id('year'), 102]);
  });

  it('lowercases and strips accents, breaks unknown words into ## pieces, [UNK] only without pieces', async () => {
    assert.deepEqual(await tokenizer.tokenIds('HÁMLET Shakespeare', 16), await tokenizer.tokenIds('hamlet shakespeare', 16));
    assert.deepEqual(tokenizer.tokensOf(await tokenizer.tokenIds('zebra', 16)), ['[CLS]', 'z', '##e', '##b', '##r', '##a', '[SEP]']);
    assert.deepEqual(tokenizer.tokensOf(await tokenizer.tokenIds('中 😀', 16)), ['[CLS]', '[UNK]', '[UNK]', '[SEP]']);
  });

  it('encodes the empty string as [CLS] [SEP]', async () => {
    assert.deepEqual(await tokenizer.tokenIds('', 16), [101, 102]);
  });

  it('truncates a long text to exactly max length, keeping [CLS] first, the head, and [SEP] last', async () => {
    const text = 'shakespeare wrote hamlet '.repeat(100);
    const full = await tokenizer.tokenIds(text, 10_000);
    assert.equal(full.length, 302);
    const truncated = await tokenizer.tokenIds(text, 32);
    assert.equal(truncated.length, 32);
    assert.equal(truncated[0], 101);
    assert.equal(truncated[31], 102);
    assert.deepEqual(truncated.slice(0, 31), full.slice(0, 31));
  });

  it('leaves a text of exactly max length as it is', async () => {
    const ids = await tokenizer.tokenIds('who wrote hamlet', 5);
    assert.deepEqual(ids, [101, id('who'), id('wrote'), id('hamlet'), 102]);
  });

  it('rejects a max length that cannot hold [CLS] and [SEP]', async () => {
    await assert.rejects(tokenizer.tokenIds('x', 1), isServiceError('bad_request', /at least 2/));
  });

  it('ignores padding and truncation settings in tokenizer.json, as HF Python\'s call-time arguments do', async () => {
    const configured = path.join(dir, 'configured');
    await writeTokenizerFiles(configured, vocabulary.tokens, { modelMaxLength: 512 });
    const file = path.join(configured, 'tokenizer.json');
    const json = JSON.parse(await readFile(file, 'utf8'));
    json.truncation = { direction: 'Right', max_length: 4, strategy: 'LongestFirst', stride: 0 };
    json.padding = { strategy: { Fixed: 16 }, direction: 'Right', pad_to_multiple_of: null, pad_id: 0, pad_type_id: 0, pad_token: '[PAD]' };
    await writeFile(file, JSON.stringify(json));
    const ids = await (await WordPieceTokenizer.load(configured)).tokenIds('who wrote hamlet shakespeare', 32);
    assert.deepEqual(ids, [101, id('who'), id('wrote'), id('hamlet'), id('shakespeare'), 102]);
  });

  it('fails with not_found for a folder without tokenizer.json', async () => {
    await assert.rejects(
      WordPieceTokenizer.load(path.join(dir, 'missing')),
      isServiceError('not_found', /tokenizer\.json/),
    );
  });
});

describe('padBatch', () => {
  it('pads to the longest row with the pad id and a zero mask, token types all zero', () => {
    const batch = padBatch([[101, 7, 102], [101, 102]], 0);
    assert.equal(batch.rows, 2);
    assert.equal(batch.sequenceLength, 3);
    assert.deepEqual(Array.from(batch.inputIds), [101n, 7n, 102n, 101n, 102n, 0n]);
    assert.deepEqual(Array.from(batch.attentionMask), [1n, 1n, 1n, 1n, 1n, 0n]);
    assert.deepEqual(Array.from(batch.tokenTypeIds), [0n, 0n, 0n, 0n, 0n, 0n]);
  });
});

describe('length batching', () => {
  const lengths = [30, 5, 12, 5, 40, 7, 30, 12, 6, 200];
  const limits = { maxBatchSize: 3, maxBatchTokens: 64, runCostTokens: 8 };
  const planCost = (batches: number[][], of: readonly number[], runCost: number) =>
    batches.reduce((sum, batch) => sum + runCost + batch.length * Math.max(...batch.map((index) => of[index]!)), 0);

  it('groups similar lengths, shortest first, each batch within both limits, every input once', () => {
    const batches = batchesByLength(lengths, limits);
    assert.deepEqual(batches, [[1, 3, 8], [5, 2, 7], [0, 6], [4], [9]]);
    for (const batch of batches) {
      const padded = Math.max(...batch.map((index) => lengths[index]));
      assert.ok(batch.length <= 3 && (batch.length === 1 || batch.length * padded <= 64));
    }
  });

  it('splits off a long row when the padding saved outweighs the cost of one more run', () => {
    const mixed = [10, 10, 30, 10, 10];
    // One run: 8 + 5 × 30 = 158 tokens; two: (8 + 4 × 10) + (8 + 30) = 86.
    assert.deepEqual(batchesByLength(mixed, { maxBatchSize: 32, maxBatchTokens: 16_384, runCostTokens: 8 }), [[0, 1, 3, 4], [2]]);
    // At 100 tokens a run: one is 250, two are 270.
    assert.deepEqual(batchesByLength(mixed, { maxBatchSize: 32, maxBatchTokens: 16_384, runCostTokens: 100 }), [[0, 1, 3, 4, 2]]);
  });

  it('finds the cheapest of all ways to cut the sorted inputs into runs', () => {
    const rng = xoroshiro128plus(7);
    for (let trial = 0; trial < 40; trial++) {
      const of = Array.from({ length: uniformInt(rng, 1, 9) }, () => uniformInt(rng, 2, 40));
      const trialLimits = { maxBatchSize: uniformInt(rng, 1, 5), maxBatchTokens: uniformInt(rng, 40, 120), runCostTokens: uniformInt(rng, 0, 30) };
      const sorted = of.map((_, index) => index).sort((a, b) => of[a]! - of[b]! || a - b);
      // Every subset of the n - 1 gaps between sorted neighbours is one way to cut.
      let cheapest = Infinity;
      for (let cuts = 0; cuts < 2 ** (sorted.length - 1); cuts++) {
        const runs: number[][] = [[sorted[0]!]];
        for (let i = 1; i < sorted.length; i++) {
          if (cuts & (1 << (i - 1))) runs.push([]);
          runs.at(-1)!.push(sorted[i]!);
        }
        const allowed = runs.every(
          (run) => run.length <= trialLimits.maxBatchSize && (run.length === 1 || run.length * Math.max(...run.map((index) => of[index]!)) <= trialLimits.maxBatchTokens),
        );
        if (allowed) cheapest = Math.min(cheapest, planCost(runs, of, trialLimits.runCostTokens));
      }
      const plan = batchesByLength(of, trialLimits);
      assert.deepEqual(plan.flat().sort((a, b) => a - b), of.map((_, index) => index), `trial ${trial}: every input once`);
      assert.equal(planCost(plan, of, trialLimits.runCostTokens), cheapest, `trial ${trial}: ${JSON.stringify({ of, trialLimits })}`);
    }
  });

  it('keeps input order when not grouping by length', () => {
    assert.deepEqual(batchesInInputOrder(lengths, limits), [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]);
  });

  it('plans nothing for no inputs', () => {
    assert.deepEqual(batchesByLength([], limits), []);
  });
});
