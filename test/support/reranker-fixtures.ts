import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bertConfigJson } from '../../src/encoder/hf-checkpoint.js';
import type { BertArchitecture } from '../../src/encoder/manifest.js';
import { writeSafetensors, type FloatDtype } from '../../src/encoder/safetensors.js';
import { writeTokenizerFiles } from '../../src/encoder/tokenizer-files.js';
import type { BertWeights } from '../../src/encoder/weights.js';

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
