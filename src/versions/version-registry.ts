import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomically } from '../file-io.js';
import { ServiceError } from '../errors.js';

/**
 * `converting`: its checkpoint is being converted into our model folder (then its index is
 * checked or built); `registered`: known, but without a usable index yet (its build was
 * cancelled or interrupted); `building`: an index job runs; `ready`: model and index present,
 * can be activated; `active`: serving; `failed`: the last conversion, build or activation
 * failed (`reason` says why).
 */
export type VersionState = 'converting' | 'registered' | 'building' | 'ready' | 'active' | 'failed';

export interface VersionRecord {
  id: string;
  label?: string;
  /** The model path as the client gave it. */
  source: string;
  /** Our model folder: `source` itself, or its ONNX conversion (absent until the conversion is done). */
  modelDir?: string;
  /** A prebuilt index, or where the index job writes one (absent until the checkpoint to build it with is converted). */
  indexPath?: string;
  /** The FAISS type (FlashRAG `--faiss_type` or factory string) its index job builds; absent (records before it, prebuilt indexes): Flat. */
  faissType?: string;
  corpusPath: string;
  sidecarPath?: string;
  state: VersionState;
  reason?: string;
  /** How the index build of a `registered` version stopped part way; building again resumes from its partial file. */
  buildStopped?: 'cancelled' | 'interrupted';
  /** Identifies the registration: the same checkpoint files, options and corpus again answer with this version. */
  fingerprint?: string;
  /** The client's `Idempotency-Key` of the registration that made this version. */
  idempotencyKey?: string;
  /** The latest index job of this version. */
  jobId?: string;
  createdAt: string;
  activatedAt?: string;
}

export type JobState = 'running' | 'done' | 'failed' | 'cancelled';

export interface JobRecord {
  id: string;
  versionId: string;
  state: JobState;
  indexPath: string;
  /** The type it builds; absent (jobs before it): Flat, encoded straight into `indexPath`. */
  faissType?: string;
  /** Rows encoded so far (a non-Flat type converts once all are). */
  rowsDone: number;
  rowsTotal: number;
  /** Rows a resumed build found already written. */
  resumedFrom: number;
  startedAt: string;
  finishedAt?: string;
  reason?: string;
}

interface RegistryDocument {
  format: typeof REGISTRY_FORMAT;
  nextVersion: number;
  nextJob: number;
  versions: VersionRecord[];
  jobs: JobRecord[];
  activeId?: string;
  /** Activated ids, oldest first; the last is the active one. Rollback pops it. */
  history: string[];
  /** A fleet activation under way: replicas prepare this version before `activeId` flips to it. */
  pending?: PendingActivation;
}

/** The version replicas are asked to prepare (load, warm) before the writer flips the active version to it. */
export interface PendingActivation {
  id: string;
  how: 'activate' | 'rollback';
  since: string;
}

/** What a replica reads of the registry: it never writes it, so it gets the document's facts, not the registry. */
export interface RegistrySnapshot {
  activeId?: string;
  pending?: PendingActivation;
  versions: VersionRecord[];
}

const REGISTRY_FORMAT = 'agentic-retriever/versions/1';
export const REGISTRY_FILE = 'registry.json';
/** Activation history kept for rollback; older entries are forgotten. */
const HISTORY_LIMIT = 32;

/** How long after a failed write (a full disk) the registry tries again to record a job's end. */
const RETRY_WRITE_MS = 5000;

/**
 * Retriever versions, their index jobs, the active version and the activation history, kept in
 * one JSON file that is replaced atomically (temp file, fsync, rename, directory fsync) on every
 * change, so a crash leaves either the old or the new state. Changes apply one at a time, and a
 * change whose write fails is undone, so memory never claims what the file lacks; except a job's
 * end, which has happened whatever the disk says: it stays, and its write is retried. Callers get
 * copies, never live records.
 */
export class VersionRegistry {
  private writing: Promise<void> = Promise.resolve();
  /** Set while memory holds a job's end that could not be written yet. */
  private unwritten = false;
  private retry?: NodeJS.Timeout;

  private constructor(
    readonly dir: string,
    private document: RegistryDocument,
  ) {}

  /**
   * Opens (or starts) the registry in `dir`. Work a restart interrupted is marked as such, with
   * the rows its partial file holds (`rowsOnDisk`), which a killed build never got to record.
   */
  static async open(dir: string, options: { rowsOnDisk?: (job: JobRecord) => Promise<number> } = {}): Promise<VersionRegistry> {
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, REGISTRY_FILE);
    let document: RegistryDocument;
    try {
      document = parseDocument(await readFile(file, 'utf8'), file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      document = { format: REGISTRY_FORMAT, nextVersion: 1, nextJob: 1, versions: [], jobs: [], history: [] };
    }
    const registry = new VersionRegistry(dir, document);
    const interrupted = document.jobs.filter((job) => job.state === 'running');
    for (const job of interrupted) {
      const rowsDone = options.rowsOnDisk ? await options.rowsOnDisk(job) : job.rowsDone;
      Object.assign(job, { state: 'failed', rowsDone, reason: 'interrupted by a server restart', finishedAt: new Date().toISOString() });
      const version = document.versions.find((candidate) => candidate.id === job.versionId);
      if (version?.state === 'building') {
        Object.assign(version, {
          state: 'registered',
          reason: `index build ${job.id} interrupted by a server restart at row ${rowsDone} of ${job.rowsTotal}`,
          buildStopped: 'interrupted',
        });
      }
    }
    if (interrupted.length > 0) await registry.write();
    return registry;
  }

  get activeId(): string | undefined {
    return this.document.activeId;
  }

  get pending(): PendingActivation | undefined {
    return this.document.pending && { ...this.document.pending };
  }

  /** Asks the replicas to prepare `id`; {@link markActive} or {@link clearPending} ends the request. */
  markPending(id: string, how: PendingActivation['how']): Promise<PendingActivation> {
    return this.change(() => {
      this.liveVersion(id);
      this.document.pending = { id, how, since: new Date().toISOString() };
      return { ...this.document.pending };
    });
  }

  /** Withdraws a fleet activation that failed (or that a writer's restart found unfinished): replicas drop what they prepared. */
  clearPending(): Promise<void> {
    return this.change(() => {
      delete this.document.pending;
    }, 'keep');
  }

  /** The version before the active one in the activation history. */
  get previousId(): string | undefined {
    const { history } = this.document;
    return history.length >= 2 ? history[history.length - 2] : undefined;
  }

  versions(): VersionRecord[] {
    return this.document.versions.map((version) => ({ ...version }));
  }

  version(id: string): VersionRecord {
    return { ...this.liveVersion(id) };
  }

  has(id: string): boolean {
    return this.document.versions.some((version) => version.id === id);
  }

  jobs(): JobRecord[] {
    return this.document.jobs.map((job) => ({ ...job }));
  }

  job(id: string): JobRecord {
    const job = this.document.jobs.find((candidate) => candidate.id === id);
    if (!job) throw new ServiceError('not_found', `no index job ${id}`);
    return { ...job };
  }

  /** The next unused `v<n>`; taken from then on even if never added. */
  newVersionId(): string {
    let id: string;
    do id = `v${this.document.nextVersion++}`;
    while (this.has(id));
    return id;
  }

  /** Adds a version; its id is `fields.id` or a {@link newVersionId}. */
  addVersion(fields: Omit<VersionRecord, 'id' | 'createdAt'> & { id?: string }): Promise<VersionRecord> {
    const id = fields.id ?? this.newVersionId();
    return this.change(() => {
      if (this.has(id)) throw new ServiceError('conflict', `version ${id} already exists`);
      const version: VersionRecord = { ...fields, id, createdAt: new Date().toISOString() };
      this.document.versions.push(version);
      return { ...version };
    });
  }

  /** Replaces the given fields of a version; `undefined` removes a field. */
  updateVersion(id: string, changes: Partial<Omit<VersionRecord, 'id'>>): Promise<VersionRecord> {
    return this.change(() => {
      const version = this.liveVersion(id);
      assignDefined(version, changes);
      return { ...version };
    });
  }

  /** Adds a running job and marks its version `building` with it, in one write. */
  startJob(fields: Omit<JobRecord, 'id' | 'state'>): Promise<JobRecord> {
    return this.change(() => {
      const version = this.liveVersion(fields.versionId);
      const job: JobRecord = { ...fields, state: 'running', id: `job-${this.document.nextJob++}` };
      this.document.jobs.push(job);
      assignDefined(version, { state: 'building', reason: undefined, buildStopped: undefined, jobId: job.id });
      return { ...job };
    });
  }

  /**
   * Records a job's end and its version's new state together, so no reader sees one without the
   * other. A failed write rejects, but the end stays recorded in memory and is written later.
   */
  endJob(id: string, changes: Partial<Omit<JobRecord, 'id'>>, versionChanges: Partial<Omit<VersionRecord, 'id'>>): Promise<void> {
    return this.change(() => {
      const job = this.document.jobs.find((candidate) => candidate.id === id);
      if (!job) throw new ServiceError('not_found', `no index job ${id}`);
      const version = this.liveVersion(job.versionId);
      assignDefined(job, changes);
      assignDefined(version, versionChanges);
    }, 'keep');
  }

  /** Writes what memory holds that the file lacks (a job's end a full disk refused), and stops retrying. */
  async close(): Promise<void> {
    clearTimeout(this.retry);
    try {
      if (this.unwritten) await this.change(() => undefined, 'keep');
    } finally {
      // A last write that fails arms another retry; a closed registry must not keep it.
      clearTimeout(this.retry);
    }
  }

  /**
   * Records `id` as the active version: the one it replaced becomes `ready`. An activation
   * appends `id` to the history; a rollback drops the active entry the history ended with. A failed
   * write keeps the change and writes it again later: the version already serves, and the registry
   * must not say otherwise.
   */
  markActive(id: string, how: 'activate' | 'rollback'): Promise<VersionRecord> {
    return this.change(() => {
      const version = this.liveVersion(id);
      const replaced = this.document.activeId;
      const replacedVersion = replaced !== undefined && replaced !== id && this.has(replaced) ? this.liveVersion(replaced) : undefined;
      // A remembered version that failed to load at startup stays failed.
      if (replacedVersion?.state === 'active') replacedVersion.state = 'ready';
      assignDefined(version, { state: 'active', reason: undefined, activatedAt: new Date().toISOString() });
      const { history } = this.document;
      if (how === 'rollback') history.pop();
      if (history[history.length - 1] !== id) history.push(id);
      history.splice(0, Math.max(0, history.length - HISTORY_LIMIT));
      this.document.activeId = id;
      delete this.document.pending;
      return { ...version };
    }, 'keep');
  }

  /** Forgets a version, its index jobs and its entries in the activation history. */
  removeVersion(id: string): Promise<VersionRecord> {
    return this.change(() => {
      const version = this.liveVersion(id);
      const { document } = this;
      document.versions = document.versions.filter((candidate) => candidate.id !== id);
      document.jobs = document.jobs.filter((job) => job.versionId !== id);
      // Dropping an entry can leave one version twice in a row; once is where a rollback goes.
      const kept = document.history.filter((entry) => entry !== id);
      document.history = kept.filter((entry, at) => at === 0 || entry !== kept[at - 1]);
      return { ...version };
    });
  }

  private liveVersion(id: string): VersionRecord {
    const version = this.document.versions.find((candidate) => candidate.id === id);
    if (!version) throw new ServiceError('not_found', `no version ${id}`);
    return version;
  }

  /**
   * Applies `apply` and writes the whole document, one change at a time. When the write fails the
   * change is undone (`undo`), or kept and written again later (`keep`). Ids handed out stay taken.
   */
  private change<T>(apply: () => T, onWriteFailure: 'undo' | 'keep' = 'undo'): Promise<T> {
    const run = this.writing.then(async () => {
      // Only an undo needs the state before: a kept change is not copied (the document holds every job).
      const before = onWriteFailure === 'undo' ? structuredClone(this.document) : undefined;
      const result = apply();
      try {
        await this.write();
      } catch (error) {
        if (onWriteFailure === 'keep') this.retryLater();
        else {
          const { nextVersion, nextJob } = this.document;
          this.document = { ...before!, nextVersion, nextJob };
        }
        throw error;
      }
      return result;
    });
    this.writing = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async write(): Promise<void> {
    await writeFileAtomically(path.join(this.dir, REGISTRY_FILE), [Buffer.from(`${JSON.stringify(this.document, null, 2)}\n`)]);
    this.unwritten = false;
  }

  private retryLater(): void {
    this.unwritten = true;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.change(() => undefined, 'keep').catch(() => undefined), RETRY_WRITE_MS).unref();
  }
}

/**
 * The registry in `dir` as its last atomic write left it, read without taking it over: a
 * replica's view, which never marks jobs interrupted or creates the folder.
 */
export async function readRegistrySnapshot(dir: string): Promise<RegistrySnapshot> {
  const file = path.join(dir, REGISTRY_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    throw new ServiceError('not_found', `no version registry at ${file}: a replica serves what a writer (serve with the training routes on this data dir) has registered; start the writer first`, { path: file });
  }
  const { activeId, pending, versions } = parseDocument(text, file);
  return { versions, ...(activeId !== undefined && { activeId }), ...(pending && { pending }) };
}

function assignDefined<T extends object>(target: T, changes: Partial<T>): void {
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined) delete (target as Record<string, unknown>)[key];
    else (target as Record<string, unknown>)[key] = value;
  }
}

function parseDocument(text: string, file: string): RegistryDocument {
  let document: RegistryDocument;
  try {
    document = JSON.parse(text) as RegistryDocument;
  } catch (error) {
    throw new ServiceError('internal', `${file} is not JSON (${(error as Error).message}): the version registry is damaged`);
  }
  if (document.format !== REGISTRY_FORMAT) {
    throw new ServiceError('internal', `${file}: unsupported version registry format ${String(document.format)}`);
  }
  return document;
}
