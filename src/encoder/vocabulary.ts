import { bertNormalizer, bertPreTokenizer } from 'tokenizers';
import { badRequest } from '../errors.js';

/**
 * A WordPiece vocabulary in the bert-base-uncased layout, with how often each token's word
 * occurs across the passages it was derived from (for IDF-style weights).
 */
export interface Vocabulary {
  tokens: string[];
  /** `documentFrequency[i]`: passages containing token i (pieces approximate; specials count everywhere). */
  documentFrequency: Uint32Array;
  documents: number;
}

export const PAD_TOKEN = '[PAD]';
export const UNK_TOKEN = '[UNK]';
export const CLS_TOKEN = '[CLS]';
export const SEP_TOKEN = '[SEP]';
export const MASK_TOKEN = '[MASK]';
export const SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN] as const;
export const CONTINUING_SUBWORD_PREFIX = '##';

/** bert-base-uncased puts [unused0..98] between [PAD] and [UNK], so [SEP] is id 102. */
const LEADING_UNUSED = 99;
const LEADING_TOKENS: readonly string[] = [
  PAD_TOKEN,
  ...Array.from({ length: LEADING_UNUSED }, (_, i) => `[unused${i}]`),
  UNK_TOKEN,
  CLS_TOKEN,
  SEP_TOKEN,
  MASK_TOKEN,
];

/** Query text is not drawn from the corpus, so plain ASCII must always tokenize without [UNK]. */
const ASCII_ALPHABET = Array.from({ length: 126 - 33 + 1 }, (_, i) => String.fromCharCode(33 + i)).filter(
  (char) => char === char.toLowerCase(),
);

/** The `normalizer` and `pre_tokenizer` of a bert-base-uncased tokenizer.json. */
export const BERT_UNCASED_NORMALIZER = {
  type: 'BertNormalizer',
  clean_text: true,
  handle_chinese_chars: true,
  strip_accents: null,
  lowercase: true,
} as const;

const normalizer = bertNormalizer({
  cleanText: BERT_UNCASED_NORMALIZER.clean_text,
  handleChineseChars: BERT_UNCASED_NORMALIZER.handle_chinese_chars,
  // `strip_accents: null` in a tokenizer.json means: strip when lowercasing.
  stripAccents: BERT_UNCASED_NORMALIZER.lowercase,
  lowercase: BERT_UNCASED_NORMALIZER.lowercase,
});
const preTokenizer = bertPreTokenizer();

/** BERT basic tokenization: lowercase, strip accents, split on whitespace, punctuation and CJK. */
export function bertBasicWords(text: string): string[] {
  return preTokenizer.preTokenizeString(normalizer.normalizeString(text)).map(([word]) => word);
}

interface WordStats {
  count: number;
  documents: number;
}

/**
 * Derives a bert-base-uncased-shaped vocabulary from corpus passages: the specials at their BERT
 * ids, every character (and its `##` form) so that any word tokenizes without [UNK], then the
 * most frequent whole words, then `[unusedN]` padding up to `size`. Ties break alphabetically.
 */
export function deriveVocabulary(passages: Iterable<string>, options: { size: number }): Vocabulary {
  const { size } = options;
  if (!Number.isInteger(size) || size < LEADING_TOKENS.length) {
    throw badRequest(`vocabulary size must be an integer of at least ${LEADING_TOKENS.length}, got ${size}`);
  }

  const words = new Map<string, WordStats>();
  let documents = 0;
  for (const passage of passages) {
    documents += 1;
    const seen = new Set<string>();
    for (const word of bertBasicWords(passage)) {
      let stats = words.get(word);
      if (!stats) {
        stats = { count: 0, documents: 0 };
        words.set(word, stats);
      }
      stats.count += 1;
      if (!seen.has(word)) {
        seen.add(word);
        stats.documents += 1;
      }
    }
  }

  const tokens = [...LEADING_TOKENS];
  const alphabet = rankAlphabet(words);
  const alphabetBudget = Math.floor((size - tokens.length) / 2);
  const chosenCharacters = alphabet.slice(0, alphabetBudget).sort(byCodePoint);
  tokens.push(...chosenCharacters, ...chosenCharacters.map((char) => CONTINUING_SUBWORD_PREFIX + char));

  const present = new Set(tokens);
  const rankedWords = [...words.entries()]
    .filter(([word]) => !present.has(word))
    .sort(([a, sa], [b, sb]) => sb.count - sa.count || byCodePoint(a, b));
  for (const [word] of rankedWords) {
    if (tokens.length >= size) break;
    tokens.push(word);
    present.add(word);
  }
  for (let unused = LEADING_UNUSED; tokens.length < size; unused += 1) {
    tokens.push(`[unused${unused}]`);
  }

  return { tokens, documentFrequency: documentFrequencies(tokens, words, documents), documents };
}

/** ASCII first (queries need it), then the corpus's characters by frequency. */
function rankAlphabet(words: ReadonlyMap<string, WordStats>): string[] {
  const characterCounts = new Map<string, number>();
  for (const [word, { count }] of words) {
    for (const char of word) characterCounts.set(char, (characterCounts.get(char) ?? 0) + count);
  }
  const ascii = new Set(ASCII_ALPHABET);
  const corpusOnly = [...characterCounts.entries()]
    .filter(([char]) => !ascii.has(char))
    .sort(([a, ca], [b, cb]) => cb - ca || byCodePoint(a, b))
    .map(([char]) => char);
  return [...ASCII_ALPHABET, ...corpusOnly];
}

/**
 * Whole words get their exact passage count. A piece (a character) gets the summed counts of
 * the out-of-vocabulary words it spells, capped at `documents`: those are the words WordPiece
 * will break into it.
 */
function documentFrequencies(
  tokens: readonly string[],
  words: ReadonlyMap<string, WordStats>,
  documents: number,
): Uint32Array {
  const idOf = new Map(tokens.map((token, id) => [token, id]));
  const frequency = new Float64Array(tokens.length);
  for (const [word, stats] of words) {
    const wordId = idOf.get(word);
    if (wordId !== undefined) {
      frequency[wordId] += stats.documents;
      continue;
    }
    let position = 0;
    for (const char of word) {
      const pieceId = idOf.get(position === 0 ? char : CONTINUING_SUBWORD_PREFIX + char);
      if (pieceId !== undefined) frequency[pieceId] += stats.documents;
      position += 1;
    }
  }
  const result = new Uint32Array(tokens.length);
  tokens.forEach((token, id) => {
    result[id] = isPlaceholder(token) ? documents : Math.min(documents, frequency[id]);
  });
  return result;
}

function isPlaceholder(token: string): boolean {
  return token.startsWith('[') && token.endsWith(']') && token.length > 2;
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
