import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { ServiceError } from './errors.js';

export const DATA_DIR_LOCK = 'serve.lock';
/** proper-lockfile's floor: a lock not refreshed for this long was left by a server that died. */
const STALE_MS = 5_000;

/**
 * Holds `<dataDir>/serve.lock` while a server runs, so a second server started on the same data
 * dir refuses to start instead of interleaving its writes to the training store, the version
 * registry and the model cache with the first one's. A lock left by a killed server goes stale
 * within STALE_MS; a start meanwhile waits it out. Resolves to the release function.
 */
export async function lockDataDir(dataDir: string, warn: (message: string) => void): Promise<() => Promise<void>> {
  await mkdir(dataDir, { recursive: true });
  const lockfilePath = path.join(dataDir, DATA_DIR_LOCK);
  try {
    return await lockfile.lock(dataDir, {
      lockfilePath,
      stale: STALE_MS,
      retries: { retries: Math.ceil(STALE_MS / 1_000) + 1, minTimeout: 1_000, maxTimeout: 1_000 },
      // The default throws from a timer, which would kill a serving process over a late refresh.
      onCompromised: (error) => warn(`the data dir lock ${lockfilePath} was lost (${error.message}); another server may now write to ${dataDir}`),
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
    throw new ServiceError(
      'conflict',
      `the data dir ${dataDir} is in use by another running server (${lockfilePath}); give each server its own --data_dir`,
    );
  }
}
