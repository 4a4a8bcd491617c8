import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { composeQueryText, type EmbeddingEncoder, type QueryInput } from '../../src/encoder/embedding-encoder.js';
import { E5_DEFAULTS, MANIFEST_FORMAT, type RetrieverManifest } from '../../src/encoder/manifest.js';
import { fillUnitGaussian } from '../support/index-fixtures.js';

/**
 * A stand-in encoder for index-building tests that are about files, not models: each text's
 * vector is a unit Gaussian seeded by a hash of the prefixed text, so any build of the same
 * corpus gives the same bytes. `delayMs` slows batches so a test can kill a build midway.
 */
export class HashingEncoder implements EmbeddingEncoder {
  readonly provider = 'cpu' as const;
  readonly manifest: RetrieverManifest;
  readonly passageBatches: number[] = [];

  constructor(name = 'hashing', dimension = 16, private readonly delayMs = 0) {
    this.manifest = {
      format: MANIFEST_FORMAT,
      ...E5_DEFAULTS,
      name,
      dimension,
      files: { fp32: 'none.onnx' },
      architecture: {
        vocabSize: 0, hiddenSize: dimension, numHiddenLayers: 0, numAttentionHeads: 1, intermediateSize: 0,
        maxPositionEmbeddings: 512, typeVocabSize: 2, layerNormEps: 1e-12, hiddenAct: 'gelu',
      },
      provenance: { source: 'preset', preset: 'hashing', seed: 0, vocabularyFrom: 'none', createdAt: '2026-01-01T00:00:00Z' },
    };
  }

  async encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array> {
    return this.encode(inputs.map((input) => composeQueryText(input, this.manifest)));
  }

  async encodePassages(texts: readonly string[]): Promise<Float32Array> {
    this.passageBatches.push(texts.length);
    if (this.delayMs > 0) await sleep(this.delayMs);
    return this.encode(texts.map((text) => this.manifest.passagePrefix + text));
  }

  async close(): Promise<void> {}

  private encode(texts: readonly string[]): Float32Array {
    const { dimension } = this.manifest;
    const vectors = new Float32Array(texts.length * dimension);
    texts.forEach((text, row) => {
      const seed = createHash('sha256').update(text).digest().readUInt32LE(0);
      fillUnitGaussian(vectors.subarray(row * dimension, (row + 1) * dimension), seed);
    });
    return vectors;
  }
}
