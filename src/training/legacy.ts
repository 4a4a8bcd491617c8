import type { CorpusRow } from '../corpus/corpus-row.js';
import { arrayField, isObject, objectAt, passageIdAt, QUERY_SEPARATOR_TOKEN, reject, stringField, type JsonObject } from './fields.js';
import type { TrainingRecord } from './record.js';

/** Tevatron's own training format: passages carried inline, no scores, several positives allowed. */
export interface TevatronPassage {
  docid: string;
  title: string;
  text: string;
}

export interface TevatronRecord {
  query_id: string;
  query: string;
  positive_passages: TevatronPassage[];
  negative_passages: TevatronPassage[];
}

/** The Agentic-R trainer joins these two with this separator; legacy records carry the join. */
const QUERY_SEPARATOR = ` ${QUERY_SEPARATOR_TOKEN} `;

/** The round a legacy record is filed under: it has no round, and a first round has no history. */
const LEGACY_ROUND_INDEX = 1;

export function isLegacyRecord(value: unknown): value is JsonObject {
  return isObject(value) && 'positive_passages' in value && !('passage_ids' in value);
}

/**
 * Normalises a tevatron legacy record into stored-shape candidates (validated afterwards like any
 * record, so row checks and duplicates are judged once):
 * - `query` "question [SEP] sub-query" splits at the first separator; without one the query is
 *   both the question and the sub-query (a first-round search for the question itself);
 * - one record per positive (our shape has one positive each), all sharing the negatives;
 * - `docid` is the corpus row; inline title/text are ignored, the served corpus is the truth;
 * - scores mark only the label tevatron knows: positives `{em: 1, local_utility: 1}`,
 *   negatives `{em: 0, local_utility: 0}`.
 */
export function fromLegacyRecord(object: JsonObject, dataset: string, corpusRows: number): unknown[] {
  const queryId = legacyQueryId(object);
  const query = stringField(object, 'query');
  const positives = legacyDocids(object, 'positive_passages', corpusRows);
  const negatives = 'negative_passages' in object ? legacyDocids(object, 'negative_passages', corpusRows) : [];
  if (positives.length === 0) reject('invalid_value', 'positive_passages must name at least one passage', 'positive_passages');
  const split = query.indexOf(QUERY_SEPARATOR);
  const question = split < 0 ? query : query.slice(0, split);
  const queryText = split < 0 ? query : query.slice(split + QUERY_SEPARATOR.length);
  return positives.map((positive) => ({
    dataset,
    query_id: queryId,
    question,
    round_index: LEGACY_ROUND_INDEX,
    history_queries: [],
    query_text: queryText,
    passage_ids: [positive, ...negatives],
    scores: [{ em: 1, local_utility: 1 }, ...negatives.map(() => ({ em: 0, local_utility: 0 }))],
  }));
}

function legacyQueryId(object: JsonObject): string {
  const value = object.query_id;
  return typeof value === 'number' ? String(value) : stringField(object, 'query_id');
}

/** Docids are checked here, so an error names the field the client sent (`positive_passages[0].docid`); a number becomes its decimal string. */
function legacyDocids(object: JsonObject, name: string, corpusRows: number): string[] {
  return arrayField(object, name).map((passage, i) => {
    const field = `${name}[${i}].docid`;
    const docid = objectAt(passage, `${name}[${i}]`).docid;
    if (docid === undefined || docid === null) reject('missing_field', `${field} is required`, field);
    return passageIdAt(docid, field, corpusRows, true);
  });
}

/**
 * Splits a corpus `contents` the way FlashRAG's retriever does for tevatron-style passages: title
 * is the first line with surrounding `"` removed (all of them, as Python's `strip('"')` does, so
 * the corpus's doubled `""x""` titles come out bare), text is everything after the first `\n`.
 */
export function titleAndText(contents: string): { title: string; text: string } {
  const newline = contents.indexOf('\n');
  const firstLine = newline < 0 ? contents : contents.slice(0, newline);
  return {
    title: firstLine.replace(/^"+|"+$/g, ''),
    text: newline < 0 ? '' : contents.slice(newline + 1),
  };
}

/** Our record resolved against the corpus into tevatron's legacy format (passage texts inline). */
export function toTevatronRecord(record: TrainingRecord, rows: readonly CorpusRow[]): TevatronRecord {
  const passages = record.passage_ids.map((docid, i) => ({ docid, ...titleAndText(rows[i]!.contents) }));
  return {
    query_id: record.query_id,
    query: `${record.question}${QUERY_SEPARATOR}${record.query_text}`,
    positive_passages: passages.slice(0, 1),
    negative_passages: passages.slice(1),
  };
}
