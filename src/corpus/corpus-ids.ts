import type { CorpusRow } from './corpus-row.js';
import type { CorpusStore } from './corpus-store.js';
import { ServiceError } from '../errors.js';
import { readCorpusSidecar, writeCorpusSidecar, type SidecarFormat } from './offsets-sidecar.js';

/**
 * The ids sidecar: `"JSONLIDS"` and the offsets sidecar's header (the corpus identity, then the
 * count), then `uint64[count]` entries `hash << 32 | row`, sorted.
 */
const IDS_FORMAT: SidecarFormat = { magic: 'JSONLIDS', version: 1, entries: (count) => count };

/** A row number as FlashRAG writes ids: decimal, no sign, no leading zeros. */
const ROW_NUMBER = /^(?:0|[1-9]\d{0,15})$/;

/** Where the ids of a corpus live, beside its offsets sidecar (`wiki.jsonl.offsets` → `wiki.jsonl.ids`). */
export function idsSidecarPath(offsetsSidecarPath: string): string {
  return `${offsetsSidecarPath.replace(/\.offsets$/, '')}.ids`;
}

/** A candidate row for the id asked at position `at`. */
interface Candidate {
  at: number;
  row: number;
}

/**
 * Finds corpus rows by their `id` field, exactly, for any corpus.
 *
 * FlashRAG's corpora (wiki18: 21M rows) give row i the id "i". For them a lookup reads the row the
 * id names and checks its id: nothing is held in memory and nothing is scanned. Only an id that
 * this does not answer (another id scheme, or no such id) needs the *exceptions*: every row whose
 * id is not its own row number, as (32-bit hash of the id, row) pairs sorted in one BigUint64Array,
 * 8 bytes per exception: none for wiki18, 168 MB for 21M rows of another id scheme. They come
 * from one sequential read of the whole corpus, on the first such lookup, and are kept in a
 * sidecar beside the offsets one, so a corpus file is read through once, not once per start.
 * Hash collisions cost a read: candidates are read and their ids compared.
 *
 * A corpus that repeats an id answers with one of its rows: row i for "i" where row i has that
 * id, else the first row that has it.
 */
export class CorpusIds {
  private exceptions?: Promise<BigUint64Array>;

  constructor(
    private readonly corpus: CorpusStore,
    readonly sidecarPath = idsSidecarPath(corpus.sidecarPath),
  ) {}

  /** The row with each id, in the order asked; undefined where no row has it. */
  async find(ids: readonly string[]): Promise<(CorpusRow | undefined)[]> {
    const found = new Array<CorpusRow | undefined>(ids.length).fill(undefined);
    const numbered = ids.flatMap((id, at) => (ROW_NUMBER.test(id) && Number(id) < this.corpus.rows ? [{ at, row: Number(id) }] : []));
    await this.readMatching(ids, numbered, found);
    const unanswered = ids.flatMap((_, at) => (found[at] === undefined ? [at] : []));
    if (unanswered.length === 0) return found;
    const exceptions = await this.loadExceptions();
    await this.readMatching(
      ids,
      unanswered.flatMap((at) => rowsWithHash(exceptions, hashId(ids[at]!)).map((row) => ({ at, row }))),
      found,
    );
    return found;
  }

  /** How many rows have an id other than their row number, once known (what the lookup holds in memory: 8 bytes each). */
  async exceptionCount(): Promise<number> {
    return (await this.loadExceptions()).length;
  }

  private async readMatching(ids: readonly string[], candidates: readonly Candidate[], found: (CorpusRow | undefined)[]): Promise<void> {
    const rows = await this.corpus.readRows(candidates.map(({ row }) => row));
    candidates.forEach(({ at }, position) => {
      if (found[at] === undefined && rows[position]!.id === ids[at]) found[at] = rows[position];
    });
  }

  private loadExceptions(): Promise<BigUint64Array> {
    // A failed read (the corpus changed) is not remembered: the next lookup tries again.
    this.exceptions ??= this.readOrScan().catch((error: unknown) => {
      this.exceptions = undefined;
      throw error;
    });
    return this.exceptions;
  }

  private async readOrScan(): Promise<BigUint64Array> {
    const { identity } = this.corpus;
    const stored = await readCorpusSidecar(this.sidecarPath, IDS_FORMAT, identity, (entries) => new BigUint64Array(entries));
    if (stored) return stored;
    const exceptions = await scanExceptions(this.corpus);
    // The lookup is exact without its copy on disk (a read-only folder): losing it only costs the next start another scan.
    await writeCorpusSidecar(this.sidecarPath, IDS_FORMAT, identity, exceptions.length, exceptions, 'corpus ids sidecar').catch(() => undefined);
    return exceptions;
  }
}

/** One sequential pass: the rows whose id is not their row number, as sorted `hash << 32 | row` entries. */
async function scanExceptions(corpus: CorpusStore): Promise<BigUint64Array> {
  if (corpus.rows > 2 ** 32) throw new ServiceError('internal', `corpus ${corpus.path} has ${corpus.rows} rows; ids can be looked up in at most 2^32`);
  let entries = new BigUint64Array(1024);
  let count = 0;
  let row = 0;
  for await (const { id } of corpus.rowsInOrder()) {
    if (id !== String(row)) {
      if (count === entries.length) {
        const grown = new BigUint64Array(entries.length * 2);
        grown.set(entries);
        entries = grown;
      }
      entries[count++] = (BigInt(hashId(id)) << 32n) | BigInt(row);
    }
    row++;
  }
  return entries.slice(0, count).sort();
}

/** The rows of sorted entries whose id hashes to `hash`, in row order. */
function rowsWithHash(entries: BigUint64Array, hash: number): number[] {
  const key = BigInt(hash) << 32n;
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (entries[middle]! < key) low = middle + 1;
    else high = middle;
  }
  const rows: number[] = [];
  for (let at = low; at < entries.length && entries[at]! >> 32n === BigInt(hash); at++) rows.push(Number(entries[at]! & 0xffffffffn));
  return rows;
}

/** 32-bit FNV-1a over the id's UTF-16 code units: ids that share one are told apart by reading their rows. */
export function hashId(id: string): number {
  let hash = 0x811c9dc5;
  for (let at = 0; at < id.length; at++) hash = Math.imul(hash ^ id.charCodeAt(at), 0x01000193);
  return hash >>> 0;
}
