/**
 * Writes the reference fixture that hf-reference.test.ts checks our tokenizer against:
 * `vocab.txt`, a vocabulary derived from the wiki18 sample plus the scripts the edge cases use,
 * and `cases.json`, a few hundred edge-case strings with the ids Hugging Face's Rust tokenizer
 * (npm `tokenizers`, the core under HF Python's fast tokenizers) gives them at a max length.
 * The reference tokenizer is assembled here from its parts with bert-base-uncased's settings,
 * not read from our tokenizer.json, so the fixture checks the file we write as well.
 *
 *   npm run build && node dist/test/encoder/hf-reference/generate.js
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { writeVocabularyFile } from '../../../src/encoder/tokenizer-files.js';
import { deriveVocabulary } from '../../../src/encoder/vocabulary.js';
import { repoRoot, SAMPLE_CORPUS } from '../../support/sample-data.js';
import { FIXTURE_DIR, referenceTokenizer, type ReferenceCase } from './fixture.js';

const SEED = 20261201;
const VOCABULARY_SIZE = 6000;
const RANDOM_CASES = 300;
const GREEK_LETTERS = [...'αβγδεζηθικλμνξοπρσςτυφχψω'].join(' ');

/** Fragments grouped by what they exercise; random cases join a few of them. */
const FRAGMENTS = {
  greekSigma: ['Σ', 'σ', 'ς', 'ΑΣ', 'ΒΣ', 'ΟΔΥΣΣΕΥΣ', 'ΣΊΣΥΦΟΣ', 'Σίσυφος', 'ΛΌΓΟΣ', 'λόγος', 'ΑΣ.', 'ΑΣ-ΒΣ', 'ΑΣΑ', "ΑΣ'"],
  astralCjk: ['𠀀', '𠀁', '𠀀𠀁', '𪚥', '𪜀', '𫝀', '𫠠', '𬺰', '丽', '𪘀', '𰀀', '𠀀a𠀁', 'x𪚥y'],
  bmpCjk: ['中', '文', '日本語', '㐀', '鿿', '豈', 'ひらがな', 'カタカナ', 'ｶﾀｶﾅ', '한국어', '中a文'],
  unassigned: ['\u0378', '\u0380', '\u05ff', '\u2065', '\ufffe', '\u{1ffff}', '\u{10ffff}', '\ue000', '\u{f0000}', 'a\u0378b'],
  control: ['\u0000', '\u0001', '\u0007', '\u001f', '\u007f', '\u0080', '\u0085', '\u009f', '\t', '\n', '\r', '\u000b', '\u000c', '\u00ad', '\u200e', '\u2028', '\u2029', '\u061c', '\u{e0001}', 'a\u0000b'],
  zeroWidth: ['\u200b', '\u200c', '\u200d', '\u2060', '\ufeff', '\u180e', 'zero\u200bwidth', 'join\u200dme'],
  spaces: [' ', '  ', '\u00a0', '\u3000', '\u2003', '\u1680', '\u202f', ' \t '],
  accents: ['café', 'cafe\u0301', 'Å', 'A\u030a', 'naïve', 'Ångström', 'İstanbul', 'ǅ', 'ß', 'ẞ', 'ﬁsh', 'Ⅻ', 'ñ', 'Œuvre', 'Đ', 'ø', 'ł', '\u0301', 'a\u0301\u0302\u0303', 'ᾼ', 'ΐ', 'Ǆ', 'Ελλάδα', 'Москва́'],
  punctuation: ['.', ',', '?', '!', '¿', '—', '–', '«', '»', '"', "'", '$', '^', '`', '~', '|', '…', '·', '•', '€', '©', '%', '(', ')', '[', ']', '{', '}', '/', '\\', '@', '#', '&', '*', '、', '。'],
  specials: ['[SEP]', '[CLS]', '[MASK]', '[UNK]', '[PAD]', '[sep]', '[Sep]', '[SEP', 'SEP]', '[ SEP ]', 'a[SEP]b', '[SEP][SEP]'],
  symbols: ['😀', '👍🏽', '🇫🇷', '👨‍👩‍👧', '∑', '√', '½', '²', '①', 'x²', '𝐀𝐁', 'Ⓐ'],
  words: ['Shakespeare', 'Hamlet', 'the', 'OF', 'playwright', '1564', 'Paris', 'Who', 'query:', 'passage:', 'wrote', 'unbelievably', 'x1y2', "don't", 'e-mail', 'U.S.A.'],
  longWords: ['a'.repeat(100), 'a'.repeat(101), 'é'.repeat(101), '😀'.repeat(60), '𝐀'.repeat(51), 'x'.repeat(99) + '𝐀', 'supercalifragilisticexpialidocious'],
} as const;

/** Inputs picked by hand: the two reported divergences first, then one of each kind. */
const HANDPICKED: readonly string[] = [
  'ΑΣ',
  '𠀀𠀁',
  '',
  ' ',
  '\u0000\u200b\ufeff',
  'ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΙΣΥΦΟΣ',
  'ὈΔΥΣΣΕΎΣ',
  'query: who wrote hamlet? [SEP] hamlet author',
  'question [SEP] query',
  '[SEP]',
  ' [SEP] ',
  'query: ΑΣ [SEP] 𠀀𠀁',
  'Who was the first Emperor of Rome? [SEP] Augustus first emperor',
  'passage: "Hamlet"\nThe Tragedy of Hamlet, Prince of Denmark, is a tragedy written by William Shakespeare.',
  'İstanbul İSTANBUL istanbul',
  'Ǆemal ǅemal ǆemal',
];

interface Draft {
  text: string;
  maxLength: number;
}

function drafts(passages: readonly string[]): Draft[] {
  const rng = xoroshiro128plus(SEED);
  const pick = <T>(items: readonly T[]): T => items[uniformInt(rng, 0, items.length - 1)]!;
  const groups = Object.values(FRAGMENTS);
  const separators = ['', ' ', ' ', ' ', '\n', '\u00a0'];
  const casing = (text: string) => [text, text.toUpperCase(), text.toLowerCase()][uniformInt(rng, 0, 2)]!;

  const random = Array.from({ length: RANDOM_CASES }, () => {
    let text = '';
    for (let parts = uniformInt(rng, 1, 8); parts > 0; parts--) text += pick(separators) + casing(pick(pick(groups)));
    return { text, maxLength: pick([8, 32, 256]) };
  });
  const everyFragment = groups.flat().map((text) => ({ text, maxLength: 256 }));
  const questionQuery = Array.from({ length: 20 }, () => ({
    text: `query: ${pick(FRAGMENTS.words)} ${pick(pick(groups))} ${pick(FRAGMENTS.words)}? [SEP] ${pick(pick(groups))} ${pick(FRAGMENTS.words)}`,
    maxLength: 256,
  }));
  // Whole passages at the index's lengths, including joined ones long enough to truncate.
  const truncation = Array.from({ length: 24 }, (_, i) => ({
    text: 'passage: ' + Array.from({ length: 1 + (i % 4) }, () => pick(passages)).join(' '),
    maxLength: pick([64, 256, 512]),
  }));
  const edges = [2, 3, 4, 5].map((maxLength) => ({ text: 'who wrote hamlet ΑΣ 𠀀𠀁', maxLength }));
  return [...HANDPICKED.map((text) => ({ text, maxLength: 256 })), ...everyFragment, ...questionQuery, ...truncation, ...edges, ...random];
}

async function main(): Promise<void> {
  const passages = (await readFile(SAMPLE_CORPUS, 'utf8'))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => (JSON.parse(line) as { contents: string }).contents);
  // The Greek letters, σ and ς included, alone: "ΑΣ" must split into α ##σ, as in bert-base-uncased.
  const vocabulary = deriveVocabulary([...passages, GREEK_LETTERS], { size: VOCABULARY_SIZE });
  const tokenizer = referenceTokenizer(vocabulary.tokens);

  const cases: ReferenceCase[] = [];
  for (const { text, maxLength } of drafts(passages)) {
    tokenizer.setTruncation(maxLength);
    cases.push({ text, maxLength, ids: (await tokenizer.encode(text)).getIds() });
  }
  await writeVocabularyFile(path.join(FIXTURE_DIR, 'vocab.txt'), vocabulary.tokens);
  await writeFile(
    path.join(FIXTURE_DIR, 'cases.json'),
    `{"reference":"tokenizers@0.23.2","cases":[\n${cases.map((c) => JSON.stringify(c)).join(',\n')}\n]}\n`,
  );
  console.log(`${cases.length} cases written to ${path.relative(repoRoot, FIXTURE_DIR)}`);
}

await main();
