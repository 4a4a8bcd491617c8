import { access, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

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

/** Makes a created or renamed entry of `dir` durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
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
