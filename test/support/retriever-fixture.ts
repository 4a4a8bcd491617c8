import { copyFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { makeModel } from '../../src/encoder/make-model.js';
import { OnnxEncoder } from '../../src/encoder/onnx-encoder.js';
import type { PresetName } from '../../src/encoder/presets.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import { buildIndex } from '../../src/index/build-index.js';
export { DEMO_CORPUS, repoRoot, SAMPLE_CORPUS } from './sample-data.js';


export interface FixtureSpec {
  preset: PresetName;
  seed: number;
  corpus: string;
}

const built = new Map<string, Promise<RetrieverFiles>>();

/**
 * A model built from a preset, the corpus copied beside it (its offsets sidecar must not land in
 * read-only shared/), and the index that model makes of it, in a temp folder; built once per run
 * for each spec, so tests must not change these files.
 */
export function buildRetrieverFiles(spec: FixtureSpec): Promise<RetrieverFiles> {
  const key = JSON.stringify(spec);
  if (!built.has(key)) built.set(key, build(spec));
  return built.get(key)!;
}

async function build({ preset, seed, corpus }: FixtureSpec): Promise<RetrieverFiles> {
  const dir = await mkdtemp(path.join(tmpdir(), `retriever-${preset}-${seed}-`));
  const corpusPath = path.join(dir, path.basename(corpus));
  await copyFile(corpus, corpusPath);
  const modelDir = path.join(dir, 'model');
  await makeModel({ outDir: modelDir, preset, seed, vocabularyCorpus: corpusPath });
  const indexPath = path.join(dir, `${preset}_Flat.index`);
  const store = await CorpusStore.open(corpusPath);
  const encoder = await OnnxEncoder.load(modelDir, { device: 'cpu' });
  try {
    await buildIndex({ corpus: store, encoder, outPath: indexPath, batchSize: 128 });
  } finally {
    await Promise.all([encoder.close(), store.close()]);
  }
  return { modelDir, indexPath, corpusPath };
}
