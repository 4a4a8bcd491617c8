import { endianness } from 'node:os';
import { dirname } from 'node:path';
import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { readFully, syncDirectory, writeFileAtomically, writeFully } from '../file-io.js';
import { ServiceError } from '../errors.js';
import { encodeIxfiHeader, ixfiFileBytes, IXFI_HEADER_BYTES, type IxfiHeader } from './ixfi-header.js';

const PARTIAL_FORMAT = 'agentic-retriever/ixfi-partial/1';

export interface IxfiWriterOptions {
  dimension: number;
  /** Rows the finished file will hold; `finish()` refuses any other count. */
  rows: number;
  /**
   * JSON data naming what is being built (encoder, corpus). A partial file is resumed only when
   * its description is equal, so vectors of two encoders never end up in one index.
   */
  description: Record<string, unknown>;
  /** Delete an existing partial build instead of resuming or refusing it. */
  restart?: boolean;
  /** Bytes `finish()` writes after the last row (an index part's description); faiss reads only up to the rows. */
  trailer?: Uint8Array;
}

interface PartialDescription {
  format: string;
  dimension: number;
  rows: number;
  description: Record<string, unknown>;
}

export function partialPaths(outPath: string): { vectors: string; description: string } {
  return { vectors: `${outPath}.partial`, description: `${outPath}.partial.json` };
}

/**
 * Writes an IxFI file row batch by row batch. Until `finish()` everything lives in
 * `<out>.partial` (+ `.partial.json` describing the build), so a killed build never looks
 * complete, and reopening with the same description resumes after the last whole row.
 */
export class IxfiWriter {
  private constructor(
    readonly outPath: string,
    readonly dimension: number,
    readonly rows: number,
    /** Rows already present when this writer opened (0 for a fresh build). */
    readonly resumedFrom: number,
    private file: FileHandle | undefined,
    private written: number,
    private readonly trailer: Uint8Array | undefined,
  ) {}

  static async open(outPath: string, options: IxfiWriterOptions): Promise<IxfiWriter> {
    if (endianness() !== 'LE') throw new ServiceError('internal', 'IxFI files are little-endian; this host is not');
    const { dimension, rows } = options;
    const paths = partialPaths(outPath);
    const wanted: PartialDescription = {
      format: PARTIAL_FORMAT,
      dimension,
      rows,
      description: JSON.parse(JSON.stringify(options.description)) as Record<string, unknown>,
    };
    if (options.restart) await rm(paths.vectors, { force: true });
    const existing = await openExisting(paths.vectors);
    if (existing) {
      const stored = await readPartialDescription(paths.description);
      if (!stored || !isDeepStrictEqual(stored, wanted)) {
        await existing.close();
        throw new ServiceError(
          'conflict',
          `${paths.vectors} is a partial index build of a different encoder, corpus or shape` +
            ` (see ${paths.description}); delete it or restart the build to discard it`,
          { partialPath: paths.vectors, stored, wanted },
        );
      }
      return IxfiWriter.resume(outPath, wanted, existing, options.trailer);
    }
    await writeFileAtomically(paths.description, [Buffer.from(JSON.stringify(wanted, null, 2) + '\n')]);
    const file = await open(paths.vectors, 'w');
    await writeFully(file, encodeIxfiHeader({ dimension, rows }), 0);
    return new IxfiWriter(outPath, dimension, rows, 0, file, 0, options.trailer);
  }

  private static async resume(outPath: string, wanted: PartialDescription, file: FileHandle, trailer: Uint8Array | undefined): Promise<IxfiWriter> {
    const { dimension, rows } = wanted;
    const header = Buffer.alloc(IXFI_HEADER_BYTES);
    const { size } = await file.stat();
    if (size >= IXFI_HEADER_BYTES) await readFully(file, header, 0);
    if (size < IXFI_HEADER_BYTES || !header.equals(encodeIxfiHeader({ dimension, rows }))) {
      await file.close();
      throw new ServiceError('conflict', `${partialPaths(outPath).vectors} has a damaged header; delete it to restart`);
    }
    // A kill can land mid-row (or mid-trailer): keep whole rows only.
    const written = wholeRows(size, { dimension, rows });
    await file.truncate(ixfiFileBytes({ dimension, rows: written }));
    return new IxfiWriter(outPath, dimension, rows, written, file, written, trailer);
  }

  get rowsWritten(): number {
    return this.written;
  }

  /** Appends `vectors.length / dimension` rows, row-major. */
  async append(vectors: Float32Array): Promise<void> {
    const file = this.openFile();
    if (vectors.length % this.dimension !== 0) {
      throw new ServiceError('internal', `vector batch of ${vectors.length} floats is not whole rows of ${this.dimension}`);
    }
    const count = vectors.length / this.dimension;
    if (this.written + count > this.rows) {
      throw new ServiceError('internal', `appending ${count} rows would exceed the ${this.rows} rows of ${this.outPath}`);
    }
    const bytes = new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength);
    await writeFully(file, bytes, ixfiFileBytes({ dimension: this.dimension, rows: this.written }));
    this.written += count;
  }

  /** Makes the file durable and gives it its final name; only now does `outPath` exist. */
  async finish(): Promise<void> {
    const file = this.openFile();
    if (this.written !== this.rows) {
      throw new ServiceError('internal', `${this.outPath}: ${this.written} of ${this.rows} rows written, cannot finish`);
    }
    if (this.trailer) await writeFully(file, this.trailer, ixfiFileBytes({ dimension: this.dimension, rows: this.rows }));
    await file.sync();
    await file.close();
    this.file = undefined;
    const paths = partialPaths(this.outPath);
    await rename(paths.vectors, this.outPath);
    await syncDirectory(dirname(this.outPath));
    await rm(paths.description, { force: true });
  }

  /**
   * Stops without finishing: the partial build stays for a later resume. The bytes of a batch
   * whose write failed (a full disk) are cut off, which gives their space back at once.
   */
  async close(): Promise<void> {
    if (!this.file) return;
    const file = this.file;
    this.file = undefined;
    try {
      await file.truncate(ixfiFileBytes({ dimension: this.dimension, rows: this.written }));
    } finally {
      await file.close();
    }
  }

  private openFile(): FileHandle {
    if (!this.file) throw new ServiceError('internal', `index writer for ${this.outPath} is closed`);
    return this.file;
  }
}

/** Whole rows in an IxFI file of `size` bytes, at most the rows its header announces. */
function wholeRows(size: number, { dimension, rows }: IxfiHeader): number {
  return Math.max(0, Math.min(rows, Math.floor((size - IXFI_HEADER_BYTES) / (dimension * 4))));
}

/** Whole rows a stopped (cancelled, failed or killed) build of `outPath` left in its partial file; 0 without one. */
export async function partialRowsWritten(outPath: string): Promise<number> {
  const file = await openExisting(partialPaths(outPath).vectors);
  if (!file) return 0;
  try {
    const { size } = await file.stat();
    if (size < IXFI_HEADER_BYTES) return 0;
    const header = Buffer.alloc(IXFI_HEADER_BYTES);
    await readFully(file, header, 0);
    // The header is ours (written at the start of the build), so its two counts are read as they are.
    const dimension = header.readInt32LE(4);
    return dimension > 0 ? wholeRows(size, { dimension, rows: Number(header.readBigInt64LE(8)) }) : 0;
  } finally {
    await file.close();
  }
}

async function openExisting(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r+');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function readPartialDescription(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
}

