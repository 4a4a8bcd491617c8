import type { InferenceSession } from 'onnxruntime-node';
import { ServiceError } from '../errors.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import type { CrossEncoder, TextPair } from './cross-encoder.js';
import { batchesByLength, defaultBatchLimits, type BatchLimits } from './length-batches.js';
import { readRerankerManifest, type RerankerManifest, type ScoreActivation } from './manifest.js';
import { bertFeeds } from './onnx-encoder.js';
import { createEncoderSession, type SessionSettings } from './session.js';
import { padBatch, PairTokenizer, type TokenizedBatch } from './tokenizer.js';

export interface CrossEncoderOptions extends SessionSettings {
  batchLimits?: Partial<BatchLimits>;
}

/** The serialisable part of {@link CrossEncoderOptions}: what may cross into a worker thread. */
export type CrossEncoderSettings = Omit<CrossEncoderOptions, 'warn'>;

const ACTIVATE: Record<ScoreActivation, (logit: number) => number> = {
  sigmoid: (logit) => 1 / (1 + Math.exp(-logit)),
  identity: (logit) => logit,
};

/** Scores pairs with ONNX Runtime in this thread; `run` blocks the event loop while it computes. */
export class OnnxCrossEncoder implements CrossEncoder {
  private constructor(
    readonly manifest: RerankerManifest,
    readonly provider: ExecutionProviderName,
    readonly modelFile: string,
    private readonly session: InferenceSession,
    private readonly tokenizer: PairTokenizer,
    private readonly batchLimits: BatchLimits,
  ) {}

  static async load(modelDir: string, options: CrossEncoderOptions = {}): Promise<OnnxCrossEncoder> {
    const manifest = await readRerankerManifest(modelDir);
    const tokenizer = await PairTokenizer.load(modelDir, manifest.maxLength);
    const { session, provider, modelFile } = await createEncoderSession(modelDir, manifest, options);
    if (!session.outputNames.includes(manifest.outputs.logits)) {
      await session.release();
      throw new ServiceError('bad_request', `the ONNX graph of ${modelDir} has no output ${manifest.outputs.logits}`);
    }
    const limits = { ...defaultBatchLimits(provider), ...options.batchLimits };
    return new OnnxCrossEncoder(manifest, provider, modelFile, session, tokenizer, limits);
  }

  /** Pairs of similar token length run together, in batches within the same limits as the encoder's. */
  async score(pairs: readonly TextPair[]): Promise<Float32Array> {
    const tokenized = await this.tokenizer.pairsOf(pairs);
    const activate = ACTIVATE[this.manifest.activation];
    const scores = new Float32Array(pairs.length);
    for (const batch of batchesByLength(tokenized.map((pair) => pair.ids.length), this.batchLimits)) {
      const rows = batch.map((index) => tokenized[index]!);
      const logits = await this.run(padBatch(rows.map((pair) => pair.ids), this.tokenizer.padTokenId, rows.map((pair) => pair.typeIds)));
      batch.forEach((index, row) => {
        scores[index] = activate(logits[row]!);
      });
    }
    return scores;
  }

  async close(): Promise<void> {
    await this.session.release();
  }

  private async run(batch: TokenizedBatch): Promise<Float32Array> {
    const outputName = this.manifest.outputs.logits;
    const output = (await this.session.run(bertFeeds(batch, this.session.inputNames), [outputName]))[outputName];
    if (output.type !== 'float32' || output.dims.length !== 2 || output.dims[0] !== batch.rows || output.dims[1] !== 1) {
      throw new ServiceError('internal', `${outputName} is ${output.type} [${output.dims.join(', ')}], expected float32 [${batch.rows}, 1]`);
    }
    return output.data as Float32Array;
  }
}
