import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bertConfigJson } from '../../src/encoder/hf-checkpoint.js';
import type { BertArchitecture } from '../../src/encoder/manifest.js';
import { writeSafetensors, type FloatDtype } from '../../src/encoder/safetensors.js';
import { writeTokenizerFiles } from '../../src/encoder/tokenizer-files.js';
import { generateBertWeights, type BertWeights } from '../../src/encoder/weights.js';

/**
 * Seeded cross-encoder weights whose scores spread with the pair's tokens. Under Hugging Face's
 * N(0, 0.02) init, attention barely mixes other tokens into [CLS], so every pair's logit is the
 * same to a few thousandths, where ties hide ordering bugs: Linear matrices here are ten times
 * wider, the pooler and classifier fifty.
 */
export function rerankerWeights(architecture: BertArchitecture, seed: number): BertWeights {
  const weights = generateBertWeights(architecture, seed, 'classifier');
  for (const [name, tensor] of weights) {
    if (!name.endsWith('.weight') || name.includes('LayerNorm') || name.startsWith('embeddings.')) continue;
    const scale = name.startsWith('pooler.') || name.startsWith('classifier.') ? 50 : 10;
    tensor.data.forEach((value, i, data) => (data[i] = value * scale));
  }
  weights.get('classifier.bias')!.data[0] = 0.25;
  return weights;
}

/**
 * A Hugging Face `BertForSequenceClassification` checkpoint folder as sentence-transformers saves
 * a cross-encoder (encoder tensors under `bert.`, `classifier.*` beside them, tokenizer files),
 * with `configChanges` merged into its config.json.
 */
export async function writeRerankerCheckpoint(
  dir: string,
  options: { architecture: BertArchitecture; tokens: readonly string[]; weights: BertWeights; dtype?: FloatDtype; configChanges?: Record<string, unknown> },
): Promise<string> {
  const { architecture, tokens, weights, dtype = 'F32', configChanges = {} } = options;
  await mkdir(dir, { recursive: true });
  await writeTokenizerFiles(dir, tokens, { modelMaxLength: 512 });
  const config = { ...bertConfigJson(architecture, dtype === 'F32' ? 'float32' : 'float16', 'classifier'), ...configChanges };
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  const stored = new Map([...weights].map(([name, tensor]) => [name.startsWith('classifier.') ? name : `bert.${name}`, tensor]));
  await writeSafetensors(path.join(dir, 'model.safetensors'), stored, dtype, { format: 'pt' });
  return dir;
}
