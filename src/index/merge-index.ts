import { open, type FileHandle } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { ServiceError } from '../errors.js';
import { readFully, writeFileAtomicallyWith, writeFully } from '../file-io.js';
import { readIndexPart, type IndexPart } from './index-part.js';
import { encodeIxfiHeader, IXFI_HEADER_BYTES, readIxfiHeader } from './ixfi-header.js';
import { formatRange } from './row-range.js';

export interface MergeIndexOptions {
  /** Part files written by `build-index --rows/--shard`, in any order. */
  partPaths: readonly string[];
  outPath: string;
  /** Rows copied so far out of the corpus rows. */
  onProgress?: (done: number, total: number) => void;
  /** Aborting stops between copies; no file appears under `outPath`. */
  signal?: AbortSignal;
}

export interface MergeIndexResult {
  path: string;
  rows: number;
  dimension: number;
  parts: number;
}

/** Bytes read from a part and written to the index per call: the vectors stream through, never held whole. */
const COPY_BYTES = 16 * 1024 * 1024;

/**
 * Joins index parts into one FAISS IndexFlatIP file without re-encoding: the parts must come from
 * one encoder and one corpus and cover its rows exactly once, which is checked before a byte is
 * written. The vectors are copied in row order into a file beside `outPath`, synced and renamed
 * into place, so a stopped merge leaves nothing under the final name (a new run starts over).
 */
export async function mergeIndexParts(options: MergeIndexOptions): Promise<MergeIndexResult> {
  if (options.partPaths.length === 0) throw new ServiceError('bad_request', 'give the index parts to merge');
  const parts: IndexPart[] = [];
  for (const path of options.partPaths) parts.push(await readIndexPart(path));
  parts.sort((a, b) => a.description.rows.start - b.description.rows.start || a.description.rows.end - b.description.rows.end);
  const { dimension, description } = parts[0]!;
  for (const part of parts.slice(1)) checkSameBuild(parts[0]!, part);
  checkCoverage(parts, description.corpusRows);

  const rows = description.corpusRows;
  await writeFileAtomicallyWith(options.outPath, async (out) => {
    await writeFully(out, encodeIxfiHeader({ dimension, rows }), 0);
    let position = IXFI_HEADER_BYTES;
    let done = 0;
    options.onProgress?.(done, rows);
    for (const part of parts) {
      const source = await open(part.path, 'r');
      try {
        await copyRange(source, IXFI_HEADER_BYTES, part.rows * dimension * 4, out, position, options.signal);
      } finally {
        await source.close();
      }
      position += part.rows * dimension * 4;
      done += part.rows;
      options.onProgress?.(done, rows);
    }
  });
  await readIxfiHeader(options.outPath, { expectDimension: dimension, expectRows: rows });
  return { path: options.outPath, rows, dimension, parts: parts.length };
}

async function copyRange(source: FileHandle, from: number, bytes: number, out: FileHandle, to: number, signal: AbortSignal | undefined): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(COPY_BYTES, bytes));
  for (let copied = 0; copied < bytes; copied += buffer.length) {
    signal?.throwIfAborted();
    const chunk = buffer.subarray(0, Math.min(buffer.length, bytes - copied));
    await readFully(source, chunk, from + copied);
    await writeFully(out, chunk, to + copied);
  }
}

/** Vectors of two parts belong in one index only when one encoder read one corpus for both. */
function checkSameBuild(first: IndexPart, other: IndexPart): void {
  const [a, b] = [first.description, other.description];
  const refuse = (why: string, facts: Record<string, unknown>): ServiceError =>
    new ServiceError('conflict', `index part ${other.path} ${why}: the parts of one index must come from one build`, { path: other.path, reference: first.path, ...facts });
  if (a.dimension !== b.dimension) {
    throw refuse(`has dimension ${b.dimension}, ${first.path} has ${a.dimension}`, { dimension: b.dimension, expected: a.dimension });
  }
  if (!isDeepStrictEqual(a.encoder, b.encoder)) {
    const fields = Object.keys({ ...a.encoder, ...b.encoder }).filter((key) => !isDeepStrictEqual(a.encoder[key], b.encoder[key]));
    const differences = fields.map((key) => `${key} ${JSON.stringify(b.encoder[key])} vs ${JSON.stringify(a.encoder[key])}`).join('; ');
    throw refuse(`was encoded by another model than ${first.path} (${differences})`, { encoder: b.encoder, expected: a.encoder });
  }
  // Each machine's copy of the corpus has its own modification time: its bytes are what must match.
  if (a.corpusRows !== b.corpusRows || a.corpus.size !== b.corpus.size || a.corpus.fingerprint !== b.corpus.fingerprint) {
    const shape = (d: typeof a): string => `${d.corpusRows} rows, ${d.corpus.size} bytes, fingerprint ${d.corpus.fingerprint.slice(0, 12)}`;
    throw refuse(`was built from another corpus than ${first.path} (${shape(b)} vs ${shape(a)})`, {
      corpus: { ...b.corpus, rows: b.corpusRows },
      expected: { ...a.corpus, rows: a.corpusRows },
    });
  }
}

/** Parts sorted by their first row must tile rows 0 to `corpusRows`: no gap, no overlap. */
function checkCoverage(parts: readonly IndexPart[], corpusRows: number): void {
  let covered = 0;
  let previous: IndexPart | undefined;
  for (const part of parts) {
    const { start, end } = part.description.rows;
    // An empty part (a shard of a corpus with fewer rows than shards) holds nothing to place.
    if (start === end) continue;
    if (start > covered) {
      const after = previous ? ` between ${previous.path} (rows ${formatRange(previous.description.rows)}) and` : ' before';
      throw new ServiceError('bad_request', `no part holds rows ${covered}:${start}${after} ${part.path} (rows ${formatRange(part.description.rows)}): a part is missing`, {
        missingRows: { start: covered, end: start },
      });
    }
    if (start < covered && previous) {
      throw new ServiceError(
        'bad_request',
        `index parts ${previous.path} (rows ${formatRange(previous.description.rows)}) and ${part.path} (rows ${formatRange(part.description.rows)}) overlap on rows ${start}:${Math.min(covered, end)}`,
        { paths: [previous.path, part.path] },
      );
    }
    covered = end;
    previous = part;
  }
  if (covered < corpusRows) {
    throw new ServiceError('bad_request', `no part holds rows ${covered}:${corpusRows} of the corpus's ${corpusRows} (after ${previous!.path}): a part is missing`, {
      missingRows: { start: covered, end: corpusRows },
    });
  }
}
