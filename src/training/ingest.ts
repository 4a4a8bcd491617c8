import { setImmediate as nextTurn } from 'node:timers/promises';
import { ServiceError } from '../errors.js';
import { rejectionOf, type Rejection } from './fields.js';
import { positionOf, type InputItem, type ItemPosition } from './jsonl.js';
import { fromLegacyRecord, isLegacyRecord } from './legacy.js';
import { validateRecord, type TrainingRecord } from './record.js';
import type { TrainingExampleStore } from './store.js';

export type IngestStatus = 'accepted' | 'duplicate' | 'rejected';

export type IngestResult = ItemPosition & {
  status: IngestStatus;
  /** Stored-shape records this input became when more than one (a legacy record with several positives). */
  records?: number;
} & Partial<Rejection>;

export interface IngestReport {
  received: number;
  accepted: number;
  duplicate: number;
  rejected: number;
  results: IngestResult[];
}

export interface IngestOptions {
  /** Rows of the served corpus: every passage id must be below it. */
  corpusRows: number;
  /** Dataset a legacy tevatron record is filed under (that format names none). */
  legacyDataset?: string;
}

export const DEFAULT_LEGACY_DATASET = 'tevatron';

/**
 * Input items parsed, judged and stored (one fsync) per slice, with a turn of the event loop
 * between slices: this bounds how long a large batch holds the loop (about 20 ms a slice here)
 * and how many parsed values are alive at once.
 */
export const INGEST_SLICE_ITEMS = 500;

/**
 * Validates each input item on its own, stores the valid ones durably (the report, which
 * acknowledges them, comes only after every slice is fsynced) and answers one result per item in
 * input order. Rejections are counted by reason. Items are taken lazily, slice by slice, so a
 * streamed body is judged and stored while it still arrives.
 */
export async function ingestRecords(
  store: TrainingExampleStore,
  items: Iterable<InputItem> | AsyncIterable<InputItem>,
  options: IngestOptions,
): Promise<IngestReport> {
  const report: IngestReport = { received: 0, accepted: 0, duplicate: 0, rejected: 0, results: [] };
  for await (const slice of slicesOf(items, INGEST_SLICE_ITEMS)) {
    let results: IngestResult[];
    try {
      results = await ingestSlice(store, slice, options);
    } catch (error) {
      if (!(error instanceof ServiceError) || error.code !== 'insufficient_storage') throw error;
      throw new ServiceError(
        'insufficient_storage',
        `${error.message}; records from index ${slice[0]!.index} on were not stored, those before it were (re-sending them answers duplicate)`,
      );
    }
    for (const result of results) {
      report.results.push(result);
      report[result.status] += 1;
    }
    report.received += slice.length;
    await nextTurn();
  }
  return report;
}

async function* slicesOf<T>(items: Iterable<T> | AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let slice: T[] = [];
  for await (const item of items) {
    slice.push(item);
    if (slice.length === size) {
      yield slice;
      slice = [];
    }
  }
  if (slice.length > 0) yield slice;
}

async function ingestSlice(store: TrainingExampleStore, items: readonly InputItem[], options: IngestOptions): Promise<IngestResult[]> {
  const validated = items.map((item) => validateItem(item, options));
  const records = validated.flatMap((entry) => ('records' in entry ? entry.records : []));
  const rejected = validated.flatMap((entry) => ('rejection' in entry ? [entry.rejection.reason] : []));
  const outcomes = await store.append(records, rejected);
  let next = 0;
  const results = validated.map((entry, i): IngestResult => {
    const position = positionOf(items[i]!);
    if ('rejection' in entry) return { ...position, status: 'rejected', ...entry.rejection };
    const mine = outcomes.slice(next, next + entry.records.length);
    next += entry.records.length;
    const status: IngestStatus = mine.includes('accepted') ? 'accepted' : 'duplicate';
    return entry.records.length === 1 ? { ...position, status } : { ...position, status, records: entry.records.length };
  });
  return results;
}

function validateItem(item: InputItem, options: IngestOptions): { records: TrainingRecord[] } | { rejection: Rejection } {
  if ('parseError' in item) return { rejection: { reason: 'malformed_json', message: `not JSON: ${item.parseError}` } };
  try {
    const candidates = isLegacyRecord(item.value)
      ? fromLegacyRecord(item.value, options.legacyDataset ?? DEFAULT_LEGACY_DATASET, options.corpusRows)
      : [item.value];
    return { records: candidates.map((candidate) => validateRecord(candidate, options.corpusRows)) };
  } catch (error) {
    return { rejection: rejectionOf(error) };
  }
}
