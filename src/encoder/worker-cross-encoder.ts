import { ServiceError } from '../errors.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { WorkerRequests } from '../threads/worker-requests.js';
import type { CrossEncoder, TextPair } from './cross-encoder.js';
import type { EncoderRequest } from './encoder-worker-protocol.js';
import type { RerankerManifest } from './manifest.js';
import type { CrossEncoderOptions } from './onnx-cross-encoder.js';
import { startEncoderWorker, type EncoderReply } from './worker-encoder.js';

/** {@link OnnxCrossEncoder} in the encoder worker thread, so scoring never blocks the event loop that serves HTTP. */
export class WorkerCrossEncoder implements CrossEncoder {
  private constructor(
    private readonly requests: WorkerRequests<EncoderRequest, EncoderReply>,
    readonly manifest: RerankerManifest,
    readonly provider: ExecutionProviderName,
    readonly modelFile: string,
  ) {}

  static async load(modelDir: string, options: CrossEncoderOptions = {}): Promise<WorkerCrossEncoder> {
    const { warn, ...settings } = options;
    const { requests, ready } = await startEncoderWorker({ kind: 'reranker', modelDir, settings }, warn);
    return new WorkerCrossEncoder(requests, ready.manifest as RerankerManifest, ready.provider, ready.modelFile);
  }

  async score(pairs: readonly TextPair[]): Promise<Float32Array> {
    if (pairs.length === 0) return new Float32Array(0);
    return (await this.requests.send({ op: 'pairs', pairs })).values!;
  }

  async close(): Promise<void> {
    await this.requests.shutDown({ op: 'close' }, new ServiceError('not_ready', 'the reranker is closed'));
  }
}
