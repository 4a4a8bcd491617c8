import { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.js';
import type { EmbeddingEncoder, QueryInput } from './embedding-encoder.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { EncoderRequest, EncoderWorkerData, EncoderWorkerMessage } from './encoder-worker-protocol.js';
import type { RetrieverManifest } from './manifest.js';
import type { EncoderOptions } from './onnx-encoder.js';
import { emitFallbackWarning } from '../onnx/execution-provider.js';
import { threadChannel, WorkerRequests, workerReady } from '../threads/worker-requests.js';

export type EncoderReply = Extract<EncoderWorkerMessage, { kind: 'reply' }>;
type EncoderReady = Extract<EncoderWorkerMessage, { kind: 'ready' }>;

/** A started encoder worker thread: its request client and what it loaded. */
export interface EncoderWorker {
  requests: WorkerRequests<EncoderRequest, EncoderReply>;
  ready: EncoderReady;
}

/** Starts the encoder worker on `data`'s model folder; its warnings (a CPU fallback) go to `warn`. */
export async function startEncoderWorker(data: EncoderWorkerData, warn: ((message: string) => void) | undefined): Promise<EncoderWorker> {
  const report = warn ?? emitFallbackWarning;
  const worker = new Worker(new URL('../workers/encoder-worker.js', import.meta.url), { workerData: data });
  worker.on('message', (message: EncoderWorkerMessage) => {
    if (message.kind === 'warning') report(message.message);
  });
  const ready = await workerReady<EncoderReady>(worker, `${data.kind === 'reranker' ? 'reranker' : 'encoder'} worker`);
  return { requests: new WorkerRequests(threadChannel(worker, 'encoder worker')), ready };
}

/**
 * {@link OnnxEncoder} in its own worker thread, so encoding never blocks the event loop that
 * serves HTTP. Vectors come back as transferred buffers; errors come back as ServiceErrors.
 */
export class WorkerEncoder implements EmbeddingEncoder {
  private constructor(
    private readonly requests: WorkerRequests<EncoderRequest, EncoderReply>,
    readonly manifest: RetrieverManifest,
    readonly provider: ExecutionProviderName,
    readonly modelFile: string,
  ) {}

  static async load(modelDir: string, options: EncoderOptions = {}): Promise<WorkerEncoder> {
    const { warn, ...settings } = options;
    const { requests, ready } = await startEncoderWorker({ kind: 'retriever', modelDir, settings }, warn);
    return new WorkerEncoder(requests, ready.manifest as RetrieverManifest, ready.provider, ready.modelFile);
  }

  async encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array> {
    return (await this.requests.send({ op: 'queries', inputs })).values!;
  }

  async encodePassages(texts: readonly string[]): Promise<Float32Array> {
    return (await this.requests.send({ op: 'passages', texts })).values!;
  }

  async close(): Promise<void> {
    await this.requests.shutDown({ op: 'close' }, new ServiceError('not_ready', 'the encoder is closed'));
  }

  /**
   * Stops waiting for the encode it is running (a cancelled index build): pending calls fail now,
   * and the worker closes once the ONNX Runtime run in progress ends.
   */
  abandon(): void {
    this.requests.abandon('the encoder was stopped', { op: 'close' });
  }
}
