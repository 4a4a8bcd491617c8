import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The folder holding package.json and openapi.yaml, found by walking up from this module: the
 * same code runs from `src/` (tsx) and from `dist/src/` (compiled), at different depths.
 */
function findProjectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

export const PROJECT_ROOT = findProjectRoot();
export const OPENAPI_PATH = path.join(PROJECT_ROOT, 'openapi.yaml');
/** The bundled wiki18-format demo corpus: the demo's passages and the default vocabulary of generated models. */
export const DEMO_CORPUS_PATH = path.join(PROJECT_ROOT, 'demo', 'corpus.jsonl');

export interface ServicePackage {
  name: string;
  version: string;
}

export function servicePackage(): ServicePackage {
  const { name, version } = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as ServicePackage;
  return { name, version };
}
