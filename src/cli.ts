#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { buildTypedIndexCommand } from './commands/build-index.js';
import { convertIndexCommand } from './commands/convert-index.js';
import { serve } from './commands/serve.js';
import { acceptBothSpellings, addServeOptions, CONFIG_DEFAULTS, deviceOrdinals, envName, resolveServeConfig } from './config.js';
import { ensureDemo } from './demo.js';
import { DEFAULT_TRAIN_ROWS } from './index/convert-index.js';
import type { WeightBitsSetting } from './onnx/int8-quantization.js';
import { makeModel } from './encoder/make-model.js';
import { isPresetName, type PresetName } from './encoder/presets.js';
import type { DevicePreference } from './onnx/execution-provider.js';
import { ServiceError } from './errors.js';
import { DEFAULT_ROUND_DATASET } from './training/construction.js';
import { constructTrainingFile } from './training/construction-file.js';

function integer(value: string): number {
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed)) throw new InvalidArgumentError('expected an integer');
  return parsed;
}

function preset(value: string): PresetName {
  if (!isPresetName(value)) throw new InvalidArgumentError('expected tiny, e5-base or demo');
  return value;
}

function device(value: string): DevicePreference {
  if (value !== 'cuda' && value !== 'cpu' && value !== 'auto') throw new InvalidArgumentError('expected cuda, cpu or auto');
  return value;
}

function weightBits(value: string): WeightBitsSetting {
  if (value === 'auto') return value;
  if (value === '8' || value === '7') return Number(value) as 8 | 7;
  throw new InvalidArgumentError('expected auto, 8 or 7');
}

function deviceIds(value: string): number[] {
  const ids = deviceOrdinals(value);
  if (!ids) throw new InvalidArgumentError('expected distinct device ordinals separated by commas, e.g. 0,1');
  return ids;
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

const program = new Command('agentic-retriever')
  .description('Search-R1-compatible retrieval server for Agentic-R/E5 retrievers')
  .showHelpAfterError();

addServeOptions(program.command('serve').description('serve POST /retrieve (flags of Search-R1 retrieval_server.py accepted)')).action(
  async (_options, command: Command) => serve(resolveServeConfig(command, process.env)),
);

const makeModelCommand = program
  .command('make-model')
  .description('build an ONNX model folder from a preset or a Hugging Face BERT checkpoint')
  .requiredOption('--out <dir>', 'model folder to create')
  .option('--preset <name>', 'tiny | e5-base | demo (generated weights)', preset)
  .option('--checkpoint <dir>', 'Hugging Face/tevatron BERT folder (config.json + model.safetensors)')
  .option('--vocabulary-corpus <jsonl>', 'wiki18 JSONL to derive a generated model\'s vocabulary from (default: the bundled demo/corpus.jsonl)')
  .option('--seed <n>', 'seed of generated weights', integer, 0)
  .option('--fp16', 'also write model.fp16.onnx for CUDA', false)
  .option('--int8', 'also write model.int8.onnx (quantized linear layers) for CPU', false)
  .option('--int8-weight-bits <bits>', 'auto | 8 | 7 weight bits of model.int8.onnx, implies --int8 (default auto: 7 on x86 CPUs without VNNI/AMX)', weightBits)
  .option('--name <name>', 'model name in retriever.json')
  .option('--overwrite', 'replace an existing folder', false)
  .action(async (options: { out: string; preset?: PresetName; checkpoint?: string; vocabularyCorpus?: string; seed: number; fp16: boolean; int8: boolean; int8WeightBits?: WeightBitsSetting; name?: string; overwrite: boolean }) => {
    if (!options.preset === !options.checkpoint) throw new ServiceError('bad_request', 'give exactly one of --preset or --checkpoint');
    print(
      await makeModel({
        outDir: options.out,
        preset: options.preset,
        checkpointDir: options.checkpoint,
        vocabularyCorpus: options.vocabularyCorpus,
        seed: options.seed,
        fp16: options.fp16,
        ...((options.int8 || options.int8WeightBits !== undefined) && { int8: options.int8WeightBits ?? 'auto' }),
        name: options.name,
        overwrite: options.overwrite,
      }),
    );
  });

const buildIndexCli = program
  .command('build-index')
  .description('encode a wiki18 JSONL corpus into a FAISS Flat inner-product index (resumable)')
  .requiredOption('--model <dir>', 'model folder')
  .requiredOption('--corpus <jsonl>', 'wiki18-format corpus')
  .requiredOption('--out <file>', 'index file to write, e.g. e5_Flat.index')
  .option('--batch-size <n>', 'passages per encoder call on each device', integer, 64)
  .option('--device <device>', 'cuda | cpu | auto (CUDA runs the model\'s model.fp16.onnx when present)', device, 'auto')
  .option('--device-ids <ids>', 'GPUs to encode on, e.g. 0,1,2,3: one encoder each, every batch shared among them', deviceIds, [0])
  .option('--sidecar <file>', 'corpus offsets file (default beside the corpus)')
  .option('--restart', 'discard a partial build instead of resuming it', false)
  .option('--max-passage-length <n>', "tokens per passage (default: the model's retriever.json, 256 as Search-R1 and FlashRAG index)", integer)
  .option('--faiss-type <type>', 'FlashRAG --faiss_type: Flat, HNSW64, HNSW32,SQ8, IVF4096,Flat, IVF4096,PQ64 or any faiss factory string (non-Flat: encoded into <out>.flat, then converted)', 'Flat')
  .option('--ef-construction <n>', 'HNSW efConstruction (faiss default 40)', integer)
  .option('--train-rows <n>', `rows sampled to train IVF/PQ/SQ (default ${DEFAULT_TRAIN_ROWS})`, integer)
  .option('--seed <n>', 'seed of the training sample', integer, 0)
  .action(async (options: { model: string; corpus: string; out: string; batchSize: number; device: DevicePreference; deviceIds: number[]; sidecar?: string; restart: boolean; maxPassageLength?: number; faissType: string; efConstruction?: number; trainRows?: number; seed: number }) => {
    print(
      await buildTypedIndexCommand({
        modelDir: options.model,
        corpusPath: options.corpus,
        outPath: options.out,
        batchSize: options.batchSize,
        device: options.device,
        deviceIds: options.deviceIds,
        sidecarPath: options.sidecar,
        restart: options.restart,
        maxPassageLength: options.maxPassageLength,
        faissType: options.faissType,
        conversion: { efConstruction: options.efConstruction, trainRows: options.trainRows, seed: options.seed },
      }),
    );
  });

const convertIndexCli = program
  .command('convert-index')
  .description('build any FAISS index type from a Flat inner-product index (ours or FlashRAG\'s) without re-encoding the corpus')
  .requiredOption('--index <file>', 'Flat index to read, e.g. e5_Flat.index')
  .requiredOption('--out <file>', 'index file to write, e.g. e5_HNSW64.index')
  // Not a required option: commander checks those before the `--faiss_type` spelling is moved over.
  .option('--faiss-type <type>', 'required: FlashRAG --faiss_type or faiss factory string: HNSW64, HNSW32,SQ8, IVF4096,Flat, IVF4096,PQ64, SQ8, ...')
  .option('--ef-construction <n>', 'HNSW efConstruction (faiss default 40)', integer)
  .option('--train-rows <n>', `rows sampled to train IVF/PQ/SQ (default ${DEFAULT_TRAIN_ROWS})`, integer)
  .option('--seed <n>', 'seed of the training sample', integer, 0)
  .option('--batch-rows <n>', 'rows read and added per faiss call', integer)
  .action(async (options: { index: string; out: string; faissType?: string; efConstruction?: number; trainRows?: number; seed: number; batchRows?: number }) => {
    const { index, out, faissType, ...rest } = options;
    if (faissType === undefined) throw new ServiceError('bad_request', 'give --faiss-type (e.g. HNSW64)');
    print(await convertIndexCommand({ ...rest, faissType, sourcePath: index, outPath: out }));
  });

const buildDemoCommand = program
  .command('build-demo')
  .description('build the bundled demo model and index (in <data_dir>/demo) if missing or stale')
  .option('--data_dir <dir>', `service state folder, as for serve (env ${envName('data_dir')})`, process.env[envName('data_dir')] ?? CONFIG_DEFAULTS.dataDir)
  .action(async (options: { data_dir: string }) => {
    print(await ensureDemo(options.data_dir, (line) => process.stderr.write(`[demo] ${line}\n`)));
  });

const constructCommand = program
  .command('construct-training')
  .description('apply the Agentic-R selection rule to scored rounds (JSONL) and write training records (JSONL)')
  .requiredOption('--input <jsonl>', 'scored rounds')
  .requiredOption('--output <jsonl>', 'training records to write')
  .option('--seed <n>', 'seed of the negative sampling', integer, 0)
  .option('--dataset <name>', 'dataset of rounds that name none', DEFAULT_ROUND_DATASET)
  .option('--corpus-rows <n>', 'reject passage ids at or past this row count', integer)
  .action(async (options: { input: string; output: string; seed: number; dataset: string; corpusRows?: number }) => {
    const { seed, dataset, corpusRows } = options;
    print(await constructTrainingFile(options.input, options.output, { seed, dataset, corpusRows }));
  });

// Every command takes both flag spellings, as serve does: `--batch-size` or `--batch_size`.
for (const command of [makeModelCommand, buildIndexCli, convertIndexCli, buildDemoCommand, constructCommand]) acceptBothSpellings(command);

program.parseAsync(process.argv).catch((error: unknown) => {
  const message = error instanceof ServiceError ? `${error.code}: ${error.message}` : String((error as Error).stack ?? error);
  process.stderr.write(`error: ${message}\n`);
  process.exitCode = 1;
});
