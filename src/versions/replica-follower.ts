import path from 'node:path';
import type { ActiveRetriever } from '../engine/active-retriever.js';
import type { Retriever, RetrieverFiles, RetrieverLoadOptions } from '../engine/retriever.js';
import { ServiceError } from '../errors.js';
import type { SwapPlan } from '../index/search-memory.js';
import { FolderWatch } from './folder-watch.js';
import { HeartbeatBeacon, liveWriter, type Heartbeat, type HeartbeatBoard } from './heartbeats.js';
import { planVersionSwap, swapPlanning, type SwapPlanning } from './swap-planning.js';
import { loadRetriever, servableFiles, type VersionManagerOptions } from './version-manager.js';
import { readRegistrySnapshot, type PendingActivation, type RegistrySnapshot } from './version-registry.js';

export interface ReplicaOptions extends Pick<VersionManagerOptions, 'encoder' | 'index' | 'swapMode' | 'gpuMemory'> {
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
  swap: SwapPlan;
}

/**
 * A pending activation prepared in replace mode: the serving version is closed and the pending one
 * loads in its place, then waits (serving nothing) for the writer's decision.
 */
interface Replacement {
  pending: PendingActivation;
  /** Set once the pending version is loaded and warmed. */
  loaded: boolean;
  /** The registry flipped to it: it serves. */
  flip: () => void;
  /** The activation was withdrawn, or cannot finish: it is closed and the replaced version loaded again. */
  withdraw: (reason: string, level?: 'info' | 'warn') => void;
  /** Settles once one of the two serves. */
  done: Promise<void>;
}

/** Why a replacement ended without the pending version: the writer withdrew it or stopped beating, or the replica is shutting down. */
class ReplacementWithdrawn extends Error {
  constructor(
    message: string,
    readonly level: 'info' | 'warn' = 'info',
  ) {
    super(message);
  }
}

/**
 * A read-only server of a writer's registry: serves the version it marks active, prepares the
 * version of a pending activation (loaded and warmed, then reported in the heartbeat) and switches
 * to it when the registry flips, within one poll of the registry. It plans each swap's memory as
 * the writer does: beside the serving version when both fit, else in its place (replace mode: the
 * serving version is closed first, requests meanwhile wait for the next version as on a lone
 * server, and a withdrawal or a failed load brings it back). It never writes the registry: what
 * it knows of an activation it learns there, what the writer knows of it, from the heartbeat it
 * writes every beat.
 */
export class ReplicaFollower {
  private prepared?: Prepared;
  private replacement?: Replacement;
  /** A version the registry made active that this replica could not replace its own with; not retried, as each try pauses serving. */
  private unreachable?: string;
  private preparing?: string;
  private failed?: Heartbeat['failed'];
  private watch?: FolderWatch;
  private readonly beacon: HeartbeatBeacon;
  /** One pass over the registry at a time; a change seen meanwhile runs one more. */
  private following?: Promise<void>;
  private again = false;
  private closed = false;

  private readonly planning: SwapPlanning;

  private constructor(
    private readonly options: ReplicaOptions,
    private readonly registryDir: string,
  ) {
    this.beacon = new HeartbeatBeacon(options.board, () => this.heartbeat(), (message) => options.log?.(message, {}, 'warn'));
    this.planning = swapPlanning(options);
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

  /** Stops following, closes a prepared version (ends a replacement: the replaced version is not loaded again) and takes this replica's heartbeat out of the fleet. */
  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    await this.following;
    this.replacement?.withdraw('the replica is shutting down');
    await this.replacement?.done;
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
    if (this.replacement) {
      // Replacing for a pending activation: the writer's flip or withdrawal decides; its end follows again.
      const replacing = this.replacement.pending;
      if (activeId === replacing.id) this.replacement.flip();
      else if (pending?.since !== replacing.since) this.replacement.withdraw(`activation of version ${replacing.id} withdrawn`);
      else {
        // A writer that died before the flip never decides: serving nothing until it restarts would take this replica out meanwhile.
        const lost = await this.writerLost();
        if (lost) {
          const reason = `${lost} before the flip to version ${replacing.id}`;
          this.failed = { version: replacing.id, since: replacing.since, reason };
          this.replacement.withdraw(reason, 'warn');
        }
      }
      return;
    }
    if (activeId !== this.unreachable) this.unreachable = undefined;
    if (activeId !== undefined && activeId !== this.options.active.current?.version && activeId !== this.unreachable) await this.switchTo(registry, activeId);
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
      const current = this.options.active.current!;
      const swap = await planVersionSwap(current, this.files(registry, pending.id), this.planning);
      if (swap.mode === 'replace') {
        this.replaceFor(registry, pending, current, swap);
        return;
      }
      const retriever = await this.load(registry, pending.id);
      if (this.closed) {
        await retriever.close();
        return;
      }
      this.prepared = { retriever, pending, swap };
      this.options.log?.(`version ${pending.id} prepared for the writer's ${pending.how}`);
    } catch (error) {
      this.failed = { version: pending.id, since: pending.since, reason: (error as Error).message };
      this.options.log?.(`version ${pending.id} could not be prepared: ${(error as Error).message}`, {}, 'error');
    } finally {
      this.preparing = undefined;
      await this.beacon.beat();
    }
  }

  /**
   * Prepares `pending` in place of `current` (replace mode): runs in the background, so that the
   * passes over the registry that bring the writer's decision go on meanwhile.
   */
  private replaceFor(registry: RegistrySnapshot, pending: PendingActivation, current: Retriever, swap: SwapPlan): void {
    let flip!: () => void;
    let withdraw!: Replacement['withdraw'];
    const decision = new Promise<void>((resolve, reject) => {
      flip = resolve;
      withdraw = (reason, level) => reject(new ReplacementWithdrawn(reason, level));
    });
    decision.catch(() => undefined);
    const replacement: Replacement = { pending, loaded: false, flip, withdraw, done: Promise.resolve() };
    this.replacement = replacement;
    this.options.log?.(`preparing version ${pending.id} in place of version ${current.version} (replace): ${swap.reason}`, { swap }, swap.fits ? 'info' : 'warn');
    const load = async (): Promise<Retriever> => {
      const retriever = await this.load(registry, pending.id);
      replacement.loaded = true;
      this.options.log?.(`version ${pending.id} prepared for the writer's ${pending.how} in place of version ${current.version}, which serves nothing until the flip`);
      await this.beacon.beat();
      try {
        await decision;
      } catch (error) {
        await retriever.close();
        throw error;
      }
      return retriever;
    };
    replacement.done = this.options.active
      .replace(load, () => this.reload(current), swap)
      .then(
        ({ failure }) => {
          if (failure instanceof ReplacementWithdrawn) this.options.log?.(`${failure.message}; version ${current.version} was reloaded and serves again`, {}, failure.level);
          else if (failure) {
            const reason = `${failure.message}; version ${current.version} was reloaded and serves`;
            this.failed = { version: pending.id, since: pending.since, reason };
            this.options.log?.(`version ${pending.id} could not be prepared: ${reason}`, {}, 'error');
          } else this.options.log?.(`serving version ${pending.id}, as the registry says`);
        },
        (error: Error) => this.options.log?.(`replacing version ${current.version} by ${pending.id} failed: ${error.message}`, {}, this.closed ? 'info' : 'error'),
      )
      .finally(async () => {
        this.replacement = undefined;
        await this.beacon.beat();
        this.follow();
      });
  }

  /**
   * Serves `id`: the version prepared for it, else loaded now (a replica that missed the
   * preparation, or one starting), beside the serving one or, when the plan says so, in its place;
   * a replacement that fails leaves the replaced version serving and is not tried again.
   */
  private async switchTo(registry: RegistrySnapshot, id: string, progress: Pick<RetrieverLoadOptions, 'onStage'> = {}): Promise<void> {
    const { active } = this.options;
    if (this.prepared?.pending.id === id) {
      const { retriever, swap } = this.prepared;
      this.prepared = undefined;
      return this.serve(id, active.activate(retriever, swap));
    }
    const files = this.files(registry, id);
    const current = active.current;
    const swap = current && (await planVersionSwap(current, files, this.planning));
    if (current && swap?.mode === 'replace') {
      this.options.log?.(`switching to version ${id} in place of version ${current.version} (replace): ${swap.reason}`, { swap }, swap.fits ? 'info' : 'warn');
      const { failure } = await active.replace(() => loadRetriever(files, id, this.options, progress), () => this.reload(current), swap);
      if (failure) {
        this.unreachable = id;
        await this.beacon.beat();
        throw new ServiceError('internal', `version ${id}, active in the registry, did not load: ${failure.message}; version ${current.version} was reloaded and serves, and ${id} is not tried again until the registry names another version active`);
      }
      return this.serve(id, Promise.resolve());
    }
    const retriever = await loadRetriever(files, id, this.options, progress);
    return this.serve(id, active.activate(retriever, swap));
  }

  private async serve(id: string, released: Promise<void>): Promise<void> {
    this.options.log?.(`serving version ${id}, as the registry says`);
    await this.beacon.beat();
    released.catch((error: Error) => this.options.log?.(`the replaced version failed to close: ${error.message}`, {}, 'error'));
  }

  /** Why no writer can finish an activation now (its heartbeat is stale or gone); undefined while one beats, or when the heartbeats cannot be read. */
  private async writerLost(): Promise<string | undefined> {
    const view = await this.options.board.read().catch(() => undefined);
    if (!view) return undefined;
    if (liveWriter(view.servers)) return undefined;
    const lastBeat = view.servers.flatMap((server) => (server.role === 'writer' ? [server.beatAt] : [])).sort().at(-1);
    return lastBeat ? `the writer stopped beating (last at ${lastBeat})` : 'no writer beats in this data dir';
  }

  /** Loads a replaced version again; not while the replica shuts down. */
  private reload(replaced: Retriever): Promise<Retriever> {
    if (this.closed) return Promise.reject(new ServiceError('not_ready', `version ${replaced.version} is not reloaded: the replica is shutting down`));
    return loadRetriever(replaced.files, replaced.version, this.options);
  }

  private files(registry: RegistrySnapshot, id: string): RetrieverFiles {
    const version = registry.versions.find((candidate) => candidate.id === id);
    if (!version) throw new ServiceError('internal', `the version registry names version ${id}, which it does not list`);
    return servableFiles(version);
  }

  private async load(registry: RegistrySnapshot, id: string, progress: Pick<RetrieverLoadOptions, 'onStage'> = {}): Promise<Retriever> {
    return loadRetriever(this.files(registry, id), id, this.options, progress);
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
      ...(this.prepared && { prepared: this.prepared.pending.id, swap: this.prepared.swap.mode }),
      // A replacement is preparing until its version has loaded, then prepared until the writer decides.
      ...(this.replacement && { swap: 'replace' as const, ...(this.replacement.loaded ? { prepared: this.replacement.pending.id } : { preparing: this.replacement.pending.id }) }),
      ...(this.failed && { failed: this.failed }),
    };
  }
}
