import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { ServiceError } from '../errors.js';
import { composeQueryText, type EmbeddingEncoder, type QueryInput } from './embedding-encoder.js';
import type { ExecutionProviderName } from '../onnx/execution-provider.js';
import { batchesByLength, batchesInInputOrder, defaultBatchLimits, type BatchLimits } from './length-batches.js';
import { GRAPH_INPUTS } from './bert-graph.js';
import { readManifest, withMaxPassageLength, type RetrieverManifest } from './manifest.js';
import { createEncoderSession, type SessionSettings } from './session.js';
import { padBatch, WordPieceTokenizer, type TokenizedBatch } from './tokenizer.js';

export interface EncoderOptions extends SessionSettings {
  batchLimits?: Partial<BatchLimits>;
  /** Group inputs of similar token length into batches (default true); false keeps input order. */
  lengthBatching?: boolean;
  /** Encode passages at this many tokens instead of the manifest's `maxPassageLength`. */
  maxPassageLength?: number;
}

/** The serialisable part of {@link EncoderOptions}: what may cross into a worker thread. */
export type EncoderSettings = Omit<EncoderOptions, 'warn'>;

type BertInputName = (typeof GRAPH_INPUTS)[number];

/** ONNX Runtime feeds of a padded batch, for the inputs a BERT graph declares (`session.inputNames`). */
export function bertFeeds(batch: TokenizedBatch, inputNames: readonly string[]): Record<string, Tensor> {
  const dims = [batch.rows, batch.sequenceLength];
  const inputs: Record<BertInputName, BigInt64Array> = {
    input_ids: batch.inputIds,
    attention_mask: batch.attentionMask,
    token_type_ids: batch.tokenTypeIds,
  };
  return Object.fromEntries(inputNames.map((name) => [name, new Tensor('int64', inputs[name as BertInputName], dims)]));
}

/** Why the graph cannot serve this manifest, or undefined when it can. */
function graphSignatureMismatch(session: InferenceSession, manifest: RetrieverManifest): string | undefined {
  const unknown = session.inputNames.find((name) => !(GRAPH_INPUTS as readonly string[]).includes(name));
  if (unknown) return `asks for an input ${unknown} that a BERT encoder does not have`;
  if (!session.inputNames.includes('input_ids') || !session.inputNames.includes('attention_mask')) {
    return 'lacks input_ids or attention_mask';
  }
  if (!session.outputNames.includes(manifest.outputs.embedding)) return `has no output ${manifest.outputs.embedding}`;
  return undefined;
}

/** Encodes text with ONNX Runtime in this thread; `run` blocks the event loop while it computes. */
export class OnnxEncoder implements EmbeddingEncoder {
  private constructor(
    readonly manifest: RetrieverManifest,
    readonly provider: ExecutionProviderName,
    readonly modelFile: string,
    private readonly session: InferenceSession,
    private readonly tokenizer: WordPieceTokenizer,
    private readonly batchLimits: BatchLimits,
    private readonly lengthBatching: boolean,
  ) {}

  static async load(modelDir: string, options: EncoderOptions = {}): Promise<OnnxEncoder> {
    const stored = await readManifest(modelDir);
    const manifest = options.maxPassageLength === undefined ? stored : withMaxPassageLength(stored, options.maxPassageLength);
    const tokenizer = await WordPieceTokenizer.load(modelDir);
    const { session, provider, modelFile } = await createEncoderSession(modelDir, manifest, options);
    const mismatch = graphSignatureMismatch(session, manifest);
    if (mismatch) {
      await session.release();
      throw new ServiceError('bad_request', `the ONNX graph of ${modelDir} ${mismatch}`);
    }
    const limits = { ...defaultBatchLimits(provider), ...options.batchLimits };
    return new OnnxEncoder(manifest, provider, modelFile, session, tokenizer, limits, options.lengthBatching ?? true);
  }

  async encodeQueries(inputs: readonly QueryInput[]): Promise<Float32Array> {
    const texts = inputs.map((input) => composeQueryText(input, this.manifest));
    return this.encode(texts, this.manifest.maxQueryLength);
  }

  async encodePassages(texts: readonly string[]): Promise<Float32Array> {
    return this.encode(
      texts.map((text) => this.manifest.passagePrefix + text),
      this.manifest.maxPassageLength,
    );
  }

  async close(): Promise<void> {
    await this.session.release();
  }

  private async encode(texts: readonly string[], maxLength: number): Promise<Float32Array> {
    const dimension = this.manifest.dimension;
    const sequences = await this.tokenizer.tokenIdsOf(texts, maxLength);
    const lengths = sequences.map((ids) => ids.length);
    const plan = this.lengthBatching ? batchesByLength : batchesInInputOrder;
    const vectors = new Float32Array(texts.length * dimension);
    for (const batch of plan(lengths, this.batchLimits)) {
      const embeddings = await this.run(batch.map((index) => sequences[index]));
      batch.forEach((index, row) => {
        vectors.set(embeddings.subarray(row * dimension, (row + 1) * dimension), index * dimension);
      });
    }
    return vectors;
  }

  /** Embeddings of one padded batch, row-major. */
  private async run(sequences: readonly (readonly number[])[]): Promise<Float32Array> {
    const batch = padBatch(sequences, this.tokenizer.padTokenId);
    const outputName = this.manifest.outputs.embedding;
    const output = (await this.session.run(bertFeeds(batch, this.session.inputNames), [outputName]))[outputName];
    if (output.type !== 'float32' || output.dims.length !== 2 || output.dims[1] !== this.manifest.dimension) {
      throw new ServiceError(
        'internal',
        `${outputName} is ${output.type} [${output.dims.join(', ')}], expected float32 [${batch.rows}, ${this.manifest.dimension}]`,
      );
    }
    return output.data as Float32Array;
  }
}
