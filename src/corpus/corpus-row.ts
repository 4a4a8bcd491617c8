/** A corpus line as stored: at least `id` and `contents` (`"\"Title\"\ntext"`), other fields kept. */
export interface CorpusRow {
  id: string;
  contents: string;
  [field: string]: unknown;
}
