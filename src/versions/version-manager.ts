import { rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Mutex, tryAcquire } from 'async-mutex';
import type { WeightBitsSetting } from '../onnx/int8-quantization.js';
import { readManifest } from '../encoder/manifest.js';
import type { EncoderOptions } from '../encoder/onnx-encoder.js';
import type { VectorIndexOptions } from '../index/open-index.js';
import type { ActiveRetriever } from '../engine/active-retriever.js';
import { Retriever, type RetrieverFiles, type RetrieverLoadOptions } from '../engine/retriever.js';
import { ServiceError, type ErrorCode } from '../errors.js';
import { flatIndexFileName } from '../index/build-index.js';
import { pathExists } from '../file-io.js';
import { readFaissHeader } from '../index/faiss-index-kinds.js';
import { partialRowsWritten } from '../index/ixfi-writer.js';
import { IndexJobs, type JobView } from './index-jobs.js';
import { resolveModelFolderOffThread } from '../engine/model-folder-thread.js';
import { VersionRegistry, type VersionRecord } from './version-registry.js';

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
  /** How index jobs encode the corpus. */
  buildEncoder?: EncoderOptions;
  /** Passages per encoder call in index jobs (default 64). */
  buildBatchSize?: number;
  /** Also build half-precision graphs when converting checkpoints. */
  fp16: boolean;
  /** Also build int8 graphs, with weights of these bits, when converting checkpoints. */
  int8?: WeightBitsSetting;
  /** `error` for what needs someone's attention: a failed build, a state that could not be recorded. */
  log?: (message: string, fields?: Record<string, unknown>, level?: 'info' | 'error') => void;
}

export interface RegisterRequest {
  modelPath: string;
  /** A prebuilt FAISS IndexFlatIP of the served corpus made with this model. */
  indexPath?: string;
  /** Build the index with this model as a background job instead. */
  buildIndex?: boolean;
  label?: string;
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
  /** From the swap until the replaced version's last request ended and it was closed. */
  releaseMs: number;
}

/**
 * Registers checkpoints as versions, builds their indexes, and activates them: a version is
 * loaded, validated and warmed beside the serving one, then swapped in with one reference
 * change. One activation (or rollback) runs at a time; another one meanwhile is a conflict.
 */
export class VersionManager {
  private readonly activation = new Mutex();
  /** Set by close: a version that finishes loading afterwards is closed instead of served. */
  private closing = false;

  private constructor(
    readonly registry: VersionRegistry,
    readonly jobs: IndexJobs,
    private readonly options: VersionManagerOptions,
  ) {}

  static async open(options: VersionManagerOptions): Promise<VersionManager> {
    const registry = await VersionRegistry.open(path.resolve(options.dataDir, 'versions'), { rowsOnDisk: partialRowsWritten });
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
  async startServing(files: RetrieverFiles, load: Omit<RetrieverLoadOptions, 'version'>): Promise<Retriever> {
    await this.adoptInitial(files);
    const rememberedId = this.registry.activeId;
    if (rememberedId !== undefined && rememberedId !== INITIAL_VERSION && this.registry.has(rememberedId)) {
      const remembered = this.registry.version(rememberedId);
      if (path.resolve(remembered.corpusPath) !== path.resolve(files.corpusPath)) {
        // Its index rows are rows of another corpus: serving it would answer from the wrong passages.
        const reason = `registered for corpus ${remembered.corpusPath}, but the server now serves ${files.corpusPath}`;
        await this.registry.updateVersion(rememberedId, { state: 'failed', reason });
        this.options.log?.(`remembered active version ${rememberedId} not served: ${reason}; serving the launch files`);
      } else {
        this.options.log?.(`serving remembered active version ${rememberedId} instead of the launch files`, { version: remembered });
        try {
          return await this.serve(rememberedId, load, 'activate');
        } catch (error) {
          this.options.log?.(`remembered version ${rememberedId} failed to load (${(error as Error).message}); serving the launch files`);
        }
      }
    }
    return this.serve(INITIAL_VERSION, load, 'activate');
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

  /**
   * Registers a checkpoint folder (ours, or a Hugging Face BERT folder converted here, off the
   * event loop) with a prebuilt index, checked against the model and served corpus up front,
   * or with an index job started at once.
   */
  async register(request: RegisterRequest): Promise<{ version: VersionRecord; job?: JobView }> {
    if ((request.indexPath === undefined) === !request.buildIndex) {
      throw new ServiceError('bad_request', 'give either index_path or build_index: true', { field: 'index_path' });
    }
    const corpus = this.servedCorpus();
    const source = path.resolve(request.modelPath);
    const modelDir = await resolveModelFolderOffThread({
      dir: source,
      cacheDir: path.resolve(this.options.dataDir, 'models'),
      fp16: this.options.fp16,
      int8: this.options.int8,
    }).catch((error: ServiceError) => {
      throw new ServiceError(error.code === 'internal' ? 'internal' : 'bad_request', `model_path: ${error.message}`, { field: 'model_path' });
    });
    const manifest = await readManifest(modelDir);
    const fields = {
      ...(request.label !== undefined && { label: request.label }),
      source,
      modelDir,
      corpusPath: corpus.corpusPath,
      ...(corpus.sidecarPath !== undefined && { sidecarPath: corpus.sidecarPath }),
    };
    if (request.indexPath !== undefined) {
      const indexPath = path.resolve(request.indexPath);
      await readFaissHeader(indexPath, { expectDimension: manifest.dimension, expectRows: corpus.rows }).catch((error: ServiceError) => {
        throw new ServiceError('bad_request', `index_path: ${error.message}`, { field: 'index_path' });
      });
      return { version: await this.registry.addVersion({ ...fields, indexPath, state: 'ready' }) };
    }
    const id = this.registry.newVersionId();
    const indexPath = path.join(this.registry.dir, id, flatIndexFileName(manifest.name));
    await this.registry.addVersion({ ...fields, id, indexPath, state: 'registered' });
    const job = await this.jobs.start(id, corpus.rows);
    return { version: this.registry.version(id), job };
  }

  /** Starts (or resumes) building a version's index. */
  async build(versionId: string): Promise<JobView> {
    const version = this.registry.version(versionId);
    if (version.state !== 'registered' && version.state !== 'failed') {
      throw new ServiceError('conflict', `version ${versionId} is ${version.state}; only a registered or failed version's index is built`);
    }
    if (!version.indexPath.startsWith(this.registry.dir + path.sep)) {
      throw new ServiceError('conflict', `version ${versionId} uses a prebuilt index (${version.indexPath}); register the checkpoint again to build one`);
    }
    const corpus = this.servedCorpus();
    if (path.resolve(version.corpusPath) !== path.resolve(corpus.corpusPath)) {
      throw new ServiceError('conflict', `version ${versionId} was registered for corpus ${version.corpusPath}, but the server serves ${corpus.corpusPath}`);
    }
    return this.jobs.start(versionId, corpus.rows);
  }

  /** Makes `id` serve new requests; resolves once the version it replaced is released. */
  activate(id: string): Promise<ActivationResult> {
    return this.exclusively(() => this.swap(id, 'activate'));
  }

  /** Activates the version that was active before the current one. */
  rollback(): Promise<ActivationResult> {
    return this.exclusively(() => {
      const previous = this.registry.previousId;
      if (previous === undefined) throw new ServiceError('conflict', 'there is no previously active version to roll back to');
      return this.swap(previous, 'rollback');
    });
  }

  /**
   * Forgets a version and deletes what this service made for it: its folder under versions/ (a
   * built index, a partial one) and its ONNX conversion under models/ unless another version
   * uses it. A prebuilt index or a model folder the client named is left where it is.
   */
  remove(id: string): Promise<RemovalResult> {
    return this.exclusively(async () => {
      const version = this.registry.version(id);
      if (id === INITIAL_VERSION) {
        throw new ServiceError('conflict', `version ${id} is the launch flags' files; restart with other flags instead of deleting it`);
      }
      if (id === this.registry.activeId || this.options.active.current?.version === id) {
        throw new ServiceError('conflict', `version ${id} is active; activate or roll back to another version first`);
      }
      if (version.state === 'building') {
        throw new ServiceError('conflict', `version ${id} is building its index; cancel job ${version.jobId} (DELETE /training/jobs/${version.jobId}) first`);
      }
      const owned = [path.join(this.registry.dir, id)];
      const modelCache = path.resolve(this.options.dataDir, 'models');
      const modelShared = this.registry.versions().some((other) => other.id !== id && other.modelDir === version.modelDir);
      if (version.modelDir.startsWith(modelCache + path.sep) && !modelShared) owned.push(version.modelDir);
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
    });
  }

  /** Cancels index jobs, waits for a running activation to end, and writes what a full disk held back. */
  async close(): Promise<void> {
    this.closing = true;
    await this.jobs.close();
    await this.activation.waitForUnlock();
    await this.registry.close().catch((error: Error) =>
      this.options.log?.(`the version registry could not be written on shutdown: ${error.message}`, {}, 'error'),
    );
  }

  private exclusively<T>(work: () => Promise<T>): Promise<T> {
    const busy = new ServiceError('conflict', 'another activation, rollback or deletion is in progress; retry when it has finished');
    return tryAcquire(this.activation, busy).runExclusive(work);
  }

  private async swap(id: string, how: 'activate' | 'rollback'): Promise<ActivationResult> {
    const version = this.registry.version(id);
    const current = this.options.active.current;
    if (current?.version === id) return { version, loadMs: 0, releaseMs: 0 };
    if (version.state === 'building' || version.state === 'registered') {
      throw new ServiceError('conflict', `version ${id} has no index yet (${version.state}${version.reason ? `: ${version.reason}` : ''})`);
    }
    const started = performance.now();
    const retriever = await this.serveLoad(id, { encoder: this.options.encoder, index: this.options.index });
    const loaded = performance.now();
    await this.activateLoaded(retriever, how);
    return {
      version: this.registry.version(id),
      ...(current && { previous: current.version }),
      loadMs: loaded - started,
      releaseMs: performance.now() - loaded,
    };
  }

  private async serve(id: string, load: Omit<RetrieverLoadOptions, 'version'>, how: 'activate' | 'rollback'): Promise<Retriever> {
    const retriever = await this.serveLoad(id, load);
    await this.activateLoaded(retriever, how);
    return retriever;
  }

  /** Loads a version; a failure marks it failed with the reason and leaves serving as it was. */
  private async serveLoad(id: string, load: Omit<RetrieverLoadOptions, 'version'>): Promise<Retriever> {
    const version = this.registry.version(id);
    try {
      return await Retriever.load(versionFiles(version), { ...load, version: id });
    } catch (error) {
      const reason = `activation failed: ${(error as Error).message}`;
      await this.registry.updateVersion(id, { state: 'failed', reason });
      throw new ServiceError(activationErrorCode(error), `version ${id}: ${reason}`);
    }
  }

  private async activateLoaded(retriever: Retriever, how: 'activate' | 'rollback'): Promise<void> {
    if (this.closing) {
      await retriever.close();
      throw new ServiceError('not_ready', `version ${retriever.version} loaded while the server was shutting down; not activated`);
    }
    const released = this.options.active.activate(retriever);
    await this.registry.markActive(retriever.version, how);
    await released;
  }

  private servedCorpus(): { corpusPath: string; sidecarPath?: string; rows: number } {
    const current = this.options.active.current;
    if (!current) throw new ServiceError('not_ready', 'no version is serving yet; versions are registered against the served corpus');
    return { corpusPath: current.files.corpusPath, sidecarPath: current.corpus.sidecarPath, rows: current.corpus.rows };
  }
}

/** A file that is missing or does not fit is the version's fault (400), not an unknown route (404). */
function activationErrorCode(error: unknown): ErrorCode {
  if (!(error instanceof ServiceError)) return 'internal';
  return error.code === 'not_found' ? 'bad_request' : error.code;
}

function versionFiles(version: VersionRecord): RetrieverFiles {
  return {
    modelDir: version.modelDir,
    indexPath: version.indexPath,
    corpusPath: version.corpusPath,
    ...(version.sidecarPath !== undefined && { sidecarPath: version.sidecarPath }),
  };
}
