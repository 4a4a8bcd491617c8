import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { readVocabularyFile } from '../../../src/encoder/tokenizer-files.js';
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
