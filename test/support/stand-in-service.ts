import { readFile } from 'node:fs/promises';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import type { DocumentKeys, DocumentsResult, Readiness, RetrievalResult, RetrievalService, RetrieverInfo } from '../../src/engine/types.js';
import { ServiceError } from '../../src/errors.js';
import { SAMPLE_CORPUS } from './retriever-fixture.js';

export async function sampleRows(): Promise<CorpusRow[]> {
  const text = await readFile(SAMPLE_CORPUS, 'utf8');
  return text.trimEnd().split('\n').map((line) => JSON.parse(line) as CorpusRow);
}

/**
 * A stand-in for the engine, for tests of the HTTP layer's own behaviour (validation, error
 * mapping, readiness, shutdown). It answers query i with rows i, i+1, ... of the wiki18 sample
 * and records what it was asked; `gate` holds every search until released.
 */
export class StandInService implements RetrievalService {
  readonly calls: { inputs: readonly QueryInput[]; topk: number }[] = [];
  loaded = true;
  failWith?: ServiceError;
  gate?: Promise<void>;

  constructor(private readonly rows: CorpusRow[]) {}

  async retrieve(inputs: readonly QueryInput[], topk: number): Promise<RetrievalResult> {
    if (!this.loaded) throw new ServiceError('not_ready', 'retriever is loading');
    this.calls.push({ inputs, topk });
    await this.gate;
    if (this.failWith) throw this.failWith;
    const count = Math.min(topk, this.rows.length);
    const hits = inputs.map((_, position) =>
      Array.from({ length: count }, (__, rank) => {
        const rowIndex = (position + rank) % this.rows.length;
        return { rowIndex, score: 1 - rank / 100, document: this.rows[rowIndex]! };
      }),
    );
    return { hits, version: 'stand-in-v1', timings: { encodeMs: 4, searchMs: 2, fetchMs: 1 } };
  }

  async documents(keys: DocumentKeys): Promise<DocumentsResult> {
    if (!this.loaded) throw new ServiceError('not_ready', 'retriever is loading');
    const documents = keys.by === 'id' ? keys.ids.map((id) => this.rows.find((row) => row.id === id)) : keys.rows.map((row) => this.rows[row]);
    return { documents, version: 'stand-in-v1' };
  }

  readiness(): Readiness {
    return this.loaded ? { ready: true, stage: 'ready' } : { ready: false, stage: 'loading index', progress: 0.25 };
  }

  info(): RetrieverInfo | undefined {
    if (!this.loaded) return undefined;
    return {
      version: 'stand-in-v1',
      modelName: 'stand-in',
      modelDir: '/nowhere',
      manifest: {
        name: 'stand-in',
        dimension: 8,
        queryPrefix: 'query: ',
        passagePrefix: 'passage: ',
        queryTemplate: '{question} [SEP] {query}',
        maxQueryLength: 256,
        maxPassageLength: 256,
      } as RetrieverInfo['manifest'],
      dimension: 8,
      provider: 'cpu',
      indexPath: '/nowhere/index',
      indexRows: this.rows.length,
      corpusPath: SAMPLE_CORPUS,
      corpusRows: this.rows.length,
    };
  }
}
