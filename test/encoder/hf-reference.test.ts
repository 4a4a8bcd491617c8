import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WordPieceTokenizer } from '../../src/encoder/tokenizer.js';
import { writeTokenizerFiles } from '../../src/encoder/tokenizer-files.js';
import { readReferenceFixture, type ReferenceFixture } from './hf-reference/fixture.js';

/**
 * Our tokenizer, on the tokenizer.json we write for the fixture's vocabulary, against the ids
 * Hugging Face's Rust tokenizer gave (test/encoder/hf-reference/generate.ts writes them).
 */
describe('WordPieceTokenizer against Hugging Face reference ids', () => {
  let dir: string;
  let fixture: ReferenceFixture;
  let tokenizer: WordPieceTokenizer;
  const id = (token: string) => fixture.tokens.indexOf(token);
  const reference = (text: string) => fixture.cases.find((c) => c.text === text)!.ids;

  before(async () => {
    fixture = await readReferenceFixture();
    dir = await mkdtemp(path.join(os.tmpdir(), 'hf-reference-'));
    await writeTokenizerFiles(dir, fixture.tokens, { modelMaxLength: 512 });
    tokenizer = await WordPieceTokenizer.load(dir);
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('has the reference ids of the two inputs transformers.js got wrong, and a vocabulary that tells them apart', () => {
    assert.equal(fixture.reference, 'tokenizers@0.23.2');
    assert.deepEqual([id('α'), id('##σ'), id('##ς')], [188, 362, 361]);
    // JavaScript's toLowerCase makes a word-final Σ into ς; HF lowercases each character alone.
    assert.deepEqual(reference('ΑΣ'), [101, 188, 362, 102]);
    // transformers.js tested CJK per UTF-16 unit, so two astral ideographs stayed one word.
    assert.deepEqual(reference('𠀀𠀁'), [101, 100, 100, 102]);
  });

  it('lowercases "ΑΣ" per character: α ##σ, not the final-sigma ##ς', async () => {
    const ids = await tokenizer.tokenIds('ΑΣ', 256);
    assert.deepEqual(ids, [101, 188, 362, 102]);
    assert.deepEqual(tokenizer.tokensOf(ids), ['[CLS]', 'α', '##σ', '[SEP]']);
  });

  it('splits astral CJK ideographs into one word each: "𠀀𠀁" is two [UNK]', async () => {
    assert.deepEqual(await tokenizer.tokenIds('𠀀𠀁', 256), [101, 100, 100, 102]);
  });

  it('reads [SEP] in "question [SEP] query" as the special id 102', async () => {
    const ids = await tokenizer.tokenIds('question [SEP] query', 256);
    assert.deepEqual(ids, [101, 3381, 102, 158, 318, 302, 315, 322, 102]);
    assert.deepEqual(tokenizer.tokensOf(ids), ['[CLS]', 'question', '[SEP]', 'q', '##u', '##e', '##r', '##y', '[SEP]']);
  });

  it('gives the reference ids for every case, truncated ones included', async () => {
    assert.equal(fixture.cases.length, 555);
    const truncated = fixture.cases.filter((c) => c.ids.length === c.maxLength && c.ids.at(-1) === 102);
    assert.ok(truncated.length >= 50, `${truncated.length} cases reach their max length`);
    const mismatches: string[] = [];
    for (const maxLength of new Set(fixture.cases.map((c) => c.maxLength))) {
      const cases = fixture.cases.filter((c) => c.maxLength === maxLength);
      const ours = await tokenizer.tokenIdsOf(cases.map((c) => c.text), maxLength);
      cases.forEach((c, i) => {
        if (JSON.stringify(ours[i]) !== JSON.stringify(c.ids)) {
          mismatches.push(`${JSON.stringify(c.text)} @${maxLength}: ours ${JSON.stringify(ours[i])}, HF ${JSON.stringify(c.ids)}`);
        }
      });
    }
    assert.deepEqual(mismatches, []);
  });
});
