import { Command, Option } from 'commander';
import { acceptBothSpellings, argParser, printJson } from '../command-line.js';
import { CorpusStore } from '../corpus/corpus-store.js';
import type { DevicePreference } from '../onnx/execution-provider.js';
import { MultiDeviceEncoder } from '../encoder/multi-device-encoder.js';
import { buildIndex, type BuildIndexResult } from '../index/build-index.js';
import { DEFAULT_TRAIN_ROWS } from '../index/convert-index.js';
import { selectedRows, type RowSelection } from '../index/row-range.js';
import { buildIndexOfType, FLAT_TYPE, type TypedBuildResult } from '../index/typed-build.js';
import { anyInteger, device, deviceList, rowSlice, shardOf } from '../value-types.js';
import { ServiceError } from '../errors.js';
import { runConvertIndex, type ConvertIndexCommandOptions } from './convert-index.js';
import { interruptible } from './interrupt.js';
import { progressBar } from './progress.js';

interface BuildIndexCommandOptions {
  modelDir: string;
  corpusPath: string;
  outPath: string;
  /** Passages per encoder call on each device. */
  batchSize: number;
  device: DevicePreference;
  /** One encoder per id; a batch is shared among them. */
  deviceIds: readonly number[];
  sidecarPath?: string;
  restart: boolean;
  /** Overrides the model's retriever.json `maxPassageLength`. */
  maxPassageLength?: number;
  /** FlashRAG's `--faiss_type` (default `Flat`); other types are converted from an encoded Flat. */
  faissType?: string;
  /** How a non-Flat type is trained and built. */
  conversion?: Pick<ConvertIndexCommandOptions, 'efConstruction' | 'trainRows' | 'seed'>;
  /** Encode only these rows into a part, for `merge-index` (one machine of a spread build). */
  part?: RowSelection;
}

/**
 * `build-index`: a Flat index is encoded straight into `<out>`. `--faiss_type HNSW64` (any type
 * but Flat) encodes into `<out>.flat` (resumable as any build), converts that into `<out>` without
 * re-encoding, then deletes it. A stopped conversion keeps the encoded Flat, so running the
 * command again only converts (`--restart` encodes again).
 */
export function runBuildIndex(options: BuildIndexCommandOptions): Promise<BuildIndexResult | TypedBuildResult> {
  if (options.part && (options.faissType ?? FLAT_TYPE) !== FLAT_TYPE) {
    throw new ServiceError('bad_request', `a part (--rows/--shard) is always Flat: give --faiss-type ${options.faissType} to merge-index, which converts the merged index`, {
      field: '--faiss-type',
    });
  }
  return buildIndexOfType({
    outPath: options.outPath,
    faissType: options.faissType,
    restart: options.restart,
    encode: (flatPath) => encodeFlatIndex({ ...options, outPath: flatPath }),
    convert: (flatPath, faissType) => runConvertIndex({ ...options.conversion, sourcePath: flatPath, outPath: options.outPath, faissType }),
    onReuse: (flatPath) => process.stderr.write(`reusing the encoded ${flatPath} (--restart encodes the corpus again)\n`),
  });
}

/** Encoding a Flat index: Ctrl-C keeps the partial file, and running the same command again resumes it. */
async function encodeFlatIndex(options: BuildIndexCommandOptions): Promise<BuildIndexResult> {
  const scan = progressBar('scanning the corpus for row offsets', 'bytes');
  const corpus = await CorpusStore.open(options.corpusPath, { sidecarPath: options.sidecarPath, onProgress: (d, t) => scan.update(d, t) });
  scan.stop();
  const rows = options.part && selectedRows(options.part, corpus.rows);
  const encoder = await MultiDeviceEncoder.load(options.modelDir, options.deviceIds, { device: options.device, maxPassageLength: options.maxPassageLength });
  const bar = progressBar('encoding passages', 'rows');
  try {
    return await interruptible((signal) =>
      buildIndex({
        corpus,
        encoder,
        outPath: options.outPath,
        batchSize: options.batchSize * options.deviceIds.length,
        restart: options.restart,
        rows,
        signal,
        onProgress: (done, total) => bar.update(done, total),
      }),
    );
  } finally {
    bar.stop();
    await Promise.allSettled([encoder.close(), corpus.close()]);
  }
}

/** The options as commander names them, after the flags. */
type BuildIndexFlags = Omit<BuildIndexCommandOptions, 'modelDir' | 'corpusPath' | 'outPath' | 'sidecarPath' | 'conversion' | 'part'> & {
  rows?: RowSelection;
  shard?: RowSelection;
  model: string;
  corpus: string;
  out: string;
  sidecar?: string;
  efConstruction?: number;
  trainRows?: number;
  seed: number;
};

export function buildIndexCommand(): Command {
  const command = new Command('build-index')
    .description('encode a wiki18 JSONL corpus into a FAISS Flat inner-product index (resumable), or a row range of it into a part for merge-index')
    .requiredOption('--model <dir>', 'model folder')
    .requiredOption('--corpus <jsonl>', 'wiki18-format corpus')
    .requiredOption('--out <file>', 'index file to write, e.g. e5_Flat.index (with --rows/--shard: the part file, e.g. e5_Flat.part-0-of-4)')
    .addOption(new Option('--rows <start:end>', 'encode only corpus rows START to END (END excluded, empty for the end) into a part for merge-index').argParser(argParser(rowSlice)).conflicts('shard'))
    .addOption(new Option('--shard <i/n>', 'encode only shard I of N into a part for merge-index: I from 0, rows floor(I*rows/N) to floor((I+1)*rows/N)').argParser(argParser(shardOf)))
    .option('--batch-size <n>', 'passages per encoder call on each device', argParser(anyInteger), 64)
    .option('--device <device>', "cuda | cpu | auto (CUDA runs the model's model.fp16.onnx when present)", argParser(device), 'auto')
    .option('--device-ids <ids>', 'GPUs to encode on, e.g. 0,1,2,3: one encoder each, every batch shared among them', argParser(deviceList), [0])
    .option('--sidecar <file>', 'corpus offsets file (default beside the corpus)')
    .option('--restart', 'discard a partial build instead of resuming it', false)
    .option('--max-passage-length <n>', "tokens per passage (default: the model's retriever.json, 256 as Search-R1 and FlashRAG index)", argParser(anyInteger))
    .option(
      '--faiss-type <type>',
      'FlashRAG --faiss_type: Flat, HNSW64, HNSW32,SQ8, IVF4096,Flat, IVF4096,PQ64 or any faiss factory string (non-Flat: encoded into <out>.flat, then converted; parts are Flat: give it to merge-index)',
      'Flat',
    )
    .option('--ef-construction <n>', 'HNSW efConstruction (faiss default 40)', argParser(anyInteger))
    .option('--train-rows <n>', `rows sampled to train IVF/PQ/SQ (default ${DEFAULT_TRAIN_ROWS})`, argParser(anyInteger))
    .option('--seed <n>', 'seed of the training sample', argParser(anyInteger), 0)
    .action(async ({ model, corpus, out, sidecar, efConstruction, trainRows, seed, rows, shard, ...rest }: BuildIndexFlags) => {
      printJson(
        await runBuildIndex({
          ...rest,
          modelDir: model,
          corpusPath: corpus,
          outPath: out,
          sidecarPath: sidecar,
          conversion: { efConstruction, trainRows, seed },
          part: rows ?? shard,
        }),
      );
    });
  return acceptBothSpellings(command);
}
