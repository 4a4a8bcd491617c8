import { ServiceError } from '../errors.js';

/** Corpus rows `start` (included) to `end` (excluded), as a Python slice reads `start:end`. */
export interface RowRange {
  start: number;
  end: number;
}

/**
 * Which rows one machine of a spread build encodes, as `build-index` is told before the corpus is
 * open: `--rows START:END` (END absent: to the corpus's end) or `--shard I/N` (I from 0).
 */
export type RowSelection = { rows: { start: number; end?: number } } | { shard: { index: number; count: number } };

export function formatRange({ start, end }: RowRange): string {
  return `${start}:${end}`;
}

/**
 * The rows a selection names in a corpus of `corpusRows`. Shard I of N holds rows
 * floor(I·N_rows/N) to floor((I+1)·N_rows/N), so N shards cover every row once, in order, and
 * differ in size by at most one row.
 */
export function selectedRows(selection: RowSelection, corpusRows: number): RowRange {
  if ('shard' in selection) {
    const { index, count } = selection.shard;
    return { start: Math.floor((index * corpusRows) / count), end: Math.floor(((index + 1) * corpusRows) / count) };
  }
  const { start, end = corpusRows } = selection.rows;
  const asked = `--rows ${start}:${selection.rows.end ?? ''}`;
  if (end > corpusRows) {
    throw new ServiceError('bad_request', `${asked} runs past the corpus's ${corpusRows} rows (the end is excluded: the last row is ${corpusRows - 1})`, { field: '--rows' });
  }
  if (start >= end) throw new ServiceError('bad_request', `${asked} holds no rows: START must be below END`, { field: '--rows' });
  return { start, end };
}
