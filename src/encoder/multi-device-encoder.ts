import type { EmbeddingEncoder, QueryInput } from './embedding-encoder.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import { ServiceError } from '../errors.js';
import type { RetrieverManifest } from './manifest.js';
import type { EncoderOptions } from './onnx-encoder.js';
import { WorkerEncoder } from './worker-encoder.js';

/**
 * One model on several devices behind one encoder: each call's texts are cut into one contiguous
 * slice per device, encoded at once, and joined back in input order. So a build-index batch runs
 * on every GPU and its rows still come out in corpus order, and the build resumes as before.
 */
export class MultiDeviceEncoder implements EmbeddingEncoder {
  private constructor(
    private readonly encoders: readonly WorkerEncoder[],
    readonly manifest: RetrieverManifest,
    readonly provider: ExecutionProviderName,
  ) {}

  /** One encoder worker per device id, each with `options` and its own `deviceId`. */
  static async load(modelDir: string, deviceIds: readonly number[], options: EncoderOptions = {}): Promise<MultiDeviceEncoder> {
    if (deviceIds.length === 0) throw new ServiceError('bad_request', 'at least one device id is needed');
    const loading = await Promise.allSettled(deviceIds.map((deviceId) => WorkerEncoder.load(modelDir, { ...options, deviceId })));
    const encoders = loading.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failed = loading.find((result) => result.status === 'rejected');
    const providers = new Set(encoders.map((encoder) => encoder.provider));
    if (failed || providers.size > 1) {
      await Promise.allSettled(encoders.map((encoder) => encoder.close()));
      if (failed) throw failed.reason;
      // CUDA runs the fp16 graph and CPU the fp32 one: one index must not mix their vectors.
      const running = encoders.map((encoder, i) => `device ${deviceIds[i]}: ${encoder.provider}`).join(', ');
      throw new ServiceError('internal', `the devices do not all run the same execution provider (${running})`);
    }
    return new MultiDeviceEncoder(encoders, encoders[0]!.manifest, encoders[0]!.provider);
  }

  encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array> {
    return this.split(inputs, (encoder, slice) => encoder.encodeQueries(slice));
  }

  encodePassages(texts: readonly string[]): Promise<Float32Array> {
    return this.split(texts, (encoder, slice) => encoder.encodePassages(slice));
  }

  async close(): Promise<void> {
    await Promise.all(this.encoders.map((encoder) => encoder.close()));
  }

  /** Stops waiting for the encodes in flight (a build stopped midway), as {@link WorkerEncoder.abandon} does on each device. */
  abandon(): void {
    for (const encoder of this.encoders) encoder.abandon();
  }

  private async split<T>(items: readonly T[], encode: (encoder: EmbeddingEncoder, slice: readonly T[]) => Promise<Float32Array>): Promise<Float32Array> {
    const sliceRows = Math.ceil(items.length / this.encoders.length);
    const slices = this.encoders
      .map((encoder, i) => ({ encoder, slice: items.slice(i * sliceRows, (i + 1) * sliceRows) }))
      .filter(({ slice }) => slice.length > 0);
    const parts = await Promise.all(slices.map(({ encoder, slice }) => encode(encoder, slice)));
    const vectors = new Float32Array(items.length * this.manifest.dimension);
    let offset = 0;
    for (const part of parts) {
      vectors.set(part, offset);
      offset += part.length;
    }
    return vectors;
  }
}
