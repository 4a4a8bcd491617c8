import { createReadStream } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ServiceError } from '../errors.js';
import { checkRegularFile, METADATA_FILE_LIMIT, pathExists, readRegularFile, syncDirectory, syncFile } from '../file-io.js';
import { DEMO_CORPUS_PATH } from '../project-files.js';
import { demoBertWeights } from './demo-weights.js';
import { crossEncoderActivation, readBertCheckpoint, readCheckpointConfigJson } from './hf-checkpoint.js';
import type { GraphPrecision } from '../onnx/graph-builder.js';
import { chooseWeightBits, INT8_SCHEME, weightRange, type Int8Quantization, type WeightBits, type WeightBitsSetting } from '../onnx/int8-quantization.js';
import {
  E5_DEFAULTS,
  MANIFEST_FORMAT,
  RERANKER_MANIFEST_FORMAT,
  writeManifest,
  type BertArchitecture,
  type ModelProvenance,
  type RerankerManifest,
  type RetrieverManifest,
  type ScoreActivation,
} from './manifest.js';
import { buildBertOnnx, CROSS_ENCODER_OUTPUT } from './bert-graph.js';
import { presetArchitecture, presetByName, type PresetName } from './presets.js';
import {
  readVocabularyFile,
  SPECIAL_TOKENS_MAP_FILE,
  TOKENIZER_CONFIG_FILE,
  TOKENIZER_FILE,
  VOCAB_FILE,
  writeTokenizerFiles,
} from './tokenizer-files.js';
import { deriveVocabulary, type Vocabulary } from './vocabulary.js';
import { generateBertWeights, generateRerankerWeights, type BertHead, type BertWeights } from './weights.js';

export const FP32_MODEL_FILE = 'model.onnx';
export const FP16_MODEL_FILE = 'model.fp16.onnx';
export const INT8_MODEL_FILE = 'model.int8.onnx';

/** sentence-transformers' CrossEncoder and Search-R1's rerank server cut (query, passage) pairs at 512 tokens. */
export const RERANKER_MAX_LENGTH = 512;

/** Passages read from the head of a corpus to derive a generated model's vocabulary. */
export const DEFAULT_VOCABULARY_PASSAGES = 100_000;

export interface MakeModelOptions {
  /** The model folder to create; it must not exist unless `overwrite`. */
  outDir: string;
  /** A generated model (default `demo` when no checkpoint is given). */
  preset?: PresetName;
  /** Seed of a generated model's weights (default 0). */
  seed?: number;
  /** A Hugging Face BERT folder (config.json, model.safetensors, tokenizer files) to convert instead. */
  checkpointDir?: string;
  /** wiki18-format JSONL whose passages give a generated model its vocabulary (default: the bundled demo corpus). */
  vocabularyCorpus?: string;
  /** How many passages from the corpus head to read for the vocabulary. */
  vocabularyPassages?: number;
  /** Also write `model.fp16.onnx` (half-precision weights and compute, for CUDA). */
  fp16?: boolean;
  /**
   * Also write `model.int8.onnx` (quantized linear layers, for CPU) with weights of these bits;
   * `auto` picks them for this CPU (see chooseWeightBits).
   */
  int8?: WeightBitsSetting;
  /**
   * A cross-encoder (`reranker.json`): the checkpoint must be a one-label `BertForSequenceClassification`;
   * a preset gets a generated pooler and classifier.
   */
  reranker?: boolean;
  /** The manifest's name; default the preset's name or the checkpoint folder's name. */
  name?: string;
  /** Replace an existing `outDir`. */
  overwrite?: boolean;
}

interface ModelSource {
  name: string;
  architecture: BertArchitecture;
  weights: BertWeights;
  /** A reranker's score activation. */
  activation: ScoreActivation;
  provenance: ModelProvenance;
  writeTokenizer(dir: string): Promise<void>;
}

/**
 * Builds a model folder (`model.onnx`, optional `model.fp16.onnx` and `model.int8.onnx`, Hugging Face tokenizer files,
 * `retriever.json`, or `reranker.json` for a cross-encoder) from a preset or a checkpoint. The folder is assembled beside `outDir` and
 * renamed into place last, so an interrupted build never leaves a folder that looks complete.
 */
export async function makeModel(options: MakeModelOptions & { reranker: true }): Promise<RerankerManifest>;
export async function makeModel(options: MakeModelOptions & { reranker?: false }): Promise<RetrieverManifest>;
export async function makeModel(options: MakeModelOptions): Promise<RetrieverManifest | RerankerManifest>;
export async function makeModel(options: MakeModelOptions): Promise<RetrieverManifest | RerankerManifest> {
  const outDir = path.resolve(options.outDir);
  if ((await pathExists(outDir)) && !options.overwrite) {
    throw new ServiceError('conflict', `model folder ${outDir} already exists`);
  }
  const head: BertHead = options.reranker ? 'classifier' : 'none';
  const source = options.checkpointDir ? await checkpointSource(options, head) : await presetSource(options, head);
  await mkdir(path.dirname(outDir), { recursive: true });
  // Not mkdtemp: its 0700 would keep a server running as another user out of the model folder.
  const staging = path.join(path.dirname(outDir), `.${path.basename(outDir)}.partial-${randomUUID()}`);
  await mkdir(staging);
  try {
    await source.writeTokenizer(staging);
    const graph = (precision: GraphPrecision, bits?: WeightBits) => buildBertOnnx(source.architecture, source.weights, precision, bits, head);
    await writeFile(path.join(staging, FP32_MODEL_FILE), graph('fp32'));
    if (options.fp16) {
      await writeFile(path.join(staging, FP16_MODEL_FILE), graph('fp16'));
    }
    const int8 = options.int8 === undefined ? undefined : int8Quantization(options.int8);
    if (int8) {
      await writeFile(path.join(staging, INT8_MODEL_FILE), graph('int8', int8.weightBits));
    }
    const { architecture } = source;
    const common = {
      name: options.name ?? source.name,
      files: {
        fp32: FP32_MODEL_FILE,
        ...(options.fp16 && { fp16: FP16_MODEL_FILE }),
        ...(int8 && { int8: INT8_MODEL_FILE }),
      },
      ...(int8 && { int8 }),
      architecture,
      provenance: source.provenance,
    };
    const manifest: RetrieverManifest | RerankerManifest =
      head === 'classifier'
        ? {
            format: RERANKER_MANIFEST_FORMAT,
            ...common,
            maxLength: Math.min(RERANKER_MAX_LENGTH, architecture.maxPositionEmbeddings),
            activation: source.activation,
            outputs: { logits: CROSS_ENCODER_OUTPUT },
          }
        : {
            format: MANIFEST_FORMAT,
            dimension: architecture.hiddenSize,
            ...E5_DEFAULTS,
            maxQueryLength: Math.min(E5_DEFAULTS.maxQueryLength, architecture.maxPositionEmbeddings),
            maxPassageLength: Math.min(E5_DEFAULTS.maxPassageLength, architecture.maxPositionEmbeddings),
            outputs: { ...E5_DEFAULTS.outputs },
            ...common,
          };
    await writeManifest(staging, manifest);
    await moveIntoPlace(staging, outDir);
    return manifest;
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}

function int8Quantization(setting: WeightBitsSetting): Int8Quantization {
  const { weightBits, reason } = chooseWeightBits(setting);
  return { weightBits, weightRange: weightRange(weightBits), scheme: INT8_SCHEME, reason };
}

/**
 * Syncs the staged files, then renames the folder into place and syncs its parent: a converted
 * checkpoint is cached by its manifest's presence, so a crash must never leave a manifest beside a
 * torn graph.
 */
async function moveIntoPlace(staging: string, outDir: string): Promise<void> {
  for (const entry of await readdir(staging, { withFileTypes: true })) {
    if (entry.isFile()) await syncFile(path.join(staging, entry.name));
  }
  await syncDirectory(staging);
  if (await pathExists(outDir)) {
    const replaced = `${staging}.replaced`;
    await rename(outDir, replaced);
    await rename(staging, outDir);
    await rm(replaced, { recursive: true, force: true });
  } else {
    await rename(staging, outDir);
  }
  await syncDirectory(path.dirname(outDir));
}

async function presetSource(options: MakeModelOptions, head: BertHead): Promise<ModelSource> {
  const preset = presetByName(options.preset ?? (head === 'classifier' ? 'minilm-l12' : 'demo'));
  if (preset.name === 'demo' && head === 'classifier') {
    throw new ServiceError('bad_request', 'the demo preset is an embedding model; a reranker preset is tiny, minilm-l12 or e5-base');
  }
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new ServiceError('bad_request', `seed must be an integer, got ${seed}`);
  const corpus = path.resolve(options.vocabularyCorpus ?? DEMO_CORPUS_PATH);
  const passages = await corpusHead(corpus, options.vocabularyPassages ?? DEFAULT_VOCABULARY_PASSAGES);
  const derived = deriveVocabulary(passages, { size: preset.vocabulary.size });
  const vocabulary = preset.vocabulary.exact ? derived : withoutPadding(derived);
  const architecture = presetArchitecture(preset, vocabulary.tokens.length);
  const weights =
    head === 'classifier'
      ? generateRerankerWeights(architecture, seed)
      : preset.name === 'demo'
        ? demoBertWeights(architecture, vocabulary, seed)
        : generateBertWeights(architecture, seed);
  return {
    name: preset.name,
    architecture,
    weights,
    activation: 'sigmoid',
    provenance: { source: 'preset', preset: preset.name, seed, vocabularyFrom: corpus, createdAt: new Date().toISOString() },
    writeTokenizer: (dir) =>
      writeTokenizerFiles(dir, vocabulary.tokens, { modelMaxLength: architecture.maxPositionEmbeddings }),
  };
}

/** Drops the `[unusedN]` tokens a derived vocabulary is padded with after its last real token. */
function withoutPadding(vocabulary: Vocabulary): Vocabulary {
  let end = vocabulary.tokens.length;
  while (end > 0 && /^\[unused\d+\]$/.test(vocabulary.tokens[end - 1]!)) end--;
  return {
    tokens: vocabulary.tokens.slice(0, end),
    documentFrequency: vocabulary.documentFrequency.slice(0, end),
    documents: vocabulary.documents,
  };
}

/** The `contents` of the first `limit` rows of a wiki18-format JSONL file. */
async function corpusHead(file: string, limit: number): Promise<string[]> {
  await checkRegularFile(file, 'vocabulary corpus', { missing: `vocabulary corpus ${file} not found` });
  const passages: string[] = [];
  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      if (passages.length >= limit) break;
      if (line.trim() === '') continue;
      let contents: unknown;
      try {
        contents = (JSON.parse(line) as { contents?: unknown }).contents;
      } catch {
        contents = undefined;
      }
      if (typeof contents !== 'string') {
        throw new ServiceError('bad_request', `${file}: line ${passages.length + 1} is not a JSON row with string "contents"`);
      }
      passages.push(contents);
    }
  } finally {
    lines.close();
  }
  if (passages.length === 0) throw new ServiceError('bad_request', `vocabulary corpus ${file} has no passages`);
  return passages;
}

const TOKENIZER_FILES = [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, VOCAB_FILE];

async function checkpointSource(options: MakeModelOptions, head: BertHead): Promise<ModelSource> {
  if (options.preset) {
    throw new ServiceError('bad_request', 'give either a preset or a checkpoint folder, not both');
  }
  const checkpointDir = path.resolve(options.checkpointDir!);
  let activation: ScoreActivation = 'sigmoid';
  if (head === 'classifier') {
    const { json, file } = await readCheckpointConfigJson(checkpointDir);
    activation = crossEncoderActivation(json, file);
  }
  const { architecture, weights, weightsDtype } = await readBertCheckpoint(checkpointDir, head);
  const tokenCount = await checkpointTokenCount(checkpointDir);
  if (tokenCount > architecture.vocabSize) {
    throw new ServiceError(
      'bad_request',
      `${checkpointDir}: the tokenizer has ${tokenCount} tokens but the model only ${architecture.vocabSize} embeddings`,
    );
  }
  return {
    name: path.basename(checkpointDir),
    architecture,
    weights,
    activation,
    provenance: { source: 'checkpoint', checkpointPath: checkpointDir, weightsDtype, createdAt: new Date().toISOString() },
    writeTokenizer: async (dir) => {
      if (await pathExists(path.join(checkpointDir, TOKENIZER_FILE))) {
        for (const file of TOKENIZER_FILES) {
          const source = path.join(checkpointDir, file);
          if (!(await checkRegularFile(source, 'tokenizer file', { maxBytes: METADATA_FILE_LIMIT, optional: true }))) continue;
          await copyFile(source, path.join(dir, file));
        }
        return;
      }
      const tokens = await readVocabularyFile(path.join(checkpointDir, VOCAB_FILE));
      await writeTokenizerFiles(dir, tokens, { modelMaxLength: architecture.maxPositionEmbeddings });
    },
  };
}

/** One more than the highest token id the checkpoint's tokenizer can emit. */
async function checkpointTokenCount(checkpointDir: string): Promise<number> {
  const tokenizerFile = path.join(checkpointDir, TOKENIZER_FILE);
  if (await pathExists(tokenizerFile)) {
    const json = JSON.parse((await readRegularFile(tokenizerFile, 'tokenizer')).toString('utf8')) as {
      model?: { vocab?: Record<string, number> };
      added_tokens?: Array<{ id: number }>;
    };
    const ids = [...Object.values(json.model?.vocab ?? {}), ...(json.added_tokens ?? []).map((token) => token.id)];
    return ids.reduce((max, id) => Math.max(max, id + 1), 0);
  }
  const vocabFile = path.join(checkpointDir, VOCAB_FILE);
  if (await pathExists(vocabFile)) return (await readVocabularyFile(vocabFile)).length;
  throw new ServiceError('bad_request', `${checkpointDir} has neither ${TOKENIZER_FILE} nor ${VOCAB_FILE}`);
}
