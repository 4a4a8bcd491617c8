import { hostname } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import type { Router } from 'express';
import { addServeOptions, resolveServeConfig, searchOnGpu, type ServiceConfig } from '../config.js';
import { lockDataDir } from '../data-dir-lock.js';
import { ensureDemo } from '../demo.js';
import { ActiveRetriever, type ServingOptions } from '../engine/active-retriever.js';
import type { EncoderOptions } from '../encoder/onnx-encoder.js';
import { Retriever, type RetrieverFiles } from '../engine/retriever.js';
import { ServiceError } from '../errors.js';
import { createApp } from '../http/app.js';
import { ServiceMetrics } from '../http/metrics.js';
import { PassageReranker } from '../engine/reranker.js';
import type { CrossEncoderOptions } from '../encoder/onnx-cross-encoder.js';
import { replicaTrainingRefusal } from '../http/fleet-routes.js';
import type { VectorIndexOptions } from '../index/open-index.js';
import { trainingRouter } from '../http/training-routes.js';
import { triesCuda } from '../onnx/execution-provider.js';
import { versionRouter } from '../http/version-routes.js';
import { createLogger, type Logger } from '../log.js';
import { startServer } from '../server.js';
import { LoadingTrainingStore } from '../training/store-loading.js';
import { resolveModelFolderOffThread, type ModelFolderRequest } from '../engine/model-folder-thread.js';
import { HeartbeatBeacon, HeartbeatBoard, serverName } from '../versions/heartbeats.js';
import { ReplicaFollower } from '../versions/replica-follower.js';
import { INITIAL_VERSION, VersionManager } from '../versions/version-manager.js';

/** The Search-R1 flags name the three files; none given means the bundled demo. */
async function retrieverFiles(config: ServiceConfig, logger: Logger): Promise<RetrieverFiles> {
  const given = { retriever_model: config.retrieverModel, index_path: config.indexPath, corpus_path: config.corpusPath };
  const missing = Object.entries(given).filter(([, value]) => value === undefined).map(([flag]) => `--${flag}`);
  if (missing.length === 3) {
    logger.info('no --retriever_model/--index_path/--corpus_path given: serving the bundled demo');
    return (await ensureDemo(config.dataDir, (line) => logger.info(line))).files;
  }
  if (missing.length > 0) throw new ServiceError('bad_request', `${missing.join(', ')} must be given too (or none of the three, for the demo)`);
  logger.info({ model: config.retrieverModel }, 'resolving the model folder (a Hugging Face checkpoint is converted to ONNX once)');
  // Off the event loop: converting an e5-base checkpoint takes seconds of CPU, and /health must answer meanwhile.
  const modelDir = await resolveModelFolderOffThread({
    dir: config.retrieverModel!,
    cacheDir: path.join(config.dataDir, 'models'),
    ...convertedGraphs(config),
  });
  return { modelDir, indexPath: config.indexPath!, corpusPath: config.corpusPath!, sidecarPath: config.sidecarPath };
}

/**
 * The graphs a checkpoint conversion adds to model.onnx for these settings: the fp16 one only where
 * the encoder will try CUDA (under `auto`, a host without the CUDA provider never runs it).
 */
function convertedGraphs(config: ServiceConfig): Pick<ModelFolderRequest, 'fp16' | 'int8'> {
  return {
    fp16: triesCuda(config.device),
    ...(config.precision === 'int8' && { int8: config.int8WeightBits }),
  };
}

interface TrainingRoutes {
  routers: Router[];
  /** Checkpoint versions; present with the training routes. */
  versions?: VersionManager;
  /** The training store opening in the background; present with the training routes. */
  store?: LoadingTrainingStore;
  close(): Promise<void>;
}

function encoderOptions(config: ServiceConfig, logger: Logger): EncoderOptions {
  return {
    device: config.device,
    deviceId: config.deviceId,
    strict: config.strictDevice,
    precision: config.precision,
    batchLimits: { maxBatchSize: config.encoderBatchRows },
    ...(config.intraOpThreads !== undefined && { intraOpNumThreads: config.intraOpThreads }),
    ...(config.interOpThreads !== undefined && { interOpNumThreads: config.interOpThreads }),
    warn: (message) => logger.warn(message),
  };
}

/** The reranker runs where the encoder does, with its own graph precision and run size. */
function crossEncoderOptions(config: ServiceConfig, logger: Logger): CrossEncoderOptions {
  return { ...encoderOptions(config, logger), precision: config.rerankerPrecision, batchLimits: { maxBatchSize: config.rerankerBatchSize } };
}

/**
 * Loads `--reranker_model` (a checkpoint is converted once, off the event loop, like the
 * retriever's). It serves for the server's life, whichever retriever version is active.
 */
async function loadReranker(config: ServiceConfig, logger: Logger): Promise<PassageReranker> {
  logger.info({ model: config.rerankerModel }, 'resolving the reranker folder (a Hugging Face checkpoint is converted to ONNX once)');
  const modelDir = await resolveModelFolderOffThread({
    dir: config.rerankerModel!,
    cacheDir: path.join(config.dataDir, 'models'),
    kind: 'reranker',
    fp16: triesCuda(config.device),
    ...(config.rerankerPrecision === 'int8' && { int8: config.int8WeightBits }),
  });
  // A merged call holds the pairs of one full query batch: each query brings its retrieved candidates.
  const reranker = await PassageReranker.load(modelDir, crossEncoderOptions(config, logger), {
    maxBatchPairs: config.batchMaxQueries * config.retrievalTopk,
    maxBatchTokens: config.batchMaxTokens * config.retrievalTopk,
    maxQueuedPairs: config.queueMaxQueries * config.retrievalTopk,
  });
  logger.info(reranker.info(), 'reranker loaded');
  return reranker;
}

function indexOptions(config: ServiceConfig, logger: Logger): VectorIndexOptions {
  return {
    backend: config.searchBackend,
    gpu: searchOnGpu(config),
    deviceIds: config.searchDevices ?? [config.deviceId],
    precision: config.searchDtype,
    shardRows: config.searchShardRows,
    rescore: config.searchRescore,
    memoryBudgetBytes: config.searchMemoryBudget,
    efSearch: config.hnswEfSearch,
    nprobe: config.ivfNprobe,
    strict: config.strictDevice,
    warn: (message) => logger.warn(message),
  };
}

function servingOptions(config: ServiceConfig): ServingOptions {
  return {
    batching: {
      maxBatchQueries: config.batchMaxQueries,
      maxBatchTokens: config.batchMaxTokens,
      maxWaitMs: config.batchMaxWaitMs,
      maxQueuedQueries: config.queueMaxQueries,
    },
    resultCacheBytes: config.resultCacheBytes,
  };
}

function trainingRoutesOn(config: ServiceConfig): boolean {
  return !config.trainingAuth || Boolean(config.trainingToken);
}

async function trainingRoutes(config: ServiceConfig, active: ActiveRetriever, board: HeartbeatBoard, logger: Logger): Promise<TrainingRoutes> {
  if (config.replica) return { routers: [replicaTrainingRefusal(() => board.read())], close: async () => undefined };
  if (!trainingRoutesOn(config)) {
    // Serving alone is the usual launch (Search-R1's own), not a fault: said once, at info.
    logger.info('training routes are off: give --training_token (or --no_training_auth for local use) to turn them on');
    return { routers: [], close: async () => undefined };
  }
  // Opened in the background: a store of 700k records takes about 15 s to read, and the server
  // must listen meanwhile; until it is open the training data routes answer 503 with progress.
  const store = new LoadingTrainingStore(path.join(config.dataDir, 'training'), (progress) => {
    logger.info(progress, 'loading the training store');
  });
  const router = trainingRouter({
    store: () => store.current(),
    corpus: () => active.current?.corpus,
    token: config.trainingToken,
    allowUnauthenticated: !config.trainingAuth,
  });
  const versions = await VersionManager.open({
    dataDir: config.dataDir,
    active,
    encoder: encoderOptions(config, logger),
    index: indexOptions(config, logger),
    swapMode: config.swapMode,
    fleet: { board, prepareTimeoutMs: config.replicaPrepareTimeoutMs },
    // Index builds share the CPU with serving: one thread keeps request latency steady.
    buildEncoder: { ...encoderOptions(config, logger), intraOpNumThreads: 1 },
    ...convertedGraphs(config),
    log: (message, fields, level = 'info') => logger[level](fields ?? {}, message),
  });
  const versionRoutes = versionRouter({ versions, token: config.trainingToken, allowUnauthenticated: !config.trainingAuth });
  return {
    routers: [router, versionRoutes],
    versions,
    store,
    close: async () => {
      await versions.close();
      await store.close();
    },
  };
}

/**
 * Listens first, then loads: `/health` answers at once and `/ready` reports loading progress,
 * so a launcher can wait on it instead of sleeping.
 */
async function runServe(config: ServiceConfig): Promise<void> {
  const logger = createLogger(config);
  // The lock guards the training store and the version registry. Serving alone writes nothing in
  // the data dir but a checkpoint's conversion (staged, then renamed into place), so a read-only
  // or absent data dir serves a model folder.
  const unlock = trainingRoutesOn(config)
    ? await lockDataDir(config.dataDir, { info: (message) => logger.info(message), error: (message) => logger.error(message) })
    : async () => undefined;
  const active = new ActiveRetriever(servingOptions(config));
  const board = new HeartbeatBoard(config.dataDir, config.heartbeatMs);
  const training = await trainingRoutes(config, active, board, logger);
  const fleet = training.versions ? () => training.versions!.fleetView() : () => board.read();
  const metrics = new ServiceMetrics(active);
  let reranker: PassageReranker | undefined;
  const app = createApp({ service: active, config, logger, metrics, fleet, extraRouters: training.routers, reranker: () => reranker });
  // Set once listening: the heartbeat of a writer, or the replica following its registry.
  let leaveFleet = async (): Promise<void> => undefined;
  const close = async (): Promise<void> => {
    await leaveFleet();
    await Promise.all([active.close(), training.close(), reranker?.close()]);
    await unlock();
  };
  const running = await startServer(app, config, logger, { close });
  const host = advertisedHost(config.host);
  const name = serverName(host, running.port);
  const log = (message: string, fields: Record<string, unknown> = {}, level: 'info' | 'warn' | 'error' = 'info') => logger[level](fields, message);
  if (training.versions) {
    const beacon = new HeartbeatBeacon(
      board,
      () => ({ role: 'writer', name, host, port: running.port, pid: process.pid, ready: active.readiness().ready, ...(active.current && { active: active.current.version }) }),
      (message) => log(message, {}, 'warn'),
    );
    void beacon.beat();
    leaveFleet = () => beacon.stop();
  }
  training.store?.loaded.then(
    (store) => {
      if (store.truncatedBytes > 0) logger.warn({ bytes: store.truncatedBytes }, 'removed a torn, unacknowledged last training record');
      logger.info({ records: store.stats().records }, 'training store loaded');
    },
    async (error: unknown) => {
      // A damaged store stopped the server before it listened; it still stops it, just later.
      logger.fatal({ err: error }, 'the training store failed to load');
      await running.shutdown('training store failed to load');
      process.exitCode = 1;
    },
  );
  try {
    if (config.rerankerModel !== undefined) {
      active.loading('reranker', undefined, 'converting or loading --reranker_model');
      reranker = await loadReranker(config, logger);
      reranker.observe(metrics);
    }
    const load = {
      encoder: encoderOptions(config, logger),
      index: indexOptions(config, logger),
      onStage: (stage: string, progress?: number, step?: string) => active.loading(stage, progress, step),
    };
    if (config.replica) {
      logger.info({ dataDir: config.dataDir }, 'replica: serving the version the registry in the data dir marks active');
      const follower = await ReplicaFollower.start({ dataDir: config.dataDir, active, board, name, host, port: running.port, swapMode: config.swapMode, ...load, log }, load);
      leaveFleet = () => follower.close();
      logger.info(active.current!.info(), 'ready');
      return;
    }
    active.loading('resolving files');
    const files = await retrieverFiles(config, logger);
    logger.info(files, 'loading retriever');
    // With the training routes on, a version activated before the restart serves instead.
    let retriever: Retriever;
    if (training.versions) retriever = await training.versions.restore(files, { onStage: load.onStage });
    else {
      retriever = await Retriever.load(files, { ...load, version: INITIAL_VERSION });
      await active.activate(retriever);
    }
    logger.info(retriever.info(), 'ready');
  } catch (error) {
    // Failing fast beats a server that only ever answers 503: the launch line needs fixing.
    active.failed(error as Error);
    // A ServiceError says what to fix in one line; only an unexpected failure needs its stack.
    if (error instanceof ServiceError) logger.fatal({ code: error.code }, `the retriever failed to load: ${error.message}`);
    else logger.fatal({ err: error }, 'the retriever failed to load');
    await running.shutdown('load failed');
    process.exitCode = 1;
  }
}

/** The host a fleet's heartbeat names: this machine's name when listening on every address. */
function advertisedHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? hostname() : host;
}

export function serveCommand(): Command {
  return addServeOptions(new Command('serve'))
    .description('serve POST /retrieve (flags of Search-R1 retrieval_server.py accepted)')
    .action(async (_options, command: Command) => runServe(resolveServeConfig(command, process.env)));
}
