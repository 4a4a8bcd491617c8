import path from 'node:path';
import type { ActiveRetriever } from '../engine/active-retriever.js';
import type { Retriever, RetrieverLoadOptions } from '../engine/retriever.js';
import { ServiceError } from '../errors.js';
import { FolderWatch } from './folder-watch.js';
import { HeartbeatBeacon, type Heartbeat, type HeartbeatBoard } from './heartbeats.js';
import { loadRetriever, servableFiles, type VersionManagerOptions } from './version-manager.js';
import { readRegistrySnapshot, type PendingActivation, type RegistrySnapshot } from './version-registry.js';

export interface ReplicaOptions extends Pick<VersionManagerOptions, 'encoder' | 'index'> {
  dataDir: string;
  active: ActiveRetriever;
  board: HeartbeatBoard;
  /** How this server is reached: its heartbeat's name, host and port. */
  name: string;
  host: string;
  port: number;
  log?: (message: string, fields?: Record<string, unknown>, level?: 'info' | 'warn' | 'error') => void;
}

/** A version this replica loaded for a pending activation, not serving yet. */
interface Prepared {
  retriever: Retriever;
  pending: PendingActivation;
}

/**
 * A read-only server of a writer's registry: serves the version it marks active, prepares the
 * version of a pending activation beside it (loaded and warmed, then reported in the heartbeat),
 * and switches to it when the registry flips, within one poll of the registry. It never writes
 * the registry: what it knows of an activation it learns there, what the writer knows of it, from
 * the heartbeat it writes every beat.
 */
export class ReplicaFollower {
  private prepared?: Prepared;
  private preparing?: string;
  private failed?: Heartbeat['failed'];
  private watch?: FolderWatch;
  private readonly beacon: HeartbeatBeacon;
  /** One pass over the registry at a time; a change seen meanwhile runs one more. */
  private following?: Promise<void>;
  private again = false;
  private closed = false;

  private constructor(
    private readonly options: ReplicaOptions,
    private readonly registryDir: string,
  ) {
    this.beacon = new HeartbeatBeacon(options.board, () => this.heartbeat(), (message) => options.log?.(message, {}, 'warn'));
  }

  /**
   * Starts serving the version the registry in `dataDir` marks active, then follows it. A data
   * dir without a registry, or whose registry names no active version, is refused.
   */
  static async start(options: ReplicaOptions, progress: Pick<RetrieverLoadOptions, 'onStage'> = {}): Promise<ReplicaFollower> {
    const registryDir = path.resolve(options.dataDir, 'versions');
    const registry = await readRegistrySnapshot(registryDir);
    if (registry.activeId === undefined) {
      throw new ServiceError('not_ready', `the version registry in ${registryDir} marks no version active yet: the writer has not finished starting`);
    }
    const replica = new ReplicaFollower(options, registryDir);
    await replica.beacon.beat();
    try {
      await replica.switchTo(registry, registry.activeId, progress);
    } catch (error) {
      await replica.beacon.stop();
      throw error;
    }
    replica.watch = new FolderWatch(registryDir, options.board.beatMs, () => replica.follow());
    replica.follow();
    return replica;
  }

  /** Stops following, closes a prepared version and takes this replica's heartbeat out of the fleet. */
  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    await this.following;
    await this.prepared?.retriever.close();
    this.prepared = undefined;
    await this.beacon.stop();
  }

  private follow(): void {
    if (this.closed) return;
    if (this.following) {
      this.again = true;
      return;
    }
    this.following = this.followOnce()
      .catch((error: unknown) => this.options.log?.(`following the version registry failed: ${(error as Error).message}`, {}, 'error'))
      .finally(() => {
        this.following = undefined;
        if (this.again) {
          this.again = false;
          this.follow();
        }
      });
  }

  /** Brings this replica to what the registry says now: the active version served, the pending one prepared. */
  private async followOnce(): Promise<void> {
    const registry = await readRegistrySnapshot(this.registryDir);
    const { activeId, pending } = registry;
    if (activeId !== undefined && activeId !== this.options.active.current?.version) await this.switchTo(registry, activeId);
    if (this.prepared && this.prepared.pending.since !== pending?.since) {
      // Withdrawn (a replica failed, the writer's own load failed, or it restarted): the old version stays.
      this.options.log?.(`activation of version ${this.prepared.pending.id} withdrawn; dropping what was prepared for it`);
      await this.dropPrepared();
    }
    if (pending && pending.id !== this.options.active.current?.version && !this.prepared && this.failed?.since !== pending.since) {
      await this.prepare(registry, pending);
    }
  }

  private async prepare(registry: RegistrySnapshot, pending: PendingActivation): Promise<void> {
    this.preparing = pending.id;
    await this.beacon.beat();
    try {
      const retriever = await this.load(registry, pending.id);
      if (this.closed) {
        await retriever.close();
        return;
      }
      this.prepared = { retriever, pending };
      this.options.log?.(`version ${pending.id} prepared for the writer's ${pending.how}`);
    } catch (error) {
      this.failed = { version: pending.id, since: pending.since, reason: (error as Error).message };
      this.options.log?.(`version ${pending.id} could not be prepared: ${(error as Error).message}`, {}, 'error');
    } finally {
      this.preparing = undefined;
      await this.beacon.beat();
    }
  }

  /** Serves `id`: the version prepared for it, else loaded now (a replica that missed the preparation, or one starting). */
  private async switchTo(registry: RegistrySnapshot, id: string, progress: Pick<RetrieverLoadOptions, 'onStage'> = {}): Promise<void> {
    let retriever: Retriever;
    if (this.prepared?.pending.id === id) {
      retriever = this.prepared.retriever;
      this.prepared = undefined;
    } else retriever = await this.load(registry, id, progress);
    const released = this.options.active.activate(retriever);
    this.options.log?.(`serving version ${id}, as the registry says`);
    await this.beacon.beat();
    released.catch((error: Error) => this.options.log?.(`the replaced version failed to close: ${error.message}`, {}, 'error'));
  }

  private load(registry: RegistrySnapshot, id: string, progress: Pick<RetrieverLoadOptions, 'onStage'> = {}): Promise<Retriever> {
    const version = registry.versions.find((candidate) => candidate.id === id);
    if (!version) throw new ServiceError('internal', `the version registry names version ${id}, which it does not list`);
    return loadRetriever(servableFiles(version), id, this.options, progress);
  }

  private async dropPrepared(): Promise<void> {
    const prepared = this.prepared;
    this.prepared = undefined;
    await prepared?.retriever.close();
    await this.beacon.beat();
  }

  private heartbeat(): Omit<Heartbeat, 'beatAt'> {
    const { name, host, port, active } = this.options;
    return {
      role: 'replica',
      name,
      host,
      port,
      pid: process.pid,
      ready: active.readiness().ready,
      ...(active.current && { active: active.current.version }),
      ...(this.preparing !== undefined && { preparing: this.preparing }),
      ...(this.prepared && { prepared: this.prepared.pending.id }),
      ...(this.failed && { failed: this.failed }),
    };
  }
}
