import path from 'node:path';

/** The repository root (tests run from dist/test/…, three folders down). */
export const repoRoot = path.resolve(import.meta.dirname, '..', '..');
/** The first 1,000 real wiki18 passages, in shared/ beside the checkout (read-only: copy before opening a store on it). */
export const SAMPLE_CORPUS = path.resolve(repoRoot, '..', 'shared', 'data', 'wiki18-sample-1k.jsonl');
/** The demo corpus the project ships. */
export const DEMO_CORPUS = path.join(repoRoot, 'demo', 'corpus.jsonl');
/** The compiled command line, as `node <CLI_PATH> serve …` runs it in child-process tests. */
export const CLI_PATH = path.join(repoRoot, 'dist', 'src', 'cli.js');
