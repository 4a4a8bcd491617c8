import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CorpusStore } from './corpus/corpus-store.js';
import { makeModel } from './encoder/make-model.js';
import { OnnxEncoder } from './encoder/onnx-encoder.js';
import { DEMO_CORPUS_PATH, PROJECT_ROOT } from './http/project-files.js';
import { buildIndex } from './index/build-index.js';
import type { RetrieverFiles } from './engine/retriever.js';

/** The bundled demo: a lexical `demo` model, the corpus written for it, and their index. */
export const DEMO_FILES: Required<RetrieverFiles> = {
  modelDir: path.join(PROJECT_ROOT, 'models', 'demo', '1'),
  indexPath: path.join(PROJECT_ROOT, 'data', 'demo', 'demo_Flat.index'),
  corpusPath: DEMO_CORPUS_PATH,
  sidecarPath: path.join(PROJECT_ROOT, 'data', 'demo', 'corpus.jsonl.offsets'),
};
const DEMO_STAMP = path.join(PROJECT_ROOT, 'data', 'demo', 'built-from.json');
const DEMO_SEED = 0;

export interface DemoBuildReport {
  built: boolean;
  files: Required<RetrieverFiles>;
}

/**
 * Builds the demo model and index unless they were built from the current corpus already (a
 * stamp records the corpus hash), so `npm start` does the work once per corpus change.
 */
export async function ensureDemo(log: (line: string) => void = () => undefined): Promise<DemoBuildReport> {
  const corpusHash = createHash('sha256').update(await readFile(DEMO_FILES.corpusPath)).digest('hex');
  const stamp = await readFile(DEMO_STAMP, 'utf8').then(
    (text) => JSON.parse(text) as { corpusHash?: string },
    () => undefined,
  );
  if (stamp?.corpusHash === corpusHash) return { built: false, files: DEMO_FILES };

  log(`building the demo model in ${DEMO_FILES.modelDir}`);
  await makeModel({
    outDir: DEMO_FILES.modelDir,
    preset: 'demo',
    seed: DEMO_SEED,
    vocabularyCorpus: DEMO_FILES.corpusPath,
    overwrite: true,
  });
  log(`encoding ${path.relative(PROJECT_ROOT, DEMO_FILES.corpusPath)} into ${DEMO_FILES.indexPath}`);
  await mkdir(path.dirname(DEMO_FILES.indexPath), { recursive: true });
  const corpus = await CorpusStore.open(DEMO_FILES.corpusPath, { sidecarPath: DEMO_FILES.sidecarPath });
  const encoder = await OnnxEncoder.load(DEMO_FILES.modelDir, { device: 'cpu' });
  try {
    await buildIndex({ corpus, encoder, outPath: DEMO_FILES.indexPath, batchSize: 32, restart: true });
  } finally {
    await Promise.allSettled([encoder.close(), corpus.close()]);
  }
  await writeFile(DEMO_STAMP, JSON.stringify({ corpusHash, seed: DEMO_SEED }) + '\n');
  return { built: true, files: DEMO_FILES };
}
