import { copyFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { makeModel } from '../../src/encoder/make-model.js';
import { WorkerEncoder } from '../../src/encoder/worker-encoder.js';
import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput, RetrievalResult, RetrievalService } from '../../src/engine/types.js';
import { buildIndex } from '../../src/index/build-index.js';
import { SAMPLE_CORPUS_PATH } from './stand-in-service.js';

let fixture: Promise<RetrieverFiles> | undefined;

/** A tiny-preset model and its FAISS Flat index over the 1k wiki18 sample, built once per run. */
export function realFixture(): Promise<RetrieverFiles> {
  fixture ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'http-contract-'));
    const corpusPath = path.join(dir, 'wiki18-sample-1k.jsonl');
    await copyFile(SAMPLE_CORPUS_PATH, corpusPath);
    const modelDir = path.join(dir, 'model');
    await makeModel({ outDir: modelDir, preset: 'tiny', seed: 7, vocabularyCorpus: corpusPath });
    const indexPath = path.join(dir, 'tiny_Flat.index');
    const corpus = await CorpusStore.open(corpusPath);
    const encoder = await WorkerEncoder.load(modelDir);
    try {
      await buildIndex({ corpus, encoder, outPath: indexPath, batchSize: 128 });
    } finally {
      await Promise.all([encoder.close(), corpus.close()]);
    }
    return { modelDir, indexPath, corpusPath };
  })();
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

export async function loadRealService(files: RetrieverFiles): Promise<RealService> {
  const active = new ActiveRetriever();
  active.activate(await Retriever.load(files, { version: 'contract-v1', onStage: (stage, progress) => active.loading(stage, progress) }));
  return new RealService(active);
}
