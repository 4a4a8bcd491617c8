import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Mutex, tryAcquire } from 'async-mutex';
import { readBertConfig } from '../encoder/hf-checkpoint.js';
import type { WeightBitsSetting } from '../onnx/int8-quantization.js';
import { readManifest } from '../encoder/manifest.js';
import type { EncoderOptions } from '../encoder/onnx-encoder.js';
import type { GpuMemoryReader } from '../onnx/gpu-memory.js';
import type { VectorIndexOptions } from '../index/open-index.js';
import type { SwapModeSetting, SwapPlan } from '../index/search-memory.js';
import type { ActiveRetriever } from '../engine/active-retriever.js';
import { Retriever, type RetrieverFiles, type RetrieverLoadOptions } from '../engine/retriever.js';
import { ServiceError, type ErrorCode } from '../errors.js';
import { indexFileName } from '../index/build-index.js';
import { checkFaissType } from '../index/convert-host.js';
import { FLAT_TYPE, rowsEncoded } from '../index/typed-build.js';
import { pathExists } from '../file-io.js';
import { readFaissHeader } from '../index/faiss-index-kinds.js';
import { FleetActivation, type FleetActivationOptions } from './fleet-activation.js';
import { planVersionSwap, swapPlanning, UnplannableVersionError, type SwapPlanning } from './swap-planning.js';
import { IndexJobs, type JobView } from './index-jobs.js';
import { resolveModelFolderOffThread } from '../engine/model-folder-thread.js';
import { modelFolderKind, modelFolderStamp } from '../engine/model-folder.js';
import type { FleetView } from './heartbeats.js';
import { VersionRegistry, type PendingActivation, type VersionRecord } from './version-registry.js';

/** The version the launch flags name. */
export const INITIAL_VERSION = 'initial';

export interface VersionManagerOptions {
  /** Service state folder; versions live in `<dataDir>/versions`. */
  dataDir: string;
  active: ActiveRetriever;
  /** How versions are loaded for serving. */
  encoder?: EncoderOptions;
  /** How versions' indexes are opened for search. */
  index?: VectorIndexOptions;
  /** `--swap_mode`: how an activation makes room for the new version (default auto: see {@link planVersionSwap}). */
  swapMode?: SwapModeSetting;
  /** How index jobs encode the corpus. */
  buildEncoder?: EncoderOptions;
  /** Passages per encoder call in index jobs (default 64). */
  buildBatchSize?: number;
  /** Also build half-precision graphs when converting checkpoints. */
  fp16: boolean;
  /** Also build int8 graphs, with weights of these bits, when converting checkpoints. */
  int8?: WeightBitsSetting;
  /** Replicas sharing the data dir: activations become two-phase across them (absent: this server alone). */
  fleet?: Omit<FleetActivationOptions, 'log'>;
  /**
   * Where CUDA devices' free memory is read for swap plans (default nvidia-smi on PATH, see
   * {@link gpuMemoryReader}); a device it cannot tell about is planned against the budget alone.
   */
  gpuMemory?: GpuMemoryReader;
  /** `error` for what needs someone's attention: a failed build, a state that could not be recorded; `warn` for a risk taken on the user's word. */
  log?: (message: string, fields?: Record<string, unknown>, level?: 'info' | 'warn' | 'error') => void;
}

export interface RegisterRequest {
  modelPath: string;
  /** A prebuilt FAISS IndexFlatIP of the served corpus made with this model; without one, a background job builds it. */
  indexPath?: string;
  label?: string;
  /** With no `indexPath`: the FAISS type its index job builds (FlashRAG `--faiss_type` or a factory string; default Flat). */
  faissType?: string;
  /** The client's key for this registration: the same key again answers with the version it made. */
  idempotencyKey?: string;
}

export interface Registration {
  version: VersionRecord;
  /** The version's latest index job, if it has one. */
  job?: JobView;
  /**
   * `new`: registered now, its checkpoint already a model folder of ours; `converting`: registered
   * now, its checkpoint converting in the background; `existing`: this registration (or one of
   * the same files and options) was made before, and this is its version as it is now.
   */
  outcome: 'new' | 'converting' | 'existing';
}

export interface VersionList {
  versions: VersionRecord[];
  active?: string;
  /** Where a rollback goes. */
  previous?: string;
  /** A two-phase activation under way: the replicas are preparing this version. */
  pending?: PendingActivation;
}

export interface RemovalResult {
  /** The version as it was. */
  version: VersionRecord;
  /** Files and folders deleted: only what this service made for the version. */
  removed: string[];
}

export interface ActivationResult {
  version: VersionRecord;
  /** The version it replaced, if any. */
  previous?: string;
  /** Loading, validating and warming the new version. */
  loadMs: number;
  /** From the swap (replace mode: the pause) until the replaced version's last request ended and it was closed. */
  releaseMs: number;
  /** How the new version took over and why, with the memory plan it was decided by; absent when nothing served before. */
  swap?: SwapPlan;
  /** Replace mode: how long no version searched (requests waited in the queue). */
  pausedMs?: number;
  /** With replicas: those serving the version when the activation answered (each prepared it before the flip). */
  replicas?: string[];
}

/** A registration refused for one of the files it names: which one, and what is wrong with it. */
export class RegistrationError extends ServiceError {
  constructor(
    code: ErrorCode,
    readonly field: 'modelPath' | 'indexPath' | 'faissType',
    readonly problem: string,
  ) {
    super(code, `${field}: ${problem}`);
  }
}

/** A version with an index job running is not deleted: the job is to be cancelled first. */
export class VersionBuildingError extends ServiceError {
  constructor(
    readonly versionId: string,
    readonly jobId: string,
  ) {
    super('conflict', `version ${versionId} is building its index; cancel job ${jobId} first`);
  }
}

/** What is under way on one version that another request on it must not run beside. */
type VersionWork = 'build' | 'remove';

const BUSY: Record<VersionWork, string> = {
  build: 'is starting its index build',
  remove: 'is being deleted',
};

/** A build start and a deletion of one version exclude each other: the one that comes second is refused. */
export class VersionBusyError extends ServiceError {
  constructor(
    readonly versionId: string,
    readonly underWay: VersionWork,
  ) {
    super('conflict', `version ${versionId} ${BUSY[underWay]}`);
  }
}

/** An idempotency key names one registration: the same key with another request is refused. */
export class IdempotencyKeyReusedError extends ServiceError {
  constructor(
    readonly key: string,
    readonly version: VersionRecord,
    /** Whether that registration asked for the index to be built rather than bringing one. */
    readonly buildsIndex: boolean,
  ) {
    super('conflict', `idempotency key ${JSON.stringify(key)} was used for another registration (version ${version.id})`);
  }
}

/** A version without a usable index yet (converting, building, or its build stopped) is not activated. */
export class NoIndexYetError extends ServiceError {
  constructor(readonly version: VersionRecord) {
    super('conflict', `version ${version.id} has no index yet (${version.state}${version.reason ? `: ${version.reason}` : ''})`);
  }
}

/** A finished switch: what serves now, with the facts an activation reports besides the version. */
type Switch = Omit<ActivationResult, 'version'> & { retriever: Retriever };

/**
 * Registers checkpoints as versions, builds their indexes, and activates them: a version is
 * loaded, validated and warmed beside the serving one, then swapped in with one reference
 * change, or, when the two do not fit in memory together, loaded in its place (replace mode). One activation (or rollback) runs at a time; another one meanwhile is a conflict.
 */
export class VersionManager {
  private readonly activation = new Mutex();
  /** Registrations one at a time: each sees the versions the ones before it added, so a repeat finds its version. */
  private readonly registration = new Mutex();
  /**
   * Conversions one at a time: two of one checkpoint (under two labels) would write the same
   * cached folder, where the second now finds the first's; and on a small host two at once end no sooner.
   */
  private readonly conversion = new Mutex();
  /** Conversions past their thread, recording their outcome: a shutdown waits for these, not for a thread still converting. */
  private readonly finishing = new Set<Promise<void>>();
  /**
   * Per version, the build start or deletion under way: a build started while the version's files
   * are deleted would write into a folder about to go, and a deletion during a build's start would
   * pass the `building` check before the job marks it.
   */
  private readonly versionWork = new Map<string, { lock: Mutex; underWay: VersionWork }>();
  /** Set by close: a version that finishes loading afterwards is closed instead of served. */
  private closing = false;
  private readonly fleet?: FleetActivation;
  private readonly planning: SwapPlanning;

  private constructor(
    private readonly registry: VersionRegistry,
    private readonly indexJobs: IndexJobs,
    private readonly options: VersionManagerOptions,
  ) {
    if (options.fleet) this.fleet = new FleetActivation(registry, { ...options.fleet, log: options.log });
    this.planning = swapPlanning(options);
  }

  static async open(options: VersionManagerOptions): Promise<VersionManager> {
    const registry = await VersionRegistry.open(path.resolve(options.dataDir, 'versions'), {
      rowsOnDisk: (job) => rowsEncoded(job.indexPath, job.faissType, job.rowsTotal),
    });
    const jobs = new IndexJobs(registry, {
      batchSize: options.buildBatchSize ?? 64,
      ...(options.buildEncoder && { encoder: options.buildEncoder }),
      onEnd: (job) =>
        options.log?.(`index job ${job.id} of version ${job.versionId}: ${job.state}${job.reason ? ` (${job.reason})` : ''}`, { ...job }, job.state === 'failed' ? 'error' : 'info'),
      onError: (error) =>
        options.log?.(`index job state could not be recorded (it is kept in memory and written once the disk takes it): ${(error as Error).message}`, {}, 'error'),
    });
    return new VersionManager(registry, jobs, options);
  }

  /**
   * Loads and activates what serving starts with: the remembered active version, or the launch
   * files as version `initial`. A remembered version that no longer loads is marked failed and
   * the launch files serve instead.
   */
  async restore(files: RetrieverFiles, progress: Pick<RetrieverLoadOptions, 'onStage'> = {}): Promise<Retriever> {
    // The server listens while it loads: an activation asked meanwhile is a conflict, not a second load beside this one.
    const retriever = await this.activation.runExclusive(() => this.restoreServing(files, progress));
    // A conversion runs in a thread of the process: one a restart interrupted starts over now
    // that a corpus is served (its staged output was never renamed into place).
    for (const version of this.registry.versions().filter((candidate) => candidate.state === 'converting')) {
      this.options.log?.(`resuming the checkpoint conversion of version ${version.id}, interrupted by a restart`, { version });
      this.convertInBackground(version.id);
    }
    return retriever;
  }

  private async restoreServing(files: RetrieverFiles, progress: Pick<RetrieverLoadOptions, 'onStage'>): Promise<Retriever> {
    const interrupted = this.registry.pending;
    if (interrupted) {
      // The writer died between asking the replicas to prepare and the flip: they still serve the active version.
      this.options.log?.(`the activation of version ${interrupted.id} was interrupted by a restart before the flip; withdrawn, version ${this.registry.activeId} stays active`, { interrupted });
      await this.registry.clearPending();
    }
    await this.adoptInitial(files);
    const rememberedId = this.registry.activeId;
    if (rememberedId !== undefined && rememberedId !== INITIAL_VERSION && this.registry.has(rememberedId)) {
      const remembered = this.registry.version(rememberedId);
      // Its index rows are rows of another corpus: serving it would answer from the wrong passages.
      const reason = corpusMismatch(remembered, files.corpusPath);
      if (reason !== undefined) {
        await this.registry.updateVersion(rememberedId, { state: 'failed', reason });
        this.options.log?.(`remembered active version ${rememberedId} not served: ${reason}; serving the launch files`);
      } else {
        this.options.log?.(`serving remembered active version ${rememberedId} instead of the launch files`, { version: remembered });
        try {
          return (await this.switchTo(rememberedId, 'activate', progress)).retriever;
        } catch (error) {
          this.options.log?.(`remembered version ${rememberedId} failed to load (${(error as Error).message}); serving the launch files`);
        }
      }
    }
    return (await this.switchTo(INITIAL_VERSION, 'activate', progress)).retriever;
  }

  /** Records the launch files as version `initial`; they always win over what was recorded before. */
  private async adoptInitial(files: RetrieverFiles): Promise<void> {
    const fields = {
      source: files.modelDir,
      modelDir: files.modelDir,
      indexPath: files.indexPath,
      corpusPath: files.corpusPath,
      sidecarPath: files.sidecarPath,
    };
    if (!this.registry.has(INITIAL_VERSION)) {
      await this.registry.addVersion({ id: INITIAL_VERSION, label: 'launch flags', state: 'ready', ...fields });
    } else {
      await this.registry.updateVersion(INITIAL_VERSION, fields);
    }
  }

  /** Every version, with the active one and the one a rollback goes to. */
  list(): VersionList {
    return { active: this.registry.activeId, previous: this.registry.previousId, pending: this.registry.pending, versions: this.registry.versions() };
  }

  version(id: string): VersionRecord {
    return this.registry.version(id);
  }

  jobs(): JobView[] {
    return this.indexJobs.list();
  }

  job(id: string): JobView {
    return this.indexJobs.view(id);
  }

  /** Stops a running index job; resolves once its end is recorded. */
  cancelJob(id: string): Promise<JobView> {
    return this.indexJobs.cancel(id);
  }

  /**
   * Registers a checkpoint folder with a prebuilt index or an index job. Everything checkable
   * without converting is checked up front (the folder, the index against the model's dimension
   * and the served corpus), so a refused request changes nothing. A model folder of ours is
   * registered at once (`new`); a Hugging Face BERT folder is `converting` when this resolves,
   * and a background pipeline converts it off the event loop, then checks the prebuilt index or
   * builds one. A registration repeated with the same idempotency key, or of the same checkpoint
   * files with the same options, answers with the version it made (`existing`).
   */
  register(request: RegisterRequest): Promise<Registration> {
    return this.registration.runExclusive(() => this.registerOnce(request));
  }

  private async registerOnce(request: RegisterRequest): Promise<Registration> {
    const corpus = this.servedCorpus();
    const source = path.resolve(request.modelPath);
    const indexPath = request.indexPath === undefined ? undefined : path.resolve(request.indexPath);
    // A type is built, so only a registration without a prebuilt index has one.
    const faissType = indexPath === undefined ? (request.faissType ?? FLAT_TYPE) : undefined;
    const modelProblem = (error: ServiceError) => {
      throw new RegistrationError(error.code === 'internal' ? 'internal' : 'bad_request', 'modelPath', error.message);
    };
    // Before the folder is read: a retry answers with its version even once the checkpoint is gone.
    if (request.idempotencyKey !== undefined) {
      const keyed = this.registry.versions().find((version) => version.idempotencyKey === request.idempotencyKey);
      if (keyed && !this.sameRequest(keyed, source, indexPath, faissType, request.label)) {
        throw new IdempotencyKeyReusedError(request.idempotencyKey, keyed, this.buildsIndex(keyed));
      }
      if (keyed) return this.existing(keyed);
    }
    const folder = await modelFolderKind(source).catch(modelProblem);
    const fingerprint = createHash('sha256')
      .update(JSON.stringify([await modelFolderStamp(source).catch(modelProblem), indexPath ?? buildOptions(faissType), request.label ?? null, corpus.corpusPath]))
      .digest('hex');
    const same = this.registry.versions().find((version) => version.fingerprint === fingerprint);
    if (same) return this.existing(same);

    const manifest = folder.kind === 'model' ? await readManifest(source).catch(modelProblem) : undefined;
    // A checkpoint encodes into its hidden states: config.json gives their width before any conversion.
    const dimension = manifest?.dimension ?? (await readBertConfig(source).catch(modelProblem)).hiddenSize;
    if (indexPath !== undefined) {
      await readFaissHeader(indexPath, { expectDimension: dimension, expectRows: corpus.rows }).catch((error: ServiceError) => {
        throw new RegistrationError('bad_request', 'indexPath', error.message);
      });
    }
    if (faissType !== undefined) await checkedFaissType(dimension, faissType);
    const fields = {
      id: this.registry.newVersionId(),
      ...(request.label !== undefined && { label: request.label }),
      source,
      ...(indexPath !== undefined && { indexPath }),
      ...(faissType !== undefined && { faissType }),
      corpusPath: corpus.corpusPath,
      ...(corpus.sidecarPath !== undefined && { sidecarPath: corpus.sidecarPath }),
      fingerprint,
      ...(request.idempotencyKey !== undefined && { idempotencyKey: request.idempotencyKey }),
    };
    if (manifest === undefined) {
      const version = await this.registry.addVersion({ ...fields, state: 'converting' });
      this.convertInBackground(version.id);
      return { version, outcome: 'converting' };
    }
    if (indexPath !== undefined) return { version: await this.registry.addVersion({ ...fields, modelDir: source, state: 'ready' }), outcome: 'new' };
    await this.registry.addVersion({ ...fields, modelDir: source, indexPath: this.builtIndexPath(fields.id, manifest.name, faissType), state: 'registered' });
    const job = await this.indexJobs.start(fields.id, corpus.rows);
    return { version: this.registry.version(fields.id), job, outcome: 'new' };
  }

  /** Whether `version` was registered with this request's model, index (or build of the same type) and label. */
  private sameRequest(version: VersionRecord, source: string, indexPath: string | undefined, faissType: string | undefined, label: string | undefined): boolean {
    const sameIndex =
      indexPath === undefined
        ? this.buildsIndex(version) && (version.faissType ?? FLAT_TYPE) === faissType
        : !this.buildsIndex(version) && version.indexPath === indexPath;
    return version.source === source && sameIndex && version.label === label;
  }

  private existing(version: VersionRecord): Registration {
    return { version, ...(version.jobId !== undefined && { job: this.indexJobs.view(version.jobId) }), outcome: 'existing' };
  }

  /** Whether the version's index is ours to build: none chosen yet (it is converting), or one in its folder. */
  private buildsIndex(version: VersionRecord): boolean {
    return version.indexPath === undefined || version.indexPath.startsWith(this.registry.dir + path.sep);
  }

  private builtIndexPath(id: string, modelName: string, faissType: string | undefined): string {
    return path.join(this.registry.dir, id, indexFileName(modelName, faissType));
  }

  /**
   * The rest of a checkpoint's registration, after the request was answered: converts it, then
   * checks its prebuilt index against the converted model (`ready`), or starts its index job
   * (`building`). A failure marks the version failed with the reason. One that ends while the
   * server shuts down records nothing, so the next start resumes the conversion.
   */
  private convertInBackground(id: string): void {
    void this.convert(id)
      .catch(async (error: unknown) => {
        // What a shutdown cut short is not the version's fault: it stays `converting` for the next start.
        if (this.closing) return;
        const reason = (error as Error).message;
        this.options.log?.(`version ${id} failed: ${reason}`, {}, 'error');
        await this.registry.updateVersion(id, { state: 'failed', reason });
      })
      .catch((error: unknown) => this.options.log?.(`version ${id}'s failure could not be recorded: ${(error as Error).message}`, {}, 'error'));
  }

  private async convert(id: string): Promise<void> {
    const version = this.registry.version(id);
    const corpus = this.servedCorpus();
    const mismatch = corpusMismatch(version, corpus.corpusPath);
    if (mismatch !== undefined) throw new Error(mismatch);
    const request = {
      dir: version.source,
      cacheDir: path.resolve(this.options.dataDir, 'models'),
      fp16: this.options.fp16,
      int8: this.options.int8,
    };
    // One queued behind another does not start once the server shuts down.
    const modelDir = await this.conversion
      .runExclusive(async () => (this.closing ? undefined : resolveModelFolderOffThread(request)))
      .catch((error: Error) => {
        throw new Error(`checkpoint conversion failed: ${error.message}`);
      });
    // A shutdown does not wait for a converting thread (an e5-base takes a minute or more); the next start resumes it.
    if (modelDir === undefined || this.closing) return;
    const finishing = this.finishConversion(version, modelDir, corpus.rows);
    this.finishing.add(finishing);
    try {
      await finishing;
    } finally {
      this.finishing.delete(finishing);
    }
  }

  private async finishConversion({ id, indexPath, faissType }: VersionRecord, modelDir: string, corpusRows: number): Promise<void> {
    const manifest = await readManifest(modelDir);
    if (indexPath !== undefined) {
      await readFaissHeader(indexPath, { expectDimension: manifest.dimension, expectRows: corpusRows }).catch((error: Error) => {
        throw new Error(`the prebuilt index does not fit the converted model: ${error.message}`);
      });
      await this.registry.updateVersion(id, { modelDir, state: 'ready' });
      this.options.log?.(`version ${id} converted; its prebuilt index fits: ready`);
      return;
    }
    // Still `converting` until the job marks it `building`: a build asked for meanwhile is refused.
    await this.registry.updateVersion(id, { modelDir, indexPath: this.builtIndexPath(id, manifest.name, faissType) });
    const job = await this.indexJobs.start(id, corpusRows);
    this.options.log?.(`version ${id} converted; index job ${job.id} started`);
  }

  /**
   * Starts (or resumes) building a version's index, as the type it was registered with or as
   * `faissType`. Another type than before is built into its own file, encoding the corpus again.
   */
  build(versionId: string, faissType?: string): Promise<JobView> {
    return this.onVersion(versionId, 'build', () => this.startBuild(versionId, faissType));
  }

  private async startBuild(versionId: string, faissType?: string): Promise<JobView> {
    const version = this.registry.version(versionId);
    if (version.state !== 'registered' && version.state !== 'failed') {
      throw new ServiceError('conflict', `version ${versionId} is ${version.state}; only a registered or failed version's index is built`);
    }
    if (!this.buildsIndex(version)) {
      throw new ServiceError('conflict', `version ${versionId} uses a prebuilt index (${version.indexPath}); register the checkpoint again to build one`);
    }
    if (version.modelDir === undefined) {
      throw new ServiceError('conflict', `version ${versionId} has no converted model (${version.reason}); delete it and register the checkpoint again`);
    }
    const corpus = this.servedCorpus();
    const mismatch = corpusMismatch(version, corpus.corpusPath);
    if (mismatch !== undefined) throw new ServiceError('conflict', `version ${versionId} was ${mismatch}`);
    if (faissType !== undefined && faissType !== (version.faissType ?? FLAT_TYPE)) {
      const manifest = await readManifest(version.modelDir);
      await checkedFaissType(manifest.dimension, faissType);
      // The registration's fingerprint named the old type: a repeat of that registration now makes a new version.
      await this.registry.updateVersion(versionId, { faissType, indexPath: this.builtIndexPath(versionId, manifest.name, faissType), fingerprint: undefined });
    }
    return this.indexJobs.start(versionId, corpus.rows);
  }

  /**
   * Makes `id` serve new requests, here and on every live replica; resolves once the version it
   * replaced is released and the replicas serve `id`.
   */
  activate(id: string): Promise<ActivationResult> {
    return this.exclusively(() => this.switchFleetTo(id, 'activate'));
  }

  /** Activates the version that was active before the current one. */
  rollback(): Promise<ActivationResult> {
    return this.exclusively(async () => {
      const previous = this.registry.previousId;
      if (previous === undefined) throw new ServiceError('conflict', 'there is no previously active version to roll back to');
      return this.switchFleetTo(previous, 'rollback');
    });
  }

  /**
   * Forgets a version and deletes what this service made for it: its folder under versions/ (a
   * built index, a partial one) and its ONNX conversion under models/ unless another version
   * uses it. A prebuilt index or a model folder the client named is left where it is.
   */
  remove(id: string): Promise<RemovalResult> {
    // The version first: a build asked for once this has begun is refused, whatever the deletion waits on.
    return this.onVersion(id, 'remove', () => this.exclusively(() => this.removeNow(id)));
  }

  private async removeNow(id: string): Promise<RemovalResult> {
    const version = this.registry.version(id);
    if (id === INITIAL_VERSION) {
      throw new ServiceError('conflict', `version ${id} is the launch flags' files; restart with other flags instead of deleting it`);
    }
    if (id === this.registry.activeId || this.options.active.current?.version === id) {
      throw new ServiceError('conflict', `version ${id} is active; activate or roll back to another version first`);
    }
    if (version.state === 'converting') {
      throw new ServiceError('conflict', `version ${id} is converting its checkpoint; delete it once the conversion has ended`);
    }
    if (version.state === 'building') {
      // startJob marks a version building and names its job in one change.
      throw new VersionBuildingError(id, version.jobId!);
    }
    const owned = [path.join(this.registry.dir, id)];
    const modelCache = path.resolve(this.options.dataDir, 'models');
    const { modelDir } = version;
    const modelShared = this.registry.versions().some((other) => other.id !== id && other.modelDir === modelDir);
    if (modelDir?.startsWith(modelCache + path.sep) && !modelShared) owned.push(modelDir);
    // Files first: a crash midway leaves the version listed, and deleting it again finishes the
    // job, where the other order would leave its index on disk with nothing pointing at it.
    const removed: string[] = [];
    for (const file of owned) {
      if (!(await pathExists(file))) continue;
      await rm(file, { recursive: true, force: true });
      removed.push(file);
    }
    await this.registry.removeVersion(id);
    this.options.log?.(`version ${id} deleted`, { removed });
    return { version, removed };
  }

  /**
   * Lets conversions recording their outcome finish (one still in its thread stays `converting`
   * for the next start), cancels index jobs, waits for a running activation to end, and writes
   * what a full disk held back.
   */
  async close(): Promise<void> {
    this.closing = true;
    // Before the jobs: a conversion finishing now may start one, which is then cancelled with the rest.
    await Promise.allSettled(this.finishing);
    await this.indexJobs.close();
    await this.activation.waitForUnlock();
    await this.registry.close().catch((error: Error) =>
      this.options.log?.(`the version registry could not be written on shutdown: ${error.message}`, {}, 'error'),
    );
  }

  /** The fleet as its heartbeats show it; empty for a server without replicas. */
  async fleetView(): Promise<FleetView> {
    return (await this.fleet?.view()) ?? { servers: [], ignored: [] };
  }

  /**
   * With live replicas, two phases: they prepare `id` while this server loads it (one that
   * cannot fails the activation, and nothing changes anywhere), then this server switches and
   * the registry flips, which the replicas follow. Without replicas, just this server's switch.
   */
  private async switchFleetTo(id: string, how: 'activate' | 'rollback'): Promise<ActivationResult> {
    if (!this.fleet || this.options.active.current?.version === id) return this.result(await this.switchTo(id, how));
    servableFiles(this.registry.version(id));
    const replicas = await this.fleet.ask(id, how);
    const abandon = new AbortController();
    const prepared = this.fleet.prepared(id, replicas, abandon.signal);
    // Awaited by switchTo before its flip; a failure before then is seen below.
    prepared.catch(() => undefined);
    let switched: Switch;
    try {
      switched = await this.switchTo(id, how, {}, prepared);
    } catch (error) {
      abandon.abort();
      await prepared.catch(() => undefined);
      await this.fleet.withdraw();
      throw error;
    }
    return { ...this.result(switched), replicas: await this.fleet.switched(id, replicas) };
  }

  /** Runs `work` as the one build start or deletion of version `id`; another one meanwhile is refused with {@link VersionBusyError}. */
  private onVersion<T>(id: string, underWay: VersionWork, work: () => Promise<T>): Promise<T> {
    const entry = this.versionWork.get(id) ?? { lock: new Mutex(), underWay };
    this.versionWork.set(id, entry);
    return tryAcquire(entry.lock, new VersionBusyError(id, entry.underWay)).runExclusive(async () => {
      entry.underWay = underWay;
      try {
        return await work();
      } finally {
        this.versionWork.delete(id);
      }
    });
  }

  private exclusively<T>(work: () => Promise<T>): Promise<T> {
    const busy = new ServiceError('conflict', 'another activation, rollback or deletion is in progress; retry when it has finished');
    return tryAcquire(this.activation, busy).runExclusive(work);
  }

  /**
   * Plans the swap's memory, then loads, validates and warms `id` beside the serving version (or
   * in its place: {@link replace}), swaps it in and records it as active; resolves once the
   * version it replaced is released. A load failure marks the version failed with the reason and
   * leaves serving as it was.
   */
  private async switchTo(
    id: string,
    how: 'activate' | 'rollback',
    progress: Pick<RetrieverLoadOptions, 'onStage'> = {},
    /** Settles once the replicas have prepared `id` (or cannot): nothing flips before. */
    replicasPrepared: Promise<void> = Promise.resolve(),
  ): Promise<Switch> {
    const version = this.registry.version(id);
    const current = this.options.active.current;
    if (current?.version === id) return { retriever: current, loadMs: 0, releaseMs: 0 };
    const files = servableFiles(version);
    const load = (loading: RetrieverFiles, versionId: string) => loadRetriever(loading, versionId, this.options, progress);
    const loadNew = () => load(files, id).catch(async (error: unknown) => Promise.reject(await this.loadFailed(id, error)));
    const swap = current && (await this.planSwap(current, files, id));
    if (swap) this.options.log?.(`activating version ${id} in place of ${current!.version}, ${swap.mode}: ${swap.reason}`, { swap }, swap.fits ? 'info' : 'warn');
    if (current && swap?.mode === 'replace') {
      // Replacing pauses this server's serving: not before the replicas are ready to follow.
      await replicasPrepared;
      return this.replace(id, how, current, swap, loadNew, () => load(current.files, current.version));
    }
    const started = performance.now();
    const loading = loadNew();
    loading.catch(() => undefined);
    await replicasPrepared.catch(async (error: unknown) => {
      await loading.then(
        (retriever) => retriever.close(),
        () => undefined,
      );
      throw error;
    });
    const retriever = await loading;
    const loaded = performance.now();
    if (this.closing) {
      await retriever.close();
      throw new ServiceError('not_ready', `version ${id} loaded while the server was shutting down; not activated`);
    }
    const released = this.options.active.activate(retriever, swap);
    await this.registry.markActive(id, how);
    await released;
    return { retriever, ...(current && { previous: current.version }), ...(swap && { swap }), loadMs: loaded - started, releaseMs: performance.now() - loaded };
  }

  /**
   * Replace mode: the serving version `current` is closed before `id` loads (requests wait
   * meanwhile). When `id` fails to load, `current` is reloaded and stays active, and the
   * activation fails with the reason.
   */
  private async replace(
    id: string,
    how: 'activate' | 'rollback',
    current: Retriever,
    swap: SwapPlan,
    loadNew: () => Promise<Retriever>,
    reload: () => Promise<Retriever>,
  ): Promise<Switch> {
    const started = performance.now();
    let loadMs = 0;
    const timedLoad = async () => {
      const loading = performance.now();
      const retriever = await loadNew();
      loadMs = performance.now() - loading;
      return retriever;
    };
    const { retriever, failure, releaseMs } = await this.options.active.replace(timedLoad, reload, swap);
    const pausedMs = performance.now() - started;
    if (failure) {
      this.options.log?.(`version ${current.version} reloaded after version ${id} failed to load; it serves again`, { pausedMs }, 'error');
      const code = failure instanceof ServiceError ? failure.code : 'internal';
      throw new ServiceError(code, `${failure.message}; version ${current.version} was reloaded and serves`);
    }
    await this.registry.markActive(id, how);
    return { retriever, previous: current.version, swap, loadMs, releaseMs, pausedMs };
  }

  /** {@link planVersionSwap}; an index or model `id` cannot plan marks `id` failed, a failure to read the serving version's files or the host's memory does not. */
  private planSwap(current: Retriever, files: RetrieverFiles, id: string): Promise<SwapPlan> {
    return planVersionSwap(current, files, this.planning).catch(async (error: unknown) =>
      Promise.reject(error instanceof UnplannableVersionError ? await this.loadFailed(id, error.cause) : error),
    );
  }

  /** Marks `id` failed with why it did not load; the error the activation answers with. */
  private async loadFailed(id: string, error: unknown): Promise<ServiceError> {
    const reason = `activation failed: ${(error as Error).message}`;
    await this.registry.updateVersion(id, { state: 'failed', reason });
    return new ServiceError(activationErrorCode(error), `version ${id}: ${reason}`);
  }

  private result({ retriever, ...facts }: Switch): ActivationResult {
    return { version: this.registry.version(retriever.version), ...facts };
  }

  private servedCorpus(): { corpusPath: string; sidecarPath?: string; rows: number } {
    const current = this.options.active.current;
    if (!current) throw new ServiceError('not_ready', 'no version is serving yet; versions are registered against the served corpus');
    return { corpusPath: current.files.corpusPath, sidecarPath: current.corpus.sidecarPath, rows: current.corpus.rows };
  }
}

/** What a build registration adds to its fingerprint: Flat as before types existed, so earlier registrations still match. */
function buildOptions(faissType: string | undefined): string {
  return faissType === undefined || faissType === FLAT_TYPE ? 'build' : `build ${faissType}`;
}

/** Refuses a type faiss cannot build at the model's dimension, with faiss's reason, before anything is registered or built. */
async function checkedFaissType(dimension: number, faissType: string): Promise<void> {
  if (faissType === FLAT_TYPE) return;
  await checkFaissType(dimension, faissType).catch((error: Error) => {
    throw new RegistrationError('bad_request', 'faissType', `faiss cannot build ${JSON.stringify(faissType)} (${dimension} dimensions): ${error.message}`);
  });
}

/** Why `version` cannot serve beside `servedCorpus` (its rows index another corpus), or undefined when it can. */
function corpusMismatch(version: VersionRecord, servedCorpus: string): string | undefined {
  if (path.resolve(version.corpusPath) === path.resolve(servedCorpus)) return undefined;
  return `registered for corpus ${version.corpusPath}, but the server now serves ${servedCorpus}`;
}

/** A file that is missing or does not fit is the version's fault (400), not an unknown route (404). */
function activationErrorCode(error: unknown): ErrorCode {
  if (!(error instanceof ServiceError)) return 'internal';
  return error.code === 'not_found' ? 'bad_request' : error.code;
}

/** The files `version` serves from; a version without its model and index yet cannot serve. */
export function servableFiles(version: VersionRecord): RetrieverFiles {
  const { modelDir, indexPath } = version;
  if (version.state === 'converting' || version.state === 'building' || version.state === 'registered' || modelDir === undefined || indexPath === undefined) {
    throw new NoIndexYetError(version);
  }
  return {
    modelDir,
    indexPath,
    corpusPath: version.corpusPath,
    ...(version.sidecarPath !== undefined && { sidecarPath: version.sidecarPath }),
  };
}

/** Loads, validates and warms one version's files as this server serves them (the writer and its replicas alike). */
export function loadRetriever(
  files: RetrieverFiles,
  version: string,
  options: Pick<VersionManagerOptions, 'encoder' | 'index'>,
  progress: Pick<RetrieverLoadOptions, 'onStage'> = {},
): Promise<Retriever> {
  return Retriever.load(files, { encoder: options.encoder, index: options.index, ...progress, version });
}
