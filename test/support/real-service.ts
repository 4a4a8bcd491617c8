import { ActiveRetriever } from '../../src/engine/active-retriever.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import type { DocumentKeys, DocumentsResult, RetrievalResult, RetrievalService } from '../../src/engine/types.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from './retriever-fixture.js';

/** The tiny-preset retriever over the wiki18 sample that the engine tests use too (built once per run). */
export function realFixture(): Promise<RetrieverFiles> {
  return buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: SAMPLE_CORPUS });
}

/**
 * The real engine (ActiveRetriever over a loaded Retriever), observed from outside: tests can
 * wait until a search has entered it, to order other requests against it without timing.
 */
export class RealService implements RetrievalService {
  private waiters: (() => void)[] = [];

  constructor(readonly active: ActiveRetriever) {}

  retrieve(inputs: readonly QueryInput[], topk: number): Promise<RetrievalResult> {
    const result = this.active.retrieve(inputs, topk);
    for (const waiter of this.waiters.splice(0)) waiter();
    return result;
  }

  documents(keys: DocumentKeys): Promise<DocumentsResult> {
    return this.active.documents(keys);
  }

  readiness() {
    return this.active.readiness();
  }

  info() {
    return this.active.info();
  }

  /** Resolves when the next retrieve call has been handed to the engine. */
  retrieveStarted(): Promise<void> {
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
  await active.activate(await Retriever.load(files, { version, onStage: (stage, progress, step) => active.loading(stage, progress, step) }));
  return new RealService(active);
}
