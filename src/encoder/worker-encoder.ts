import { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.js';
import type { EmbeddingEncoder, QueryInput } from './embedding-encoder.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { EncoderRequest, EncoderWorkerData, EncoderWorkerMessage } from './encoder-worker-protocol.js';
import type { RetrieverManifest } from './manifest.js';
import type { EncoderOptions } from './onnx-encoder.js';
import { emitFallbackWarning } from '../onnx/execution-provider.js';
import { threadChannel, WorkerRequests, workerReady } from '../threads/worker-requests.js';

type EncoderReply = Extract<EncoderWorkerMessage, { kind: 'reply' }>;

/**
 * {@link OnnxEncoder} in its own worker thread, so encoding never blocks the event loop that
 * serves HTTP. Vectors come back as transferred buffers; errors come back as ServiceErrors.
 */
export class WorkerEncoder implements EmbeddingEncoder {
  private readonly requests: WorkerRequests<EncoderRequest, EncoderReply>;

  private constructor(
    worker: Worker,
    readonly manifest: RetrieverManifest,
    readonly provider: ExecutionProviderName,
    readonly modelFile: string,
  ) {
    this.requests = new WorkerRequests(threadChannel(worker, 'encoder worker'));
  }

  static async load(modelDir: string, options: EncoderOptions = {}): Promise<WorkerEncoder> {
    const { warn, ...settings } = options;
    const report = warn ?? emitFallbackWarning;
    const worker = new Worker(new URL('../workers/encoder-worker.js', import.meta.url), {
      workerData: { modelDir, settings } satisfies EncoderWorkerData,
    });
    worker.on('message', (message: EncoderWorkerMessage) => {
      if (message.kind === 'warning') report(message.message);
    });
    const started = await workerReady<Extract<EncoderWorkerMessage, { kind: 'ready' }>>(worker, 'encoder worker');
    return new WorkerEncoder(worker, started.manifest, started.provider, started.modelFile);
  }

  async encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array> {
    return (await this.requests.send({ op: 'queries', inputs })).vectors!;
  }

  async encodePassages(texts: readonly string[]): Promise<Float32Array> {
    return (await this.requests.send({ op: 'passages', texts })).vectors!;
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
