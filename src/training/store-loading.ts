import { ServiceError } from '../errors.js';
import { TrainingExampleStore, type StoreLoadProgress } from './store.js';

/**
 * A training store opening in the background: the server listens while a large store is read
 * (about 22 µs a record), and the training routes answer 503 with the progress until it is open.
 */
export class LoadingTrainingStore {
  /** Settles when the store is open, or with the reason it could not be. */
  readonly loaded: Promise<TrainingExampleStore>;
  private store?: TrainingExampleStore;
  private failure?: Error;
  private progress: StoreLoadProgress = { records: 0, bytesRead: 0, totalBytes: 0 };

  constructor(dataDir: string, onProgress?: (progress: StoreLoadProgress) => void | Promise<void>) {
    this.loaded = TrainingExampleStore.open(dataDir, {
      onProgress: (progress) => {
        this.progress = progress;
        return onProgress?.(progress);
      },
    }).then((store) => (this.store = store));
    // Whoever waits on `loaded` sees a failure; until someone does, it must not crash the process.
    this.loaded.catch((error: Error) => (this.failure = error));
  }

  /** The open store; a `not_ready` ServiceError saying how far loading got while it is not. */
  current(): TrainingExampleStore {
    if (this.store) return this.store;
    if (this.failure) throw new ServiceError('internal', `the training store failed to load: ${this.failure.message}`);
    const { records, bytesRead, totalBytes } = this.progress;
    const percent = totalBytes === 0 ? 0 : Math.floor((100 * bytesRead) / totalBytes);
    throw new ServiceError(
      'not_ready',
      `the training store is still loading: ${records} records, ${percent}% of ${totalBytes} bytes read`,
    );
  }

  /** Waits for loading to settle, then closes the store if it opened. */
  async close(): Promise<void> {
    const store = await this.loaded.catch(() => undefined);
    await store?.close();
  }
}
