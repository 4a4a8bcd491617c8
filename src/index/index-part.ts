import { readFile } from 'node:fs/promises';
import type { CorpusIdentity } from '../corpus/offsets-sidecar.js';
import { ServiceError } from '../errors.js';
import { openRegularFile, pathExists, readFully } from '../file-io.js';
import { readIxfiHeaderOf, type IxfiHeader } from './ixfi-header.js';
import { partialPaths, partialRowsWritten } from './ixfi-writer.js';
import { formatRange, type RowRange } from './row-range.js';

const PART_FORMAT = 'agentic-retriever/index-part/1';
/** Ends every finished part: `… vectors | description JSON | uint64 LE its bytes | PART_MAGIC`. */
const PART_MAGIC = 'IxPART01';
const TRAILER_TAIL_BYTES = 8 + PART_MAGIC.length;

/**
 * What `merge-index` checks before it joins parts: the rows a part holds, of which corpus (size
 * and fingerprint, plus its modification time where it was built) and encoded by which encoder.
 */
export type IndexPartDescription = {
  format: typeof PART_FORMAT;
  rows: RowRange;
  corpusRows: number;
  dimension: number;
  /** The encoder's manifest fields that shape its vectors, as a whole build records them. */
  encoder: Record<string, unknown>;
  corpus: CorpusIdentity;
};

export function partDescription(fields: Omit<IndexPartDescription, 'format'>): IndexPartDescription {
  return { format: PART_FORMAT, ...fields };
}

/** The bytes a finished part carries after its rows, so the one file says what it holds. */
export function partTrailer(description: IndexPartDescription): Buffer {
  const json = Buffer.from(JSON.stringify(description));
  const tail = Buffer.alloc(TRAILER_TAIL_BYTES);
  tail.writeBigUInt64LE(BigInt(json.length), 0);
  tail.write(PART_MAGIC, 8, 'latin1');
  return Buffer.concat([json, tail]);
}

export interface IndexPart extends IxfiHeader {
  path: string;
  description: IndexPartDescription;
}

/**
 * A finished part's header and description, checked against each other. A part still being
 * built, or a file that is not a part, is refused with what to do about it.
 */
export async function readIndexPart(path: string): Promise<IndexPart> {
  if (!(await pathExists(path))) throw await missingPart(path);
  const fail = (why: string): ServiceError => new ServiceError('bad_request', `index part ${path}: ${why}`, { path });
  const file = await openRegularFile(path, 'index part');
  try {
    const { size } = await file.stat();
    const tail = Buffer.alloc(Math.min(size, TRAILER_TAIL_BYTES));
    await readFully(file, tail, size - tail.length);
    if (tail.length < TRAILER_TAIL_BYTES || tail.toString('latin1', 8) !== PART_MAGIC) {
      throw fail(
        path.endsWith('.partial')
          ? `is a part build still in progress: run its build-index command again to finish it (it resumes), then merge ${path.slice(0, -'.partial'.length)}`
          : 'not a finished index part (made by build-index --rows or --shard); a part still being built has no description yet, and a whole index needs no merge',
      );
    }
    const jsonBytes = Number(tail.readBigUInt64LE(0));
    const ixfiBytes = size - TRAILER_TAIL_BYTES - jsonBytes;
    if (ixfiBytes < 0) throw fail(`its description claims ${jsonBytes} bytes, more than the file holds`);
    const json = Buffer.alloc(jsonBytes);
    await readFully(file, json, ixfiBytes);
    const description = parseDescription(json, fail);
    const header = await readIxfiHeaderOf(file, path, ixfiBytes);
    const { rows, corpusRows, dimension } = description;
    if (header.dimension !== dimension) throw fail(`its vectors have dimension ${header.dimension}, its description says ${dimension}`);
    if (header.rows !== rows.end - rows.start) throw fail(`it holds ${header.rows} rows, its description says rows ${formatRange(rows)}`);
    if (rows.start < 0 || rows.start > rows.end || rows.end > corpusRows) throw fail(`rows ${formatRange(rows)} are not within the corpus's ${corpusRows} rows`);
    return { path, description, ...header };
  } finally {
    await file.close();
  }
}

function parseDescription(json: Buffer, fail: (why: string) => ServiceError): IndexPartDescription {
  let description: IndexPartDescription;
  try {
    description = JSON.parse(json.toString('utf8')) as IndexPartDescription;
  } catch (error) {
    throw fail(`its description is not JSON (${(error as Error).message})`);
  }
  if (description?.format !== PART_FORMAT) throw fail(`unsupported part format ${JSON.stringify(description?.format)} (expected ${PART_FORMAT})`);
  return description;
}

/** A part given to merge that is not there: still being built here, or never copied over. */
async function missingPart(path: string): Promise<ServiceError> {
  const { vectors, description } = partialPaths(path);
  if (await pathExists(vectors)) {
    const built = await partialRowsWritten(path);
    const total = await readFile(description, 'utf8').then((text) => (JSON.parse(text) as { rows?: number }).rows, () => undefined);
    return new ServiceError(
      'conflict',
      `index part ${path} is still being built (${built}${total === undefined ? '' : ` of ${total}`} rows in ${vectors}): run its build-index command again to finish it (it resumes), then merge`,
      { path },
    );
  }
  return new ServiceError('not_found', `index part ${path} does not exist (copy it from the machine that built it)`, { path });
}
