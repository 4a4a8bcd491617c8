import { Command } from 'commander';
import { acceptBothSpellings, argParser, printJson } from '../command-line.js';
import { DEFAULT_TRAIN_ROWS } from '../index/convert-index.js';
import { mergeIndexParts, type MergeIndexResult } from '../index/merge-index.js';
import { buildIndexOfType, FLAT_TYPE, type TypedBuildResult } from '../index/typed-build.js';
import { anyInteger } from '../value-types.js';
import { runConvertIndex, type ConvertIndexCommandOptions } from './convert-index.js';
import { interruptible } from './interrupt.js';
import { progressBar } from './progress.js';

interface MergeIndexCommandOptions {
  partPaths: readonly string[];
  outPath: string;
  /** FlashRAG's `--faiss_type`: other than Flat, the merged Flat is converted as `convert-index` would. */
  faissType?: string;
  conversion?: Pick<ConvertIndexCommandOptions, 'efConstruction' | 'trainRows' | 'seed'>;
}

/**
 * `merge-index`: the parts are merged into `<out>` (Flat), or into `<out>.flat` and converted into
 * `<out>` for any other type, as `build-index --faiss_type` does with the Flat it encodes.
 */
export function runMergeIndex(options: MergeIndexCommandOptions): Promise<MergeIndexResult | TypedBuildResult<MergeIndexResult>> {
  return buildIndexOfType({
    outPath: options.outPath,
    faissType: options.faissType,
    encode: (flatPath) => mergeParts(options.partPaths, flatPath),
    convert: (flatPath, faissType) => runConvertIndex({ ...options.conversion, sourcePath: flatPath, outPath: options.outPath, faissType }),
    onReuse: (flatPath) => process.stderr.write(`reusing the merged ${flatPath} (delete it to merge again)\n`),
  });
}

/** Ctrl-C stops the copy and leaves nothing under the output name. */
async function mergeParts(partPaths: readonly string[], outPath: string): Promise<MergeIndexResult> {
  const bar = progressBar('merging index parts', 'rows');
  try {
    return await interruptible(
      (signal) => mergeIndexParts({ partPaths, outPath, signal, onProgress: (done, total) => bar.update(done, total) }),
      'merge stopped: no index was written (a new run starts over)',
    );
  } finally {
    bar.stop();
  }
}

/** The options as commander names them, after the flags. */
interface MergeIndexFlags {
  out: string;
  faissType: string;
  efConstruction?: number;
  trainRows?: number;
  seed: number;
}

export function mergeIndexCommand(): Command {
  const command = new Command('merge-index')
    .description('join the parts of an index built on several machines (build-index --rows or --shard) into one FAISS Flat index, without re-encoding')
    .argument('<parts...>', 'part files in any order, e.g. parts/e5_Flat.part-*; together they must hold every corpus row once')
    .requiredOption('--out <file>', 'index file to write, e.g. e5_Flat.index')
    .option(
      '--faiss-type <type>',
      'Flat, or any type convert-index builds (HNSW64, IVF4096,PQ64, ...): the parts are merged into <out>.flat, then converted',
      FLAT_TYPE,
    )
    .option('--ef-construction <n>', 'HNSW efConstruction (faiss default 40)', argParser(anyInteger))
    .option('--train-rows <n>', `rows sampled to train IVF/PQ/SQ (default ${DEFAULT_TRAIN_ROWS})`, argParser(anyInteger))
    .option('--seed <n>', 'seed of the training sample', argParser(anyInteger), 0)
    .action(async (parts: string[], { out, faissType, ...conversion }: MergeIndexFlags) => {
      printJson(await runMergeIndex({ partPaths: parts, outPath: out, faissType, conversion }));
    });
  return acceptBothSpellings(command);
}
