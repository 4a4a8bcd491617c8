import { ServiceError } from '../errors.js';
import type { BertArchitecture } from './manifest.js';

export type PresetName = 'tiny' | 'e5-base' | 'demo' | 'minilm-l12';

/** How a generated model's vocabulary is sized from the tokens a corpus yields. */
export interface PresetVocabulary {
  size: number;
  /** Pad with `[unused]` tokens up to `size` (a real model's vocabulary size), instead of capping at it. */
  exact: boolean;
}

export interface BertPreset {
  name: PresetName;
  shape: Omit<BertArchitecture, 'vocabSize'>;
  vocabulary: PresetVocabulary;
}

const BERT_SHAPE = {
  maxPositionEmbeddings: 512,
  typeVocabSize: 2,
  layerNormEps: 1e-12,
  hiddenAct: 'gelu',
} as const;

export const PRESETS: Readonly<Record<PresetName, BertPreset>> = {
  /** Small enough that a test builds and runs it in milliseconds. */
  tiny: {
    name: 'tiny',
    shape: { ...BERT_SHAPE, hiddenSize: 32, numHiddenLayers: 2, numAttentionHeads: 4, intermediateSize: 64 },
    vocabulary: { size: 8192, exact: false },
  },
  /** The shape of intfloat/e5-base-v2 (and Agentic-R), for honest speed and memory measurements. */
  'e5-base': {
    name: 'e5-base',
    shape: { ...BERT_SHAPE, hiddenSize: 768, numHiddenLayers: 12, numAttentionHeads: 12, intermediateSize: 3072 },
    vocabulary: { size: 30522, exact: true },
  },
  /**
   * A lexical matcher dressed as BERT (see demo-weights.ts). Random word directions overlap by
   * about 1/√hidden, so width buys ranking quality; its layers only pass tokens through, so one
   * is enough. On the 1k wiki18 sample, 3-word queries drawn from a passage found it first 151
   * times in 200 at 768 × 1 layer, 135 at 512 × 2 and 123 at 384 × 2, for similar compute.
   */
  demo: {
    name: 'demo',
    shape: { ...BERT_SHAPE, hiddenSize: 768, numHiddenLayers: 1, numAttentionHeads: 12, intermediateSize: 768 },
    vocabulary: { size: 30522, exact: false },
  },
  /**
   * The shape of cross-encoder/ms-marco-MiniLM-L12-v2, Search-R1's reranker (make-model --reranker),
   * for honest reranking cost measurements; its generated weights rank nothing in particular.
   */
  'minilm-l12': {
    name: 'minilm-l12',
    shape: { ...BERT_SHAPE, hiddenSize: 384, numHiddenLayers: 12, numAttentionHeads: 12, intermediateSize: 1536 },
    vocabulary: { size: 30522, exact: true },
  },
};

export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}

export function presetByName(name: string): BertPreset {
  if (!isPresetName(name)) {
    throw new ServiceError('bad_request', `unknown model preset "${name}"; known: ${Object.keys(PRESETS).join(', ')}`);
  }
  return PRESETS[name];
}

export function presetArchitecture(preset: BertPreset, vocabSize: number): BertArchitecture {
  return { ...preset.shape, vocabSize };
}
