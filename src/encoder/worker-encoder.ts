import { Worker } from 'node:worker_threads';
import { ServiceError } from '../errors.js';
import type { EmbeddingEncoder, ExecutionProviderName, QueryInput } from '../engine/types.js';
import {
  deserializeError,
  type EncoderRequest,
  type EncoderWorkerData,
  type EncoderWorkerMessage,
} from './encoder-worker-protocol.js';
import type { RetrieverManifest } from './manifest.js';
import type { EncoderOptions } from './onnx-encoder.js';
import { emitFallbackWarning } from './session.js';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

interface PendingRequest {
  resolve: (vectors: Float32Array | undefined) => void;
  reject: (error: ServiceError) => void;
}

/**
 * {@link OnnxEncoder} in its own worker thread, so encoding never blocks the event loop that
 * serves HTTP. Vectors come back as transferred buffers; errors come back as ServiceErrors.
 */
export class WorkerEncoder implements EmbeddingEncoder {
  private readonly pending = new Map<number, PendingRequest>();
  private nextId = 1;
  /** Set once the worker is gone or closing: every later call fails with it. */
  private unavailable?: ServiceError;

  private constructor(
    private readonly worker: Worker,
    readonly manifest: RetrieverManifest,
    readonly provider: ExecutionProviderName,
  ) {
    worker.on('message', (message: EncoderWorkerMessage) => {
      if (message.kind !== 'reply') return;
      const request = this.pending.get(message.id);
      if (!request) return;
      this.pending.delete(message.id);
      if (message.ok) request.resolve(message.vectors);
      else request.reject(deserializeError(message.error));
    });
    worker.on('error', (error) => this.fail(`encoder worker crashed: ${error.message}`));
    worker.on('exit', (code) => this.fail(`encoder worker exited (code ${code})`));
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
    const started = await new Promise<Extract<EncoderWorkerMessage, { kind: 'ready' }>>((resolve, reject) => {
      const onMessage = (message: EncoderWorkerMessage) => {
        if (message.kind === 'ready') resolve(message);
        if (message.kind === 'load-failed') reject(deserializeError(message.error));
      };
      worker.on('message', onMessage);
      worker.once('error', (error) => reject(new ServiceError('internal', `encoder worker crashed: ${error.message}`)));
      worker.once('exit', (code) => reject(new ServiceError('internal', `encoder worker exited (code ${code}) while loading`)));
    }).catch(async (error: unknown) => {
      await worker.terminate();
      throw error;
    });
    return new WorkerEncoder(worker, started.manifest, started.provider);
  }

  async encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array> {
    return (await this.request({ op: 'queries', inputs }))!;
  }

  async encodePassages(texts: readonly string[]): Promise<Float32Array> {
    return (await this.request({ op: 'passages', texts }))!;
  }

  async close(): Promise<void> {
    if (this.unavailable) return;
    try {
      await this.request({ op: 'close' });
    } finally {
      this.unavailable = new ServiceError('not_ready', 'the encoder is closed');
      await this.worker.terminate();
    }
  }

  private request(request: DistributiveOmit<EncoderRequest, 'id'>): Promise<Float32Array | undefined> {
    if (this.unavailable) return Promise.reject(this.unavailable);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id } as EncoderRequest);
    });
  }

  private fail(reason: string): void {
    this.unavailable ??= new ServiceError('internal', reason);
    for (const request of this.pending.values()) request.reject(this.unavailable);
    this.pending.clear();
  }
}
