import { copyFile, mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { makeModel } from '../../src/encoder/make-model.js';
import { pathExists } from '../../src/encoder/path-exists.js';
import type { PresetName } from '../../src/encoder/presets.js';
import { WorkerEncoder } from '../../src/encoder/worker-encoder.js';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput, RetrievalResult, RetrievalService } from '../../src/engine/types.js';
import { buildIndex } from '../../src/index/build-index.js';
import { SAMPLE_CORPUS_PATH } from './stand-in-service.js';

/**
 * A generated model (`preset`) and its FAISS Flat index over a copy of the 1k wiki18 sample, in
 * `dir`; reused when `dir` already holds a finished index.
 */
export async function buildSampleRetriever(dir: string, preset: PresetName, seed = 7): Promise<RetrieverFiles> {
  const files = {
    modelDir: path.join(dir, 'model'),
    indexPath: path.join(dir, `${preset}_Flat.index`),
    corpusPath: path.join(dir, 'wiki18-sample-1k.jsonl'),
  };
  if (await pathExists(files.indexPath)) return files;
  await mkdir(dir, { recursive: true });
  await copyFile(SAMPLE_CORPUS_PATH, files.corpusPath);
  await makeModel({ outDir: files.modelDir, preset, seed, vocabularyCorpus: files.corpusPath, overwrite: true });
  const corpus = await CorpusStore.open(files.corpusPath);
  const encoder = await WorkerEncoder.load(files.modelDir);
  try {
    await buildIndex({ corpus, encoder, outPath: files.indexPath, batchSize: 64, restart: true });
  } finally {
    await Promise.all([encoder.close(), corpus.close()]);
  }
  return files;
}

let fixture: Promise<RetrieverFiles> | undefined;

/** The tiny-preset retriever over the wiki18 sample, built once per test run. */
export function realFixture(): Promise<RetrieverFiles> {
  fixture ??= mkdtemp(path.join(tmpdir(), 'http-contract-')).then((dir) => buildSampleRetriever(dir, 'tiny'));
  return fixture;
}

/**
 * The real engine (ActiveRetriever over a loaded Retriever), observed from outside: tests can
 * wait until a search has entered it, to order other requests against it without timing.
 */
export class RealService implements RetrievalService {
  private waiters: (() => void)[] = [];

  constructor(readonly active: ActiveRetriever) {}

  search(inputs: readonly QueryInput[], topk: number): Promise<RetrievalResult> {
    const result = this.active.search(inputs, topk);
    for (const waiter of this.waiters.splice(0)) waiter();
    return result;
  }

  readiness() {
    return this.active.readiness();
  }

  info() {
    return this.active.info();
  }

  /** Resolves when the next search call has been handed to the engine. */
  searchStarted(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  get service(): RetrievalService {
    return this;
  }

  close(): Promise<void> {
    return this.active.close();
  }
}

export async function loadRealService(files: RetrieverFiles, version = 'contract-v1'): Promise<RealService> {
  const active = new ActiveRetriever();
  await active.activate(await Retriever.load(files, { version, onStage: (stage, progress) => active.loading(stage, progress) }));
  return new RealService(active);
}
