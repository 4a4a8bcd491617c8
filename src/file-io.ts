import { constants, type Stats } from 'node:fs';
import { access, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ServiceError } from './errors.js';

/** The most a metadata file (config.json, tokenizer files, retriever.json) may hold: big vocabularies stay well below. */
export const METADATA_FILE_LIMIT = 64 * 1024 * 1024;

export async function pathExists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

/** Reads `buffer.length` bytes at `position`; a short file is an error, never silent zeros. */
export async function readFully(file: FileHandle, buffer: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await file.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

/** Writes all of `buffer` at `position`; a single write may stop short on large buffers. */
export async function writeFully(file: FileHandle, buffer: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesWritten } = await file.write(buffer, done, buffer.length - done, position + done);
    done += bytesWritten;
  }
}

/** Makes a file's contents durable (before it is renamed into place), or a folder's entries (after). */
export async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a created or renamed entry of `dir` durable. */
export function syncDirectory(dir: string): Promise<void> {
  return syncFile(dir);
}

/**
 * Writes beside the target, syncs and renames, so a reader never sees a half-written file, then
 * syncs the folder so the rename itself survives a crash.
 */
export async function writeFileAtomically(path: string, parts: readonly Uint8Array[]): Promise<void> {
  await writeFileAtomicallyWith(path, async (file) => {
    let position = 0;
    for (const part of parts) {
      await writeFully(file, part, position);
      position += part.length;
    }
  });
}

/** {@link writeFileAtomically} for contents too large to hold at once: `write` fills the file. */
export async function writeFileAtomicallyWith(path: string, write: (file: FileHandle) => Promise<void>): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  try {
    const file = await open(temp, 'w');
    try {
      await write(file);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
    await syncDirectory(dirname(path));
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

function notRegular(stats: Stats): string | undefined {
  if (stats.isFile()) return undefined;
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO (named pipe)';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

export interface RegularFileOptions {
  /** Refuse larger files before reading them. */
  maxBytes?: number;
  /** The not_found message for a missing file, instead of the system's. */
  missing?: string;
}

function checkStats(stats: Stats, file: string, what: string, maxBytes = Infinity): void {
  const kind = notRegular(stats);
  if (kind) throw new ServiceError('bad_request', `${what} ${file} is ${kind}, not a regular file`, { path: file });
  if (stats.size > maxBytes) {
    throw new ServiceError('bad_request', `${what} ${file} is ${stats.size} bytes, more than the ${maxBytes} it may have`, { path: file });
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function cannotOpen(error: unknown, file: string, what: string, missing?: string): ServiceError {
  const message = `${what} ${file}: cannot open (${(error as Error).message})`;
  if (isMissing(error)) return new ServiceError('not_found', missing ?? message, { path: file });
  return new ServiceError('bad_request', message, { path: file });
}

/**
 * Opens a user-given path for reading only if it is a regular file (of at most `maxBytes`).
 * O_NONBLOCK keeps open() on a FIFO from waiting for a writer, which would hold one of libuv's
 * few pool threads forever; fstat then refuses it, a directory, or a device such as /dev/zero
 * behind a symlink. `what` names the file in errors, e.g. "corpus".
 */
export async function openRegularFile(file: string, what: string, options: RegularFileOptions = {}): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw cannotOpen(error, file, what, options.missing);
  }
  try {
    checkStats(await handle.stat(), file, what, options.maxBytes);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** A user-given regular file's bytes, refusing anything else or anything over `maxBytes` before reading. */
export async function readRegularFile(file: string, what: string, options: RegularFileOptions = {}): Promise<Buffer> {
  const handle = await openRegularFile(file, what, { maxBytes: METADATA_FILE_LIMIT, ...options });
  try {
    const bytes = Buffer.allocUnsafe((await handle.stat()).size);
    await readFully(handle, bytes, 0);
    return bytes;
  } finally {
    await handle.close();
  }
}

/**
 * Checks a path that another library opens by name (ONNX Runtime, the tokenizer, copyFile): stat()
 * does not block on a FIFO the way their open() would. False only for an `optional` file that is
 * missing.
 */
export async function checkRegularFile(file: string, what: string, options: RegularFileOptions & { optional?: boolean } = {}): Promise<boolean> {
  let stats: Stats;
  try {
    stats = await stat(file);
  } catch (error) {
    if (options.optional && isMissing(error)) return false;
    throw cannotOpen(error, file, what, options.missing);
  }
  checkStats(stats, file, what, options.maxBytes);
  return true;
}
