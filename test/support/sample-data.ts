import { existsSync } from 'node:fs';
import path from 'node:path';
import { DEMO_CORPUS_PATH, PROJECT_ROOT } from '../../src/project-files.js';

/** Fails at once, naming the file, instead of letting every test that opens it fail its own way. */
export function requireFixture(file: string): string {
  if (!existsSync(file)) throw new Error(`test fixture ${file} is missing: it is part of the repository, restore it (git checkout -- ${path.relative(PROJECT_ROOT, file)})`);
  return file;
}

export const repoRoot = PROJECT_ROOT;
/** The first 1,000 real wiki18 passages (see test/data/README.md: copy it before opening a store on it). */
export const SAMPLE_CORPUS = requireFixture(path.join(PROJECT_ROOT, 'test', 'data', 'wiki18-sample-1k.jsonl'));
/** The demo corpus the project ships. */
export const DEMO_CORPUS = DEMO_CORPUS_PATH;
/** The compiled command line, as `node <CLI_PATH> serve …` runs it in child-process tests. */
export const CLI_PATH = path.join(PROJECT_ROOT, 'dist', 'src', 'cli.js');
