import type { CorpusRow } from '../corpus/corpus-row.js';
import { toTevatronRecord, type TevatronRecord } from './legacy.js';
import type { TrainingRecord } from './record.js';

/** What the export needs of the corpus store (src/corpus CorpusStore satisfies it). */
export interface PassageSource {
  readonly rows: number;
  /** Rows in the order asked, repeats allowed. */
  readRows(rowIndices: readonly number[]): Promise<CorpusRow[]>;
}

/** Records resolved in batches (one corpus read per batch) into tevatron's legacy format. */
export async function* tevatronRecords(
  records: AsyncIterable<TrainingRecord>,
  corpus: PassageSource,
  batchSize = 64,
): AsyncGenerator<TevatronRecord> {
  let batch: TrainingRecord[] = [];
  for await (const record of records) {
    batch.push(record);
    if (batch.length < batchSize) continue;
    yield* await resolveBatch(batch, corpus);
    batch = [];
  }
  if (batch.length > 0) yield* await resolveBatch(batch, corpus);
}

async function resolveBatch(batch: readonly TrainingRecord[], corpus: PassageSource): Promise<TevatronRecord[]> {
  const rows = await corpus.readRows(batch.flatMap((record) => record.passage_ids.map(Number)));
  let next = 0;
  return batch.map((record) => {
    const mine = rows.slice(next, next + record.passage_ids.length);
    next += record.passage_ids.length;
    return toTevatronRecord(record, mine);
  });
}

/** One JSON document a line, for streaming responses and files. */
export async function* jsonLines(items: AsyncIterable<unknown>): AsyncGenerator<string> {
  for await (const item of items) yield `${JSON.stringify(item)}\n`;
}
