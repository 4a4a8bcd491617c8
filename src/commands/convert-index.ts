import { Command } from 'commander';
import { acceptBothSpellings, argParser, printJson } from '../command-line.js';
import { ServiceError } from '../errors.js';
import { faissHostEnv } from '../index/faiss-host.js';
import { convertIndex, DEFAULT_TRAIN_ROWS, type ConvertIndexOptions, type ConvertIndexResult } from '../index/convert-index.js';
import { anyInteger } from '../value-types.js';
import { interruptible } from './interrupt.js';
import { progressBar, type Progress } from './progress.js';

export type ConvertIndexCommandOptions = Omit<ConvertIndexOptions, 'onProgress' | 'log' | 'signal'>;

/**
 * `convert-index` (and the last step of `build-index --faiss_type`): faiss runs in this process,
 * so OpenBLAS and OpenMP get a faiss host's settings before faiss-node loads. Ctrl-C stops
 * between batches and leaves no file under the output name.
 */
export async function runConvertIndex(options: ConvertIndexCommandOptions): Promise<ConvertIndexResult> {
  Object.assign(process.env, faissHostEnv(process.env));
  const bars: Partial<Record<'sampling' | 'adding', Progress>> = {};
  const bar = (stage: 'sampling' | 'adding'): Progress => {
    if (stage === 'adding') bars.sampling?.stop();
    return (bars[stage] ??= progressBar(stage === 'sampling' ? 'reading the training sample' : `adding vectors to ${options.faissType}`, 'rows'));
  };
  try {
    return await interruptible(
      (signal) =>
        convertIndex({
          ...options,
          signal,
          onProgress: (stage, done, total) => bar(stage).update(done, total),
          log: (line) => process.stderr.write(`${line}\n`),
        }),
      'conversion stopped: no index was written (a new run starts over)',
    );
  } finally {
    Object.values(bars).forEach((progress) => progress.stop());
  }
}

/** The options as commander names them, after the flags. */
type ConvertIndexFlags = Omit<ConvertIndexCommandOptions, 'sourcePath' | 'outPath' | 'faissType'> & {
  index: string;
  out: string;
  faissType?: string;
};

export function convertIndexCommand(): Command {
  const command = new Command('convert-index')
    .description("build any FAISS index type from a Flat inner-product index (ours or FlashRAG's) without re-encoding the corpus")
    .requiredOption('--index <file>', 'Flat index to read, e.g. e5_Flat.index')
    .requiredOption('--out <file>', 'index file to write, e.g. e5_HNSW64.index')
    // Not a required option: commander checks those before the `--faiss_type` spelling is moved over.
    .option('--faiss-type <type>', 'required: FlashRAG --faiss_type or faiss factory string: HNSW64, HNSW32,SQ8, IVF4096,Flat, IVF4096,PQ64, SQ8, ...')
    .option('--ef-construction <n>', 'HNSW efConstruction (faiss default 40)', argParser(anyInteger))
    .option('--train-rows <n>', `rows sampled to train IVF/PQ/SQ (default ${DEFAULT_TRAIN_ROWS})`, argParser(anyInteger))
    .option('--seed <n>', 'seed of the training sample', argParser(anyInteger), 0)
    .option('--batch-rows <n>', 'rows read and added per faiss call', argParser(anyInteger))
    .action(async ({ index, out, faissType, ...rest }: ConvertIndexFlags) => {
      if (faissType === undefined) throw new ServiceError('bad_request', 'give --faiss-type (e.g. HNSW64)');
      printJson(await runConvertIndex({ ...rest, faissType, sourcePath: index, outPath: out }));
    });
  return acceptBothSpellings(command);
}
