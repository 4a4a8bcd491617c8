import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { AddedToken, bertNormalizer, bertPreTokenizer, templateProcessing, Tokenizer, WordPiece } from 'tokenizers';
import { readVocabularyFile } from '../../../src/encoder/tokenizer-files.js';
import { SPECIAL_TOKENS } from '../../../src/encoder/vocabulary.js';
import { repoRoot } from '../../support/sample-data.js';

/** Source folder of the fixture (tests run from dist/, the fixture is not compiled). */
export const FIXTURE_DIR = path.join(repoRoot, 'test', 'encoder', 'hf-reference');

/** One input and the ids Hugging Face's Rust tokenizer gives it, truncated to `maxLength`. */
export interface ReferenceCase {
  text: string;
  maxLength: number;
  ids: number[];
}

export interface ReferenceFixture {
  /** The npm package and version that produced the ids. */
  reference: string;
  tokens: string[];
  cases: ReferenceCase[];
}

export async function readReferenceFixture(): Promise<ReferenceFixture> {
  const { reference, cases } = JSON.parse(await readFile(path.join(FIXTURE_DIR, 'cases.json'), 'utf8')) as Omit<ReferenceFixture, 'tokens'>;
  return { reference, cases, tokens: await readVocabularyFile(path.join(FIXTURE_DIR, 'vocab.txt')) };
}

/**
 * bert-base-uncased's tokenizer, assembled from the Rust library's own components rather than read
 * from a tokenizer.json we write, so a fixture made with it checks the file we write as well.
 */
export function referenceTokenizer(tokens: readonly string[]): Tokenizer {
  const vocab = Object.fromEntries(tokens.map((token, id) => [token, id]));
  const tokenizer = new Tokenizer(WordPiece.init(vocab, { unkToken: '[UNK]', continuingSubwordPrefix: '##', maxInputCharsPerWord: 100 }));
  tokenizer.setNormalizer(bertNormalizer({ cleanText: true, handleChineseChars: true, stripAccents: true, lowercase: true }));
  tokenizer.setPreTokenizer(bertPreTokenizer());
  tokenizer.setPostProcessor(
    templateProcessing('[CLS] $A [SEP]', '[CLS] $A [SEP] $B:1 [SEP]:1', [['[CLS]', vocab['[CLS]']!], ['[SEP]', vocab['[SEP]']!]]),
  );
  tokenizer.addAddedTokens(SPECIAL_TOKENS.map((token) => new AddedToken(token, true, { normalized: false })));
  return tokenizer;
}
