import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { CorpusStore } from '../corpus/corpus-store.js';
import type { EncoderOptions } from '../encoder/onnx-encoder.js';
import { WorkerEncoder } from '../encoder/worker-encoder.js';
import { ServiceError } from '../errors.js';
import { buildIndex } from '../index/build-index.js';
import { convertIndexInProcess } from '../index/convert-host.js';
import { buildIndexOfType, FLAT_TYPE, rowsEncoded } from '../index/typed-build.js';
import type { JobRecord, VersionRecord, VersionRegistry } from './version-registry.js';

export interface IndexJobOptions {
  /** Settings of the build's own encoder worker (give it few threads: serving shares the CPU). */
  encoder?: EncoderOptions;
  /** Passages per encoder call. */
  batchSize: number;
  /** Called when a job ends, whatever the outcome (after its end is recorded, or failed to be). */
  onEnd?: (job: JobRecord) => void;
  /** Called when a job's end could not be recorded (the registry could not be written). */
  onError?: (error: unknown) => void;
}

/** A job as clients see it: the stored record plus, while it runs, its stage, rate and ETA. */
export interface JobView extends JobRecord {
  /** `encoding` the corpus, then, for a type other than Flat, `converting` the encoded Flat into it. */
  stage?: 'encoding' | 'converting';
  /** While converting: reading the training sample (`sampling`) or adding rows (`adding`), rows of that step. */
  conversion?: ConversionProgress;
  rowsPerSecond?: number;
  etaSeconds?: number;
}

interface ConversionProgress {
  step: 'sampling' | 'adding';
  rowsDone: number;
  rowsTotal: number;
}

/** The model a build encodes with, the index file it writes and its type. */
interface BuildFiles {
  modelDir: string;
  indexPath: string;
  faissType: string;
}

interface RunningJob {
  controller: AbortController;
  rowsDone: number;
  rowsTotal: number;
  resumedFrom: number;
  stage: 'encoding' | 'converting';
  conversion?: ConversionProgress;
  /** Rows and time when this run's progress started counting, for the rate. */
  baseRows: number;
  baseTime: number;
  finished: Promise<void>;
}

/**
 * Background index builds: each encodes the served corpus with a version's encoder, in its own
 * worker thread, into the version's index path; a type other than Flat is encoded into
 * `<index>.flat` and converted in a process of its own (as `build-index --faiss_type`). Progress lives in memory; state changes are
 * persisted in the registry. A cancelled build leaves its partial file, which the next build of
 * that version resumes.
 */
export class IndexJobs {
  private readonly running = new Map<string, RunningJob>();
  /** Versions with a job starting or running, claimed before the first await so two starts cannot both pass. */
  private readonly building = new Set<string>();

  constructor(
    private readonly registry: VersionRegistry,
    private readonly options: IndexJobOptions,
  ) {}

  /**
   * Starts building the index of `versionId` over `corpusRows` rows; the version is `building`
   * until the job ends.
   */
  async start(versionId: string, corpusRows: number): Promise<JobView> {
    const { modelDir, indexPath, faissType = FLAT_TYPE } = this.registry.version(versionId);
    // Both are known once a version's checkpoint is converted, which is before any build starts.
    if (modelDir === undefined || indexPath === undefined) throw new ServiceError('conflict', `version ${versionId} has no converted model to build its index with`);
    if (this.building.has(versionId)) throw new ServiceError('conflict', `version ${versionId} is already building its index`);
    this.building.add(versionId);
    try {
      return await this.launch(versionId, { modelDir, indexPath, faissType }, corpusRows);
    } catch (error) {
      this.building.delete(versionId);
      throw error;
    }
  }

  private async launch(versionId: string, files: BuildFiles, corpusRows: number): Promise<JobView> {
    const { indexPath, faissType } = files;
    // What a stopped build left is known now, so the job shows where it resumes from the start.
    const onDisk = await rowsEncoded(indexPath, faissType, corpusRows);
    const job = await this.registry.startJob({
      versionId,
      indexPath,
      ...(faissType !== FLAT_TYPE && { faissType }),
      rowsDone: onDisk,
      rowsTotal: corpusRows,
      resumedFrom: onDisk,
      startedAt: new Date().toISOString(),
    });
    const run: RunningJob = {
      controller: new AbortController(),
      rowsDone: onDisk,
      rowsTotal: corpusRows,
      resumedFrom: onDisk,
      stage: 'encoding',
      baseRows: onDisk,
      baseTime: performance.now(),
      finished: Promise.resolve(),
    };
    this.running.set(job.id, run);
    run.finished = this.run(job.id, files, run)
      .catch((error: unknown) => this.options.onError?.(error))
      .finally(() => {
        this.running.delete(job.id);
        this.building.delete(versionId);
      });
    return this.view(job.id);
  }

  view(jobId: string): JobView {
    const job = this.registry.job(jobId);
    const run = this.running.get(jobId);
    if (!run) return job;
    const view: JobView = {
      ...job,
      stage: run.stage,
      ...(run.conversion && { conversion: { ...run.conversion } }),
      rowsDone: run.rowsDone,
      rowsTotal: run.rowsTotal,
      resumedFrom: run.resumedFrom,
    };
    if (run.stage === 'converting') return view;
    const seconds = (performance.now() - run.baseTime) / 1000;
    const rows = run.rowsDone - run.baseRows;
    if (rows > 0 && seconds > 0) {
      view.rowsPerSecond = rows / seconds;
      view.etaSeconds = (run.rowsTotal - run.rowsDone) / view.rowsPerSecond;
    }
    return view;
  }

  list(): JobView[] {
    return this.registry.jobs().map((job) => this.view(job.id));
  }

  /** Stops a running job, abandoning the batch being encoded; resolves once its end is recorded. */
  async cancel(jobId: string): Promise<JobView> {
    const job = this.registry.job(jobId);
    const run = this.running.get(jobId);
    // A job whose end is recorded but whose files are still being closed has ended all the same.
    if (!run || job.state !== 'running') throw new ServiceError('conflict', `job ${jobId} is not running (it is ${job.state})`);
    run.controller.abort();
    await run.finished;
    return this.view(jobId);
  }

  /** Cancels every running job and waits for them, and for jobs whose end is being recorded, to end (server shutdown). */
  async close(): Promise<void> {
    await Promise.all(
      [...this.running.values()].map((run) => {
        run.controller.abort();
        return run.finished;
      }),
    );
  }

  private async run(jobId: string, { modelDir, indexPath, faissType }: BuildFiles, run: RunningJob): Promise<void> {
    const version = this.registry.version(this.registry.job(jobId).versionId);
    let corpus: CorpusStore | undefined;
    let encoder: WorkerEncoder | undefined;
    let ended: Pick<JobRecord, 'state' | 'reason'>;
    try {
      await mkdir(path.dirname(indexPath), { recursive: true });
      corpus = await CorpusStore.open(version.corpusPath, { sidecarPath: version.sidecarPath });
      encoder = await WorkerEncoder.load(modelDir, this.options.encoder);
      const encoding = { corpus, encoder };
      const { signal } = run.controller;
      let first = true;
      await buildIndexOfType({
        outPath: indexPath,
        faissType,
        encode: (flatPath) =>
          buildIndex({
            ...encoding,
            outPath: flatPath,
            batchSize: this.options.batchSize,
            signal,
            onProgress: (done, total) => {
              if (first) {
                first = false;
                Object.assign(run, { resumedFrom: done, baseRows: done, baseTime: performance.now() });
              }
              Object.assign(run, { rowsDone: done, rowsTotal: total });
            },
          }),
        convert: async (sourcePath) => {
          // The encoder is done with; its worker's memory goes back before faiss needs its own (closing twice is harmless).
          await encoding.encoder.close();
          Object.assign(run, { stage: 'converting', rowsDone: run.rowsTotal });
          return convertIndexInProcess({
            sourcePath,
            outPath: indexPath,
            faissType,
            signal,
            onProgress: (step, done, total) => (run.conversion = { step, rowsDone: done, rowsTotal: total }),
          });
        },
      });
      ended = { state: 'done' };
    } catch (error) {
      ended = run.controller.signal.aborted ? { state: 'cancelled', reason: 'cancelled' } : { state: 'failed', reason: failureReason(error) };
    } finally {
      // A cancelled build does not wait for the encode it abandoned.
      if (run.controller.signal.aborted) encoder?.abandon();
      await Promise.allSettled([encoder?.close(), corpus?.close()]);
    }
    const job: JobRecord = {
      ...this.registry.job(jobId),
      ...ended,
      rowsDone: run.rowsDone,
      rowsTotal: run.rowsTotal,
      resumedFrom: run.resumedFrom,
      finishedAt: new Date().toISOString(),
    };
    try {
      await this.registry.endJob(jobId, job, versionAfter(job));
    } finally {
      this.options.onEnd?.(job);
    }
  }
}

/** A full disk is named as such, with what to do about it. */
function failureReason(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  if (code === 'ENOSPC') return `no space left on device (ENOSPC) for the index file: ${message}; free space, then build again to resume`;
  return (error as Error).message;
}

function versionAfter(job: JobRecord): Pick<VersionRecord, 'state' | 'reason' | 'buildStopped'> {
  switch (job.state) {
    case 'done':
      return { state: 'ready', reason: undefined };
    case 'cancelled':
      return { state: 'registered', reason: `index build ${job.id} cancelled at row ${job.rowsDone} of ${job.rowsTotal}`, buildStopped: 'cancelled' };
    default:
      return { state: 'failed', reason: `index build ${job.id} failed: ${job.reason}` };
  }
}
