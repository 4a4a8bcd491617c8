import { Command } from 'commander';
import { acceptBothSpellings, argParser, printJson } from '../command-line.js';
import { makeModel } from '../encoder/make-model.js';
import { isPresetName, PRESETS, type PresetName } from '../encoder/presets.js';
import { ServiceError } from '../errors.js';
import type { WeightBitsSetting } from '../onnx/int8-quantization.js';
import { anyInteger, weightBits, type ValueType } from '../value-types.js';

const preset: ValueType<PresetName> = {
  expected: `one of ${Object.keys(PRESETS).join(', ')}`,
  read: (raw) => (isPresetName(raw) ? raw : undefined),
};

interface MakeModelCommandOptions {
  out: string;
  preset?: PresetName;
  checkpoint?: string;
  vocabularyCorpus?: string;
  seed: number;
  fp16: boolean;
  int8: boolean;
  int8WeightBits?: WeightBitsSetting;
  reranker: boolean;
  name?: string;
  overwrite: boolean;
}

async function runMakeModel(options: MakeModelCommandOptions): Promise<void> {
  if (options.preset && options.checkpoint) throw new ServiceError('bad_request', 'give exactly one of --preset or --checkpoint');
  if (!options.preset && !options.checkpoint && !options.reranker) {
    throw new ServiceError('bad_request', 'give exactly one of --preset or --checkpoint');
  }
  printJson(
    await makeModel({
      outDir: options.out,
      preset: options.preset,
      checkpointDir: options.checkpoint,
      vocabularyCorpus: options.vocabularyCorpus,
      seed: options.seed,
      fp16: options.fp16,
      ...((options.int8 || options.int8WeightBits !== undefined) && { int8: options.int8WeightBits ?? 'auto' }),
      reranker: options.reranker,
      name: options.name,
      overwrite: options.overwrite,
    }),
  );
}

export function makeModelCommand(): Command {
  const command = new Command('make-model')
    .description('build an ONNX model folder from a preset or a Hugging Face BERT checkpoint')
    .requiredOption('--out <dir>', 'model folder to create')
    .option('--preset <name>', 'tiny | e5-base | demo | minilm-l12 (generated weights)', argParser(preset))
    .option('--checkpoint <dir>', 'Hugging Face/tevatron BERT folder (config.json + model.safetensors)')
    .option(
      '--reranker',
      'a cross-encoder (reranker.json) for serve --reranker_model: a one-label BertForSequenceClassification checkpoint, or a preset with a generated classifier (default preset minilm-l12)',
      false,
    )
    .option('--vocabulary-corpus <jsonl>', "wiki18 JSONL to derive a generated model's vocabulary from (default: the bundled demo/corpus.jsonl)")
    .option('--seed <n>', 'seed of generated weights', argParser(anyInteger), 0)
    .option('--fp16', 'also write model.fp16.onnx for CUDA', false)
    .option('--int8', 'also write model.int8.onnx (quantized linear layers) for CPU', false)
    .option(
      '--int8-weight-bits <bits>',
      'auto | 8 | 7 weight bits of model.int8.onnx, implies --int8 (default auto: 7 on x86 CPUs without VNNI/AMX)',
      argParser(weightBits),
    )
    .option('--name <name>', 'model name in retriever.json')
    .option('--overwrite', 'replace an existing folder', false)
    .action(runMakeModel);
  return acceptBothSpellings(command);
}
