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
 * Validates each input item on its own, stores the valid ones durably (acknowledged only after
 * fsync) and answers one result per item in input order. Rejections are counted by reason.
 */
export async function ingestRecords(
  store: TrainingExampleStore,
  items: readonly InputItem[],
  options: IngestOptions,
): Promise<IngestReport> {
  const validated = items.map((item) => validateItem(item, options));
  const records = validated.flatMap((entry) => ('records' in entry ? entry.records : []));
  const outcomes = await store.append(records);
  let next = 0;
  const results = validated.map((entry, i): IngestResult => {
    const position = positionOf(items[i]!);
    if ('rejection' in entry) return { ...position, status: 'rejected', ...entry.rejection };
    const mine = outcomes.slice(next, next + entry.records.length);
    next += entry.records.length;
    const status: IngestStatus = mine.includes('accepted') ? 'accepted' : 'duplicate';
    return entry.records.length === 1 ? { ...position, status } : { ...position, status, records: entry.records.length };
  });
  await store.countRejections(results.flatMap((result) => (result.reason ? [result.reason] : [])));
  return {
    received: items.length,
    accepted: results.filter((result) => result.status === 'accepted').length,
    duplicate: results.filter((result) => result.status === 'duplicate').length,
    rejected: results.filter((result) => result.status === 'rejected').length,
    results,
  };
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
