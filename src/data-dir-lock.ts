import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import lockfile, { type LockOptions } from 'proper-lockfile';
import { ServiceError } from './errors.js';

export const DATA_DIR_LOCK = 'serve.lock';
/** proper-lockfile's floor: a lock not refreshed for this long was left by a server that died. */
const STALE_MS = 5_000;
const RETRY_MS = 1_000;

export interface DataDirLockLog {
  info(message: string): void;
  error(message: string): void;
}

/**
 * Holds `<dataDir>/serve.lock` while a server runs, so a second server started on the same data
 * dir refuses to start instead of interleaving its writes to the training store, the version
 * registry and the model cache with the first one's. A lock left by a killed server goes stale
 * within STALE_MS; a start meanwhile waits it out. Resolves to the release function.
 */
export async function lockDataDir(dataDir: string, log: DataDirLockLog): Promise<() => Promise<void>> {
  const lockfilePath = path.join(dataDir, DATA_DIR_LOCK);
  const unwritable = (error: Error) =>
    new ServiceError('bad_request', `the training routes need a writable --data_dir, and ${dataDir} is not (${error.message}); serving without them needs none`);
  await mkdir(dataDir, { recursive: true }).catch((error: Error) => {
    throw unwritable(error);
  });
  const options: LockOptions = {
    lockfilePath,
    stale: STALE_MS,
    // The default throws from a timer, which would kill a serving process over a late refresh.
    onCompromised: (error) => log.error(`the data dir lock ${lockfilePath} was lost (${error.message}); another server may now write to ${dataDir}`),
  };
  try {
    return await lockfile.lock(dataDir, options);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw unwritable(error as Error);
  }
  const retries = Math.ceil(STALE_MS / RETRY_MS) + 1;
  log.info(`the data dir lock ${lockfilePath} is held; waiting up to ${(retries * RETRY_MS) / 1_000} s in case the server that took it has died`);
  try {
    return await lockfile.lock(dataDir, { ...options, retries: { retries, minTimeout: RETRY_MS, maxTimeout: RETRY_MS } });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
    throw new ServiceError(
      'conflict',
      `the data dir ${dataDir} is in use by another running server (${lockfilePath}); give each server its own --data_dir`,
    );
  }
}
