import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CorpusStore } from './corpus/corpus-store.js';
import { makeModel } from './encoder/make-model.js';
import { OnnxEncoder } from './encoder/onnx-encoder.js';
import { DEMO_CORPUS_PATH, PROJECT_ROOT } from './project-files.js';
import { buildIndex } from './index/build-index.js';
import type { RetrieverFiles } from './engine/retriever.js';

const DEMO_SEED = 0;

/**
 * The bundled demo: a lexical `demo` model, the corpus written for it, and their index. What is
 * built lives in `<dataDir>/demo`, so `--data_dir` (or RETRIEVER_DATA_DIR) moves it with the rest
 * of the service's state; the corpus stays in the project.
 */
function demoFiles(dataDir: string): Required<RetrieverFiles> {
  const dir = path.resolve(dataDir, 'demo');
  return {
    modelDir: path.join(dir, 'model'),
    indexPath: path.join(dir, 'demo_Flat.index'),
    corpusPath: DEMO_CORPUS_PATH,
    sidecarPath: path.join(dir, 'corpus.jsonl.offsets'),
  };
}

export interface DemoBuildReport {
  built: boolean;
  files: Required<RetrieverFiles>;
}

/**
 * Builds the demo model and index in `dataDir` unless they were built from the current corpus
 * already (a stamp records the corpus hash), so the first `npm start` does the work once per
 * corpus change.
 */
export async function ensureDemo(dataDir: string, log: (line: string) => void = () => undefined): Promise<DemoBuildReport> {
  const files = demoFiles(dataDir);
  const stampPath = path.join(path.dirname(files.indexPath), 'built-from.json');
  const corpusHash = createHash('sha256').update(await readFile(files.corpusPath)).digest('hex');
  const stamp = await readFile(stampPath, 'utf8').then(
    (text) => JSON.parse(text) as { corpusHash?: string },
    () => undefined,
  );
  if (stamp?.corpusHash === corpusHash) return { built: false, files };

  log(`building the demo model in ${files.modelDir}`);
  await mkdir(path.dirname(files.indexPath), { recursive: true });
  await makeModel({
    outDir: files.modelDir,
    preset: 'demo',
    seed: DEMO_SEED,
    vocabularyCorpus: files.corpusPath,
    overwrite: true,
  });
  log(`encoding ${path.relative(PROJECT_ROOT, files.corpusPath)} into ${files.indexPath}`);
  const corpus = await CorpusStore.open(files.corpusPath, { sidecarPath: files.sidecarPath });
  const encoder = await OnnxEncoder.load(files.modelDir, { device: 'cpu' });
  try {
    await buildIndex({ corpus, encoder, outPath: files.indexPath, batchSize: 32, restart: true });
  } finally {
    await Promise.allSettled([encoder.close(), corpus.close()]);
  }
  await writeFile(stampPath, JSON.stringify({ corpusHash, seed: DEMO_SEED }) + '\n');
  return { built: true, files };
}
