import { ServiceError } from '../errors.js';
import type { Retriever } from './retriever.js';
import type { QueryInput, Readiness, RetrievalResult, RetrievalService, RetrieverInfo } from './types.js';

/** A version being served, with the requests still running on it. */
interface Serving {
  retriever: Retriever;
  inFlight: number;
  /** Set when the version is replaced: settles once it is closed. */
  retirement?: { released: Promise<void>; release: () => void };
}

/**
 * The one reference serving swaps. A request keeps the version it started on until it ends; a
 * replaced version is closed (its encoder worker, index and corpus released) once its last
 * request has finished.
 */
export class ActiveRetriever implements RetrievalService {
  private serving?: Serving;
  private state: Readiness = { ready: false, stage: 'starting' };

  get current(): Retriever | undefined {
    return this.serving?.retriever;
  }

  /** Loading progress for `/ready`; ignored once a version serves (a background load must not hide it). */
  loading(stage: string, progress?: number): void {
    if (!this.serving) this.state = { ready: false, stage, ...(progress !== undefined && { progress }) };
  }

  failed(error: Error): void {
    if (!this.serving) this.state = { ready: false, stage: 'failed', error: error.message };
  }

  /** Makes `retriever` serve new requests; resolves when the version it replaced is released. */
  activate(retriever: Retriever): Promise<void> {
    const previous = this.serving;
    this.serving = { retriever, inFlight: 0 };
    this.state = { ready: true, stage: 'serving' };
    return previous ? this.retire(previous) : Promise.resolve();
  }

  async search(inputs: readonly QueryInput[], topk: number): Promise<RetrievalResult> {
    const serving = this.serving;
    if (!serving) throw new ServiceError('not_ready', `the retriever is not loaded yet (stage: ${this.state.stage})`);
    serving.inFlight++;
    try {
      return await serving.retriever.search(inputs, topk);
    } finally {
      serving.inFlight--;
      if (serving.retirement && serving.inFlight === 0) serving.retirement.release();
    }
  }

  readiness(): Readiness {
    return this.state;
  }

  info(): RetrieverInfo | undefined {
    return this.serving?.retriever.info();
  }

  /** Stops serving; resolves once every request on the last version has finished and it is closed. */
  async close(): Promise<void> {
    const serving = this.serving;
    this.serving = undefined;
    this.state = { ready: false, stage: 'closed' };
    if (serving) await this.retire(serving);
  }

  private retire(serving: Serving): Promise<void> {
    if (!serving.retirement) {
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        let closing: Promise<void> | undefined;
        release = () => {
          closing ??= serving.retriever.close().then(resolve);
        };
      });
      serving.retirement = { released, release };
    }
    if (serving.inFlight === 0) serving.retirement.release();
    return serving.retirement.released;
  }
}
