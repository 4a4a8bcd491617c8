import { watch, type FSWatcher } from 'node:fs';

/**
 * Calls `onChange` when a file in `dir` changes, and at least every `pollMs`: inotify sees a local
 * rename at once, but not one made by another host on a shared filesystem (NFS, a k8s volume),
 * which the poll catches within one interval.
 */
export class FolderWatch {
  private readonly watcher?: FSWatcher;
  private readonly poll: NodeJS.Timeout;
  private waiting: (() => void)[] = [];

  constructor(
    dir: string,
    pollMs: number,
    private readonly onChange: () => void = () => undefined,
  ) {
    try {
      this.watcher = watch(dir, () => this.changed());
      // A watch that breaks (the folder removed, a filesystem without inotify) leaves the poll.
      this.watcher.on('error', () => this.watcher?.close());
    } catch {
      this.watcher = undefined;
    }
    this.poll = setInterval(() => this.changed(), pollMs);
    this.poll.unref();
  }

  /** Resolves at the next change or poll tick. */
  next(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  close(): void {
    this.watcher?.close();
    clearInterval(this.poll);
    this.wake();
  }

  private changed(): void {
    this.wake();
    this.onChange();
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = [];
    waiting.forEach((resolve) => resolve());
  }
}
