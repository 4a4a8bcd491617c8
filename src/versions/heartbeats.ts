import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomically } from '../file-io.js';

/** Heartbeats live in `<dataDir>/replicas`, one file per server. */
export const HEARTBEAT_FOLDER = 'replicas';
const HEARTBEAT_FORMAT = 'agentic-retriever/heartbeat/1';
/** Beats a server may miss before it is taken for dead: one late write on a busy NFS mount is not a death. */
const MISSED_BEATS = 3;

/** One server as it last reported itself. */
export interface Heartbeat {
  /** `writer`: the server with the training routes, which flips the active version; `replica`: read-only. */
  role: 'writer' | 'replica';
  /** `host:port`, unique within a fleet; names its file. */
  name: string;
  host: string;
  port: number;
  pid: number;
  /** The version answering its `/retrieve` now. */
  active?: string;
  /** A version loading for a fleet activation. */
  preparing?: string;
  /** A version loaded and warmed, waiting for the registry to flip to it. */
  prepared?: string;
  /** How the version preparing or prepared makes room: beside the serving one, or in its place (which then serves nothing until the flip). */
  swap?: 'side-by-side' | 'replace';
  /** The last preparation that failed, the pending activation it was for (its `since`), and why. */
  failed?: { version: string; since: string; reason: string };
  ready: boolean;
  beatAt: string;
}

/** A heartbeat as readers see it: whether it is recent enough to count. */
export interface HeartbeatView extends Heartbeat {
  live: boolean;
}

/** A heartbeat file left out of the fleet: unreadable, not a heartbeat. */
export interface IgnoredHeartbeat {
  file: string;
  reason: string;
}

export interface FleetView {
  servers: HeartbeatView[];
  ignored: IgnoredHeartbeat[];
}

/**
 * The heartbeat folder of a data dir: each server of a fleet rewrites its own file every beat
 * (atomically, so a reader never sees half of one), and any server reads them all. A server that
 * has not beaten for {@link MISSED_BEATS} beats is not live: killed, or cut off from the data dir.
 */
export class HeartbeatBoard {
  readonly dir: string;

  constructor(
    dataDir: string,
    /** How often each server beats, in ms. */
    readonly beatMs: number,
  ) {
    this.dir = path.join(dataDir, HEARTBEAT_FOLDER);
  }

  async beat(heartbeat: Omit<Heartbeat, 'beatAt'>): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const record = { format: HEARTBEAT_FORMAT, ...heartbeat, beatAt: new Date().toISOString() };
    await writeFileAtomically(this.fileOf(heartbeat.name), [Buffer.from(`${JSON.stringify(record)}\n`)]);
  }

  /** Every server's last heartbeat, newest knowledge first; files that are not heartbeats are ignored, with why. */
  async read(now = Date.now()): Promise<FleetView> {
    let files: string[];
    try {
      files = (await readdir(this.dir)).filter((file) => file.endsWith('.json'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { servers: [], ignored: [] };
      throw error;
    }
    const servers: HeartbeatView[] = [];
    const ignored: IgnoredHeartbeat[] = [];
    for (const file of files.sort()) {
      const full = path.join(this.dir, file);
      try {
        const heartbeat = parseHeartbeat(await readFile(full, 'utf8'));
        servers.push({ ...heartbeat, live: now - Date.parse(heartbeat.beatAt) <= MISSED_BEATS * this.beatMs });
      } catch (error) {
        // Removed between the listing and the read: a server's own cleanup, not a fault.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        ignored.push({ file: full, reason: (error as Error).message });
      }
    }
    return { servers, ignored };
  }

  /** Takes a server out of the fleet at once (a clean shutdown), rather than after its missed beats. */
  async remove(name: string): Promise<void> {
    await rm(this.fileOf(name), { force: true });
  }

  private fileOf(name: string): string {
    return path.join(this.dir, `${name.replaceAll(/[^A-Za-z0-9._-]/g, '_')}.json`);
  }
}

/**
 * One server's heartbeat: written every beat and whenever its state changes, one write at a
 * time (each replaces the file through the same temp file), always with the state as it is then.
 */
export class HeartbeatBeacon {
  private readonly timer: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly board: HeartbeatBoard,
    private readonly describe: () => Omit<Heartbeat, 'beatAt'>,
    private readonly warn: (message: string) => void,
  ) {
    this.timer = setInterval(() => void this.beat(), board.beatMs);
    this.timer.unref();
  }

  /** Resolves once a heartbeat with the current state is written (a failure is warned about, not thrown: the next beat retries). */
  beat(): Promise<void> {
    this.writing = this.writing.then(async () => {
      if (this.stopped) return;
      await this.board.beat(this.describe()).catch((error: Error) => this.warn(`heartbeat not written: ${error.message}`));
    });
    return this.writing;
  }

  /** Stops beating and removes the heartbeat. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.writing;
    await this.board.remove(this.describe().name);
  }
}

/** The writer whose heartbeat is recent enough to count, if one beats. */
export function liveWriter(servers: readonly HeartbeatView[]): HeartbeatView | undefined {
  return servers.find((server) => server.role === 'writer' && server.live);
}

/** The server's name in the fleet: the address others reach it by. */
export function serverName(host: string, port: number): string {
  return `${host}:${port}`;
}

function parseHeartbeat(text: string): Heartbeat {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`not JSON (${(error as Error).message})`);
  }
  if (record === null || typeof record !== 'object' || record.format !== HEARTBEAT_FORMAT) throw new Error(`not a heartbeat (format ${String(record?.format)})`);
  const { role, name, host, port, pid, ready, beatAt } = record;
  if (role !== 'writer' && role !== 'replica') throw new Error(`role ${JSON.stringify(role)} is neither writer nor replica`);
  if (typeof name !== 'string' || typeof host !== 'string' || typeof port !== 'number' || typeof pid !== 'number' || typeof ready !== 'boolean') {
    throw new Error('name, host, port, pid or ready is missing or of the wrong type');
  }
  if (typeof beatAt !== 'string' || Number.isNaN(Date.parse(beatAt))) throw new Error(`beatAt ${JSON.stringify(beatAt)} is not a time`);
  const { format: _format, ...heartbeat } = record;
  return heartbeat as unknown as Heartbeat;
}
