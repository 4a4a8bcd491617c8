import path from 'node:path';
import { ServiceError } from '../errors.js';
import { pathExists, readRegularFile } from '../file-io.js';
import type { BertArchitecture, ScoreActivation } from './manifest.js';
import { readSafetensors, toFloat32 } from './safetensors.js';
import { bertTensorShapes, checkBertWeights, type BertHead, type BertWeights } from './weights.js';

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';

/** A Hugging Face BERT checkpoint folder, read into canonical tensors. */
export interface BertCheckpoint {
  architecture: BertArchitecture;
  weights: BertWeights;
  /** The dtype(s) the checkpoint stored, e.g. `F16`, or `F16+F32` for a mix. */
  weightsDtype: string;
}

/** `BertConfig`'s defaults, which Hugging Face applies to fields a `config.json` leaves out. */
const CONFIG_DEFAULTS = {
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  max_position_embeddings: 512,
  type_vocab_size: 2,
  layer_norm_eps: 1e-12,
  hidden_act: 'gelu',
  position_embedding_type: 'absolute',
};

type BertConfigJson = Partial<typeof CONFIG_DEFAULTS> & { model_type?: string };

function unsupported(file: string, why: string): ServiceError {
  return new ServiceError('bad_request', `${file}: unsupported model: ${why}`);
}

/** Maps a BERT `config.json` onto the architecture our graph builder implements, refusing the rest. */
export function bertArchitectureFromConfig(json: unknown, file: string): BertArchitecture {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ServiceError('bad_request', `${file}: expected a JSON object`);
  }
  const config = { ...CONFIG_DEFAULTS, ...(json as BertConfigJson) };
  if (config.model_type !== undefined && config.model_type !== 'bert') {
    throw unsupported(file, `model_type "${config.model_type}"; only "bert" is supported`);
  }
  if (config.hidden_act !== 'gelu') {
    throw unsupported(file, `hidden_act "${String(config.hidden_act)}"; only "gelu" (exact erf GELU) is supported`);
  }
  if (config.position_embedding_type !== 'absolute') {
    throw unsupported(
      file,
      `position_embedding_type "${String(config.position_embedding_type)}"; only "absolute" is supported`,
    );
  }
  const sizes = [
    'vocab_size',
    'hidden_size',
    'num_hidden_layers',
    'num_attention_heads',
    'intermediate_size',
    'max_position_embeddings',
    'type_vocab_size',
  ] as const;
  for (const field of sizes) {
    const value = config[field];
    if (!Number.isInteger(value) || value <= 0) {
      throw new ServiceError('bad_request', `${file}: ${field} must be a positive integer, got ${JSON.stringify(value)}`);
    }
  }
  if (config.hidden_size % config.num_attention_heads !== 0) {
    throw new ServiceError(
      'bad_request',
      `${file}: hidden_size ${config.hidden_size} is not a multiple of num_attention_heads ${config.num_attention_heads}`,
    );
  }
  if (!(typeof config.layer_norm_eps === 'number' && config.layer_norm_eps > 0)) {
    throw new ServiceError('bad_request', `${file}: layer_norm_eps must be a positive number`);
  }
  return {
    vocabSize: config.vocab_size,
    hiddenSize: config.hidden_size,
    numHiddenLayers: config.num_hidden_layers,
    numAttentionHeads: config.num_attention_heads,
    intermediateSize: config.intermediate_size,
    maxPositionEmbeddings: config.max_position_embeddings,
    typeVocabSize: config.type_vocab_size,
    layerNormEps: config.layer_norm_eps,
    hiddenAct: 'gelu',
  };
}

/**
 * The `config.json` a Hugging Face `BertModel.save_pretrained` writes for `arch`, or
 * `BertForSequenceClassification`'s with one label for the classifier head.
 */
export function bertConfigJson(arch: BertArchitecture, torchDtype = 'float32', head: BertHead = 'none'): Record<string, unknown> {
  return {
    architectures: [head === 'classifier' ? 'BertForSequenceClassification' : 'BertModel'],
    ...(head === 'classifier' && { id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 } }),
    model_type: 'bert',
    vocab_size: arch.vocabSize,
    hidden_size: arch.hiddenSize,
    num_hidden_layers: arch.numHiddenLayers,
    num_attention_heads: arch.numAttentionHeads,
    intermediate_size: arch.intermediateSize,
    hidden_act: arch.hiddenAct,
    max_position_embeddings: arch.maxPositionEmbeddings,
    type_vocab_size: arch.typeVocabSize,
    layer_norm_eps: arch.layerNormEps,
    position_embedding_type: 'absolute',
    pad_token_id: 0,
    torch_dtype: torchDtype,
  };
}

/** The activations a config may name (torch's class paths), as CrossEncoder imports them. */
const ACTIVATIONS: Readonly<Record<string, ScoreActivation>> = {
  'torch.nn.modules.activation.Sigmoid': 'sigmoid',
  'torch.nn.Sigmoid': 'sigmoid',
  'torch.nn.modules.linear.Identity': 'identity',
  'torch.nn.Identity': 'identity',
};

/**
 * The score activation of a `BertForSequenceClassification` config with one label, refusing any
 * other model. sentence-transformers' CrossEncoder has always applied Sigmoid to a one-label model
 * unless its config names another activation: since v4.0 under `sentence_transformers.activation_fn`,
 * before that under `sbert_ce_default_activation_function` (v4 still reads it).
 */
export function crossEncoderActivation(json: unknown, file: string): ScoreActivation {
  const config = json as {
    architectures?: unknown;
    num_labels?: unknown;
    id2label?: unknown;
    sentence_transformers?: { activation_fn?: unknown };
    sbert_ce_default_activation_function?: unknown;
  };
  const architectures = Array.isArray(config.architectures) ? config.architectures : [];
  if (!architectures.some((name) => typeof name === 'string' && name.endsWith('ForSequenceClassification'))) {
    throw unsupported(
      file,
      `a reranker must be a sequence classifier (architectures ["BertForSequenceClassification"]), got ${JSON.stringify(config.architectures ?? null)}`,
    );
  }
  // PretrainedConfig stores id2label, not num_labels, and defaults to 2 labels without either.
  const labels =
    config.num_labels ?? (typeof config.id2label === 'object' && config.id2label !== null ? Object.keys(config.id2label).length : 2);
  if (labels !== 1) {
    throw unsupported(file, `a reranker scores with one label (num_labels 1), this classifier has ${JSON.stringify(labels)}`);
  }
  const named = config.sentence_transformers?.activation_fn ?? config.sbert_ce_default_activation_function;
  if (named === undefined || named === null) return 'sigmoid';
  const activation = typeof named === 'string' ? ACTIVATIONS[named] : undefined;
  if (!activation) {
    throw unsupported(file, `score activation ${JSON.stringify(named)}; supported: ${Object.keys(ACTIVATIONS).join(', ')}`);
  }
  return activation;
}

/** The parsed `config.json` of a checkpoint folder. */
export async function readCheckpointConfigJson(checkpointDir: string): Promise<{ json: unknown; file: string }> {
  const file = path.join(checkpointDir, CONFIG_FILE);
  const text = (await readRegularFile(file, 'checkpoint config', { missing: `no ${CONFIG_FILE} in checkpoint folder ${checkpointDir}` })).toString('utf8');
  try {
    return { json: JSON.parse(text), file };
  } catch (error) {
    throw new ServiceError('bad_request', `${file}: not JSON (${(error as Error).message})`);
  }
}

export async function readBertConfig(checkpointDir: string): Promise<BertArchitecture> {
  const { json, file } = await readCheckpointConfigJson(checkpointDir);
  return bertArchitectureFromConfig(json, file);
}

/**
 * Reads `config.json` and `model.safetensors` (or the shards a `model.safetensors.index.json`
 * lists). Tensor names may carry the `bert.` prefix of task-head models; buffers such as
 * `position_ids`, and the pooler and heads unless `head` asks for the classifier's, are ignored.
 */
export async function readBertCheckpoint(checkpointDir: string, head: BertHead = 'none'): Promise<BertCheckpoint> {
  const architecture = await readBertConfig(checkpointDir);
  const wanted = bertTensorShapes(architecture, head);
  const weights: BertWeights = new Map();
  const dtypes = new Set<string>();
  for (const file of await weightFiles(checkpointDir)) {
    for (const [storedName, entry] of await readSafetensors(file)) {
      const name = storedName.startsWith('bert.') ? storedName.slice('bert.'.length) : storedName;
      if (!wanted.has(name)) continue;
      if (weights.has(name)) {
        throw new ServiceError('bad_request', `${checkpointDir}: tensor ${name} is stored twice (with and without "bert."?)`);
      }
      weights.set(name, { shape: entry.shape, data: toFloat32(entry, `${file}: ${storedName}`) });
      dtypes.add(entry.dtype);
    }
  }
  checkBertWeights(architecture, weights, checkpointDir, head);
  return { architecture, weights, weightsDtype: [...dtypes].sort().join('+') };
}

/** The safetensors files of a checkpoint: one file, or the shards its index names. */
async function weightFiles(checkpointDir: string): Promise<string[]> {
  const single = path.join(checkpointDir, WEIGHTS_FILE);
  if (await pathExists(single)) return [single];
  const indexFile = path.join(checkpointDir, WEIGHTS_INDEX_FILE);
  if (await pathExists(indexFile)) {
    const text = (await readRegularFile(indexFile, 'safetensors index')).toString('utf8');
    let weightMap: Record<string, string>;
    try {
      weightMap = (JSON.parse(text) as { weight_map: Record<string, string> }).weight_map;
    } catch (error) {
      throw new ServiceError('bad_request', `${indexFile}: not a safetensors index (${(error as Error).message})`);
    }
    const shards = [...new Set(Object.values(weightMap ?? {}))];
    if (shards.length === 0 || shards.some((shard) => typeof shard !== 'string' || shard !== path.basename(shard))) {
      throw new ServiceError('bad_request', `${indexFile}: weight_map must name shard files in the checkpoint folder`);
    }
    return shards.sort().map((shard) => path.join(checkpointDir, shard));
  }
  const hasPickle = await pathExists(path.join(checkpointDir, 'pytorch_model.bin'));
  throw new ServiceError(
    'not_found',
    hasPickle
      ? `${checkpointDir} has pytorch_model.bin but no ${WEIGHTS_FILE}; save it with safe_serialization=True`
      : `no ${WEIGHTS_FILE} in checkpoint folder ${checkpointDir}`,
  );
}
