import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Mutex } from 'async-mutex';
import { ServiceError } from '../errors.js';
import { syncDirectory, writeFileAtomically } from '../file-io.js';
import { REJECTION_REASONS, type RejectionReason } from './fields.js';
import { readLineSpans } from './jsonl.js';
import { recordKey, serialiseRecord, type TrainingRecord } from './record.js';
import { RecordTally, type DatasetStats } from './tally.js';

export const EXAMPLES_FILE = 'examples.jsonl';
export const COUNTERS_FILE = 'ingest-counters.json';

export type AppendOutcome = 'accepted' | 'duplicate';

export interface RecordFilter {
  dataset?: string;
  roundIndex?: number;
}

export interface TrainingStats {
  records: number;
  datasets: Record<string, DatasetStats>;
  /** Records re-sent after they were stored (answered `duplicate`, not stored again). */
  duplicates: number;
  rejections: Record<RejectionReason, number>;
}

interface IngestCounters {
  duplicates: number;
  rejections: Record<RejectionReason, number>;
}

/** How far `open` has read the examples file. */
export interface StoreLoadProgress {
  records: number;
  bytesRead: number;
  totalBytes: number;
}

export interface StoreOpenOptions {
  /** Called before the first record and then every `LOAD_PROGRESS_RECORDS`; `open` waits for it. */
  onProgress?: (progress: StoreLoadProgress) => void | Promise<void>;
}

/** Records between progress reports while a store loads. */
export const LOAD_PROGRESS_RECORDS = 50_000;
/**
 * Records parsed between yields to the event loop while a store loads (about 5 ms here): a read
 * stream's buffered chunks resolve as microtasks, so without yields a large store starves it.
 */
const LOAD_SLICE_RECORDS = 250;

const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT']);

function isDiskFull(error: unknown): boolean {
  return DISK_FULL_CODES.has((error as NodeJS.ErrnoException).code ?? '');
}

/**
 * Append-only JSONL store of training records in a data directory. An append resolves only after
 * its bytes are fsynced, so an acknowledged record survives `kill -9`; a crash mid-append can
 * leave only an unacknowledged partial last line, which `open` cuts off. One writer at a time.
 */
export class TrainingExampleStore {
  private readonly writer = new Mutex();
  /** Bytes of complete, fsynced lines: readers never look past it. */
  private size: number;
  private broken?: Error;
  /** Counts not yet saved because the disk was full: added to the next save that succeeds. */
  private unsaved: IngestCounters = zeroCounters();

  private constructor(
    readonly dataDir: string,
    /** Bytes of a torn final line that `open` removed (0 when the last shutdown was clean). */
    readonly truncatedBytes: number,
    private readonly file: FileHandle,
    private readonly keys: Set<string>,
    private readonly tally: RecordTally,
    /** As saved on disk: what `stats` reports. */
    private counters: IngestCounters,
    size: number,
  ) {
    this.size = size;
  }

  static async open(dataDir: string, options: StoreOpenOptions = {}): Promise<TrainingExampleStore> {
    await mkdir(dataDir, { recursive: true });
    const path = join(dataDir, EXAMPLES_FILE);
    const file = await open(path, 'a');
    try {
      const totalBytes = (await file.stat()).size;
      if (totalBytes === 0) await syncDirectory(dataDir);
      await options.onProgress?.({ records: 0, bytesRead: 0, totalBytes });
      const keys = new Set<string>();
      const tally = new RecordTally();
      let size = 0;
      let truncatedBytes = 0;
      for await (const span of readLineSpans(path)) {
        if (!span.terminated) {
          truncatedBytes = span.end - span.start;
          await file.truncate(span.start);
          await file.datasync();
          break;
        }
        tally.add(parseStoredLine(span.text, path, span.line));
        keys.add(recordKey(span.text));
        size = span.end + 1;
        if (tally.records % LOAD_SLICE_RECORDS === 0) await nextTurn();
        if (tally.records % LOAD_PROGRESS_RECORDS === 0) await options.onProgress?.({ records: tally.records, bytesRead: size, totalBytes });
      }
      const counters = await readCounters(join(dataDir, COUNTERS_FILE));
      return new TrainingExampleStore(dataDir, truncatedBytes, file, keys, tally, counters, size);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  get path(): string {
    return join(this.dataDir, EXAMPLES_FILE);
  }

  /**
   * Stores the records not stored before (by content), in order, with one write and one fsync;
   * a record repeated within `records` is a duplicate from its second copy on. The duplicates and
   * the `rejected` reasons of the same batch are added to the persisted counts in one save.
   */
  append(records: readonly TrainingRecord[], rejected: readonly RejectionReason[] = []): Promise<AppendOutcome[]> {
    return this.writer.runExclusive(async () => {
      if (this.broken) throw new ServiceError('internal', `training store is unusable after a failed write: ${this.broken.message}`);
      const fresh = new Map<string, { line: string; record: TrainingRecord }>();
      const outcomes = records.map((record): AppendOutcome => {
        const line = serialiseRecord(record);
        const key = recordKey(line);
        if (this.keys.has(key) || fresh.has(key)) return 'duplicate';
        fresh.set(key, { line, record });
        return 'accepted';
      });
      if (fresh.size > 0) await this.write([...fresh.values()].map(({ line }) => `${line}\n`).join(''));
      for (const [key, { record }] of fresh) {
        this.keys.add(key);
        this.tally.add(record);
      }
      const counts = { ...zeroCounters(), duplicates: records.length - fresh.size };
      for (const reason of rejected) counts.rejections[reason] += 1;
      if (counts.duplicates > 0 || rejected.length > 0) await this.addToCounters(counts);
      return outcomes;
    });
  }

  stats(): TrainingStats {
    return {
      records: this.tally.records,
      datasets: this.tally.datasetStats(),
      duplicates: this.counters.duplicates,
      rejections: { ...this.counters.rejections },
    };
  }

  /** Stored records in append order, as of the call: later appends are not seen by this iteration. */
  async *records(filter: RecordFilter = {}): AsyncGenerator<TrainingRecord> {
    const path = this.path;
    for await (const span of readLineSpans(path, this.size)) {
      const record = parseStoredLine(span.text, path, span.line);
      if (filter.dataset !== undefined && record.dataset !== filter.dataset) continue;
      if (filter.roundIndex !== undefined && record.round_index !== filter.roundIndex) continue;
      yield record;
    }
  }

  async close(): Promise<void> {
    await this.writer.runExclusive(() => this.file.close());
  }

  private async write(text: string): Promise<void> {
    try {
      await this.file.appendFile(text);
      await this.file.datasync();
    } catch (error) {
      // Cut back to the last acknowledged byte so a later append never lands after a half line.
      await this.file.truncate(this.size).catch((truncateError: Error) => {
        this.broken = truncateError;
      });
      if (isDiskFull(error)) {
        throw new ServiceError('insufficient_storage', `the disk holding the training store is full: ${(error as Error).message}`);
      }
      throw new ServiceError('internal', `cannot store training records: ${(error as Error).message}`);
    }
    this.size += Buffer.byteLength(text);
  }

  /**
   * Saves the counters plus `counts`; only a save that succeeded changes what `stats` reports, so
   * it always equals the file. A full disk must not fail a batch that stores nothing, so its
   * counts wait for the next save instead (lost only if the process ends before one succeeds).
   */
  private async addToCounters(counts: IngestCounters): Promise<void> {
    const next = sumCounters(sumCounters(this.counters, this.unsaved), counts);
    try {
      await writeFileAtomically(join(this.dataDir, COUNTERS_FILE), [Buffer.from(`${JSON.stringify(next)}\n`)]);
    } catch (error) {
      if (!isDiskFull(error)) throw error;
      this.unsaved = sumCounters(this.unsaved, counts);
      return;
    }
    this.counters = next;
    this.unsaved = zeroCounters();
  }
}

function parseStoredLine(text: string, path: string, line: number): TrainingRecord {
  try {
    return JSON.parse(text) as TrainingRecord;
  } catch {
    throw new ServiceError('internal', `${path} line ${line} is not a JSON record: the store is damaged`);
  }
}

function zeroCounters(): IngestCounters {
  return { duplicates: 0, rejections: Object.fromEntries(REJECTION_REASONS.map((reason) => [reason, 0])) as Record<RejectionReason, number> };
}

function sumCounters(a: IngestCounters, b: IngestCounters): IngestCounters {
  const sum = zeroCounters();
  sum.duplicates = a.duplicates + b.duplicates;
  for (const reason of REJECTION_REASONS) sum.rejections[reason] = a.rejections[reason] + b.rejections[reason];
  return sum;
}

async function readCounters(path: string): Promise<IngestCounters> {
  const counters = zeroCounters();
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return counters;
    throw error;
  }
  const stored = JSON.parse(text) as Partial<IngestCounters>;
  for (const reason of REJECTION_REASONS) counters.rejections[reason] = stored.rejections?.[reason] ?? 0;
  counters.duplicates = stored.duplicates ?? 0;
  return counters;
}

