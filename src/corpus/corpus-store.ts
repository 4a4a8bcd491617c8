import { stat, type FileHandle } from 'node:fs/promises';
import type { CorpusRow } from './corpus-row.js';
import { ServiceError } from '../errors.js';
import {
  corpusIdentity,
  readSidecar,
  sameIdentity,
  scanLineOffsets,
  writeSidecar,
  type CorpusIdentity,
  type ScanProgress,
} from './offsets-sidecar.js';
import { openRegularFile, readFully } from '../file-io.js';

export interface CorpusOpenOptions {
  /** Where the offsets sidecar lives; default `<corpus>.offsets` (set it when the corpus folder is read-only). */
  sidecarPath?: string;
  /** Called while a missing or stale sidecar is rebuilt by scanning the corpus. */
  onProgress?: ScanProgress;
}

/** Rows whose byte ranges are at most this far apart are fetched with one read. */
const COALESCE_GAP = 16 * 1024;
const MAX_COALESCED_READ = 1024 * 1024;
const PASSAGE_READ_CHUNK = 4 * 1024 * 1024;

/**
 * A wiki18-format JSONL corpus read by row position (row i = line i, 0-based) with positional
 * reads through a persisted offsets sidecar; only the offsets (8 bytes a row) live in memory.
 */
export class CorpusStore {
  private changed = false;

  private constructor(
    readonly path: string,
    readonly sidecarPath: string,
    readonly identity: CorpusIdentity,
    /** True when this open scanned the corpus because the sidecar was missing or stale. */
    readonly sidecarRebuilt: boolean,
    private readonly file: FileHandle,
    private readonly offsets: Float64Array,
    /** The file the server opened, which the path must still name. */
    private readonly inode: { ino: number; dev: number },
  ) {}

  static async open(path: string, options: CorpusOpenOptions = {}): Promise<CorpusStore> {
    const sidecarPath = options.sidecarPath ?? `${path}.offsets`;
    const file = await openRegularFile(path, 'corpus');
    try {
      const identity = await corpusIdentity(file);
      const { ino, dev } = await file.stat();
      const stored = await readSidecar(sidecarPath, identity);
      if (stored) return new CorpusStore(path, sidecarPath, identity, false, file, stored, { ino, dev });
      const offsets = await scanLineOffsets(file, identity.size, options.onProgress);
      if (!sameIdentity(identity, await corpusIdentity(file))) {
        throw new ServiceError('conflict', `corpus ${path} changed while its offsets were being built`);
      }
      await writeSidecar(sidecarPath, identity, offsets);
      return new CorpusStore(path, sidecarPath, identity, true, file, offsets, { ino, dev });
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  get rows(): number {
    return this.offsets.length - 1;
  }

  async readRow(rowIndex: number): Promise<CorpusRow> {
    const [row] = await this.readRows([rowIndex]);
    return row!;
  }

  /** Rows in the order asked (repeats allowed); nearby rows share one read. */
  async readRows(rowIndices: readonly number[]): Promise<CorpusRow[]> {
    for (const rowIndex of rowIndices) this.checkRowIndex(rowIndex);
    await this.checkUnchanged();
    const sorted = [...new Set(rowIndices)].sort((a, b) => a - b);
    const parsed = new Map<number, CorpusRow>();
    await Promise.all(
      coalesce(sorted, this.offsets).map(async (run) => {
        const start = this.offsets[run[0]!]!;
        const bytes = Buffer.allocUnsafe(this.offsets[run.at(-1)! + 1]! - start);
        await readFully(this.file, bytes, start);
        for (const rowIndex of run) {
          const lineStart = this.offsets[rowIndex]! - start;
          parsed.set(rowIndex, this.parseLine(rowIndex, bytes, lineStart, this.offsets[rowIndex + 1]! - start));
        }
      }),
    );
    return rowIndices.map((rowIndex) => parsed.get(rowIndex)!);
  }

  /** Every row's `contents` from `fromRow` on, in order, read sequentially in large chunks. */
  async *passages(fromRow = 0): AsyncGenerator<string> {
    for await (const row of this.rowsInOrder(fromRow)) yield row.contents;
  }

  /** Every row from `fromRow` on, in order, read sequentially in large chunks. */
  async *rowsInOrder(fromRow = 0): AsyncGenerator<CorpusRow> {
    this.checkRowIndex(fromRow, this.rows + 1);
    let rowIndex = fromRow;
    while (rowIndex < this.rows) {
      await this.checkUnchanged();
      const start = this.offsets[rowIndex]!;
      let end = rowIndex + 1;
      while (end < this.rows && this.offsets[end + 1]! - start <= PASSAGE_READ_CHUNK) end++;
      const bytes = Buffer.allocUnsafe(this.offsets[end]! - start);
      await readFully(this.file, bytes, start);
      for (; rowIndex < end; rowIndex++) {
        yield this.parseLine(rowIndex, bytes, this.offsets[rowIndex]! - start, this.offsets[rowIndex + 1]! - start);
      }
    }
  }

  async close(): Promise<void> {
    await this.file.close();
  }

  /**
   * The offsets hold only for the file they were built from: a corpus edited in place would serve
   * other rows than the index means, or torn lines. One stat call a fetch finds it: while the path
   * names the opened file its stat is that file's, so a size or mtime that moved, or another file
   * (or none) at the path, means changed; once found, it stays changed.
   */
  private async checkUnchanged(): Promise<void> {
    if (!this.changed) {
      const named = await stat(this.path).catch(() => undefined);
      this.changed =
        named?.ino !== this.inode.ino ||
        named.dev !== this.inode.dev ||
        named.size !== this.identity.size ||
        named.mtimeMs !== this.identity.mtimeMs;
    }
    if (this.changed) {
      throw new ServiceError('corpus_changed', `corpus changed, restart the server (${this.path} is not the file the server loaded)`, {
        corpusPath: this.path,
      });
    }
  }

  private checkRowIndex(rowIndex: number, limit = this.rows): void {
    if (!Number.isInteger(rowIndex) || rowIndex < 0) {
      throw new ServiceError('bad_request', `row index must be a non-negative integer, got ${rowIndex}`);
    }
    if (rowIndex >= limit) {
      throw new ServiceError('not_found', `row ${rowIndex} is past the end of corpus ${this.path} (${this.rows} rows)`);
    }
  }

  private parseLine(rowIndex: number, bytes: Buffer, start: number, end: number): CorpusRow {
    if (end > start && bytes[end - 1] === 0x0a) end--;
    if (end > start && bytes[end - 1] === 0x0d) end--;
    const malformed = (why: string): ServiceError =>
      new ServiceError('internal', `corpus ${this.path}, line ${rowIndex + 1} (1-based; row ${rowIndex}): ${why}`, {
        corpusPath: this.path,
        line: rowIndex + 1,
      });
    let value: unknown;
    try {
      value = JSON.parse(bytes.toString('utf8', start, end));
    } catch (error) {
      throw malformed(`not valid JSON (${(error as Error).message})`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('not a JSON object');
    const row = value as Record<string, unknown>;
    if (typeof row.id !== 'string') throw malformed('"id" is not a string');
    if (typeof row.contents !== 'string') throw malformed('"contents" is not a string');
    return row as CorpusRow;
  }
}

/** Splits sorted row indices into runs whose byte ranges are close enough to read at once. */
function coalesce(sorted: readonly number[], offsets: Float64Array): number[][] {
  const runs: number[][] = [];
  for (const rowIndex of sorted) {
    const run = runs.at(-1);
    if (
      run &&
      offsets[rowIndex]! - offsets[run.at(-1)! + 1]! <= COALESCE_GAP &&
      offsets[rowIndex + 1]! - offsets[run[0]!]! <= MAX_COALESCED_READ
    ) {
      run.push(rowIndex);
    } else {
      runs.push([rowIndex]);
    }
  }
  return runs;
}
