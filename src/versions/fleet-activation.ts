import { performance } from 'node:perf_hooks';
import { ServiceError } from '../errors.js';
import { FolderWatch } from './folder-watch.js';
import type { FleetView, HeartbeatBoard, HeartbeatView } from './heartbeats.js';
import type { PendingActivation, VersionRegistry } from './version-registry.js';

export interface FleetActivationOptions {
  board: HeartbeatBoard;
  /** How long every live replica has to prepare a version before the activation fails. */
  prepareTimeoutMs: number;
  log?: (message: string, fields?: Record<string, unknown>, level?: 'info' | 'warn' | 'error') => void;
}

/** A replica that reported it cannot prepare the version: the activation fails with its name and reason. */
export class ReplicaPrepareError extends ServiceError {
  constructor(
    readonly replica: string,
    readonly versionId: string,
    readonly reason: string,
    readonly activeId: string | undefined,
  ) {
    super('conflict', `replica ${replica} could not prepare version ${versionId}: ${reason}; version ${activeId ?? '(none)'} stays active on every server`);
  }
}

/**
 * The writer's half of a two-phase activation across replicas sharing its data dir. Phase one
 * records the version as pending in the registry and waits until every live replica reports it
 * loaded and warmed; phase two (after the registry's flip, which the replicas follow) waits until
 * each serves it. Replicas report through their heartbeats; one that stops beating is left out.
 */
export class FleetActivation {
  /** Heartbeat problems already logged, so a poll every beat does not repeat them. */
  private readonly warned = new Set<string>();

  constructor(
    private readonly registry: VersionRegistry,
    private readonly options: FleetActivationOptions,
  ) {}

  /** The fleet as its heartbeats show it; corrupt files and servers that stopped beating are logged once each. */
  async view(): Promise<FleetView> {
    const view = await this.options.board.read();
    for (const { file, reason } of view.ignored) this.warnOnce(`${file}: ${reason}`, `heartbeat file ${file} ignored: ${reason}`);
    for (const server of view.servers.filter((candidate) => !candidate.live)) {
      this.warnOnce(`${server.name}@${server.beatAt}`, `${server.role} ${server.name} has not beaten since ${server.beatAt}: left out of the fleet`);
    }
    return view;
  }

  /**
   * Phase one begins: asks the live, ready replicas to prepare `id` (records it as pending in the
   * registry, which they follow) and resolves with their names; none live, nothing is asked.
   */
  async ask(id: string, how: PendingActivation['how']): Promise<string[]> {
    const replicas = (await this.liveReplicas()).filter((replica) => replica.ready).map((replica) => replica.name);
    if (replicas.length === 0) return [];
    await this.registry.markPending(id, how);
    this.options.log?.(`asking ${replicas.length} replica(s) to prepare version ${id}: ${replicas.join(', ')}`, { replicas });
    return replicas;
  }

  /**
   * Phase one ends: resolves once each of `replicas` still beating reports `id` prepared. Rejects
   * when one reports it cannot (with its name and reason), at the timeout, or once `abandon`
   * fires; the caller then {@link withdraw}s the request, and the active version is untouched.
   */
  async prepared(id: string, replicas: string[], abandon: AbortSignal): Promise<void> {
    if (replicas.length === 0) return;
    const { since } = this.registry.pending!;
    await this.until(
      replicas,
      (replica) => {
        if (replica.failed?.since === since) throw new ReplicaPrepareError(replica.name, id, replica.failed.reason, this.registry.activeId);
        return replica.prepared === id || replica.active === id;
      },
      `to prepare version ${id}`,
      abandon,
    );
  }

  /** Withdraws a pending activation: replicas drop what they prepared for it. */
  async withdraw(): Promise<void> {
    if (this.registry.pending === undefined) return;
    await this.registry.clearPending();
  }

  /**
   * Phase two: resolves once each of `replicas` still beating serves `id`, with those that do.
   * The flip is recorded already, so a replica late past the timeout is logged, not undone.
   */
  async switched(id: string, replicas: string[]): Promise<string[]> {
    if (replicas.length === 0) return [];
    try {
      await this.until(replicas, (replica) => replica.active === id, `to switch to version ${id}`);
    } catch (error) {
      this.options.log?.(`${(error as Error).message}; the registry names ${id} active, and they switch when they next read it`, {}, 'error');
    }
    const live = await this.liveReplicas();
    return live.filter((replica) => replica.active === id).map((replica) => replica.name);
  }

  private async liveReplicas(): Promise<HeartbeatView[]> {
    return (await this.view()).servers.filter((server) => server.role === 'replica' && server.live);
  }

  /**
   * Waits until `done` holds for every named replica that still beats (one that stops beating
   * meanwhile was killed: it starts again on whatever is active), or the prepare timeout.
   */
  private async until(replicas: string[], done: (replica: HeartbeatView) => boolean, what: string, abandon?: AbortSignal): Promise<void> {
    const { board, prepareTimeoutMs } = this.options;
    const watch = new FolderWatch(board.dir, board.beatMs);
    const deadline = performance.now() + prepareTimeoutMs;
    const stop = () => watch.close();
    abandon?.addEventListener('abort', stop);
    try {
      for (;;) {
        abandon?.throwIfAborted();
        const live = await this.liveReplicas();
        const waitingFor = replicas.flatMap((name) => {
          const replica = live.find((candidate) => candidate.name === name);
          return replica && !done(replica) ? [replica] : [];
        });
        if (waitingFor.length === 0) return;
        if (performance.now() > deadline) {
          const states = waitingFor.map((replica) => `${replica.name} (serving ${replica.active ?? 'nothing'}${replica.preparing ? `, preparing ${replica.preparing}` : ''})`);
          throw new ServiceError('timeout', `replica(s) ${states.join(', ')} did not get ${what} within --replica_prepare_timeout_ms ${prepareTimeoutMs}`);
        }
        await watch.next();
      }
    } finally {
      abandon?.removeEventListener('abort', stop);
      watch.close();
    }
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.options.log?.(message, {}, 'warn');
  }
}
