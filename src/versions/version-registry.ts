import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomically } from '../file-io.js';
import { ServiceError } from '../errors.js';

/**
 * `registered`: known, but without a usable index yet (its build was cancelled or interrupted);
 * `building`: an index job runs; `ready`: model and index present, can be activated;
 * `active`: serving; `failed`: the last build or activation failed (`reason` says why).
 */
export type VersionState = 'registered' | 'building' | 'ready' | 'active' | 'failed';

export interface VersionRecord {
  id: string;
  label?: string;
  /** The model path as the client gave it. */
  source: string;
  /** Our model folder: `source` itself, or its ONNX conversion. */
  modelDir: string;
  indexPath: string;
  corpusPath: string;
  sidecarPath?: string;
  state: VersionState;
  reason?: string;
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
}

const REGISTRY_FORMAT = 'agentic-retriever/versions/1';
export const REGISTRY_FILE = 'registry.json';
/** Activation history kept for rollback; older entries are forgotten. */
const HISTORY_LIMIT = 32;

/**
 * Retriever versions, their index jobs, the active version and the activation history, kept in
 * one JSON file that is replaced atomically (temp file, fsync, rename, directory fsync) on every
 * change, so a crash leaves either the old or the new state. Callers get copies, never live records.
 */
export class VersionRegistry {
  private saving: Promise<void> = Promise.resolve();

  private constructor(
    readonly dir: string,
    private readonly document: RegistryDocument,
  ) {}

  /**
   * Opens (or starts) the registry in `dir`. Work a restart interrupted is marked as such, with
   * the rows its partial file holds (`rowsOnDisk`), which a killed build never got to record.
   */
  static async open(dir: string, options: { rowsOnDisk?: (indexPath: string) => Promise<number> } = {}): Promise<VersionRegistry> {
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
      const rowsDone = options.rowsOnDisk ? await options.rowsOnDisk(job.indexPath) : job.rowsDone;
      Object.assign(job, { state: 'failed', rowsDone, reason: 'interrupted by a server restart', finishedAt: new Date().toISOString() });
      const version = document.versions.find((candidate) => candidate.id === job.versionId);
      if (version?.state === 'building') {
        Object.assign(version, {
          state: 'registered',
          reason: `index build ${job.id} interrupted by a server restart at row ${rowsDone} of ${job.rowsTotal}; POST /training/versions/${version.id}/build resumes it from its partial file`,
        });
      }
    }
    if (interrupted.length > 0) await registry.save();
    return registry;
  }

  get activeId(): string | undefined {
    return this.document.activeId;
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
  async addVersion(fields: Omit<VersionRecord, 'id' | 'createdAt'> & { id?: string }): Promise<VersionRecord> {
    const id = fields.id ?? this.newVersionId();
    if (this.has(id)) throw new ServiceError('conflict', `version ${id} already exists`);
    const version: VersionRecord = { ...fields, id, createdAt: new Date().toISOString() };
    this.document.versions.push(version);
    await this.save();
    return { ...version };
  }

  /** Replaces the given fields of a version; `undefined` removes a field. */
  async updateVersion(id: string, changes: Partial<Omit<VersionRecord, 'id'>>): Promise<VersionRecord> {
    const version = this.liveVersion(id);
    assignDefined(version, changes);
    await this.save();
    return { ...version };
  }

  async addJob(fields: Omit<JobRecord, 'id'>): Promise<JobRecord> {
    const job: JobRecord = { ...fields, id: `job-${this.document.nextJob++}` };
    this.document.jobs.push(job);
    await this.save();
    return { ...job };
  }

  /** Records a job's end and its version's new state together, so no reader sees one without the other. */
  async endJob(id: string, changes: Partial<Omit<JobRecord, 'id'>>, versionChanges: Partial<Omit<VersionRecord, 'id'>>): Promise<void> {
    const job = this.document.jobs.find((candidate) => candidate.id === id);
    if (!job) throw new ServiceError('not_found', `no index job ${id}`);
    const version = this.liveVersion(job.versionId);
    assignDefined(job, changes);
    assignDefined(version, versionChanges);
    await this.save();
  }

  /**
   * Records `id` as the active version: the one it replaced becomes `ready`. An activation
   * appends `id` to the history; a rollback drops the active entry the history ended with.
   */
  async markActive(id: string, how: 'activate' | 'rollback'): Promise<VersionRecord> {
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
    await this.save();
    return { ...version };
  }

  /** Forgets a version, its index jobs and its entries in the activation history. */
  async removeVersion(id: string): Promise<VersionRecord> {
    const version = this.liveVersion(id);
    const { document } = this;
    document.versions = document.versions.filter((candidate) => candidate.id !== id);
    document.jobs = document.jobs.filter((job) => job.versionId !== id);
    // Dropping an entry can leave one version twice in a row; once is where a rollback goes.
    const kept = document.history.filter((entry) => entry !== id);
    document.history = kept.filter((entry, at) => at === 0 || entry !== kept[at - 1]);
    await this.save();
    return { ...version };
  }

  private liveVersion(id: string): VersionRecord {
    const version = this.document.versions.find((candidate) => candidate.id === id);
    if (!version) throw new ServiceError('not_found', `no version ${id}`);
    return version;
  }

  /** Writes the whole document; saves run one after another, each writing the state as of its turn. */
  private save(): Promise<void> {
    const file = path.join(this.dir, REGISTRY_FILE);
    const run = this.saving.then(() =>
      writeFileAtomically(file, [Buffer.from(`${JSON.stringify(this.document, null, 2)}\n`)]),
    );
    this.saving = run.catch(() => undefined);
    return run;
  }
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
