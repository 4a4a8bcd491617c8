import { Command } from 'commander';
import { acceptBothSpellings, argParser, printJson } from '../command-line.js';
import { CorpusStore } from '../corpus/corpus-store.js';
import type { DevicePreference } from '../onnx/execution-provider.js';
import { MultiDeviceEncoder } from '../encoder/multi-device-encoder.js';
import { buildIndex, type BuildIndexResult } from '../index/build-index.js';
import { anyInteger, device, deviceList } from '../value-types.js';
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
}

/** `build-index`: Ctrl-C keeps the partial file, and running the same command again resumes it. */
export async function runBuildIndex(options: BuildIndexCommandOptions): Promise<BuildIndexResult> {
  const scan = progressBar('scanning the corpus for row offsets', 'bytes');
  const corpus = await CorpusStore.open(options.corpusPath, { sidecarPath: options.sidecarPath, onProgress: (d, t) => scan.update(d, t) });
  scan.stop();
  const encoder = await MultiDeviceEncoder.load(options.modelDir, options.deviceIds, { device: options.device, maxPassageLength: options.maxPassageLength });
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = progressBar('encoding passages', 'rows');
  try {
    return await buildIndex({
      corpus,
      encoder,
      outPath: options.outPath,
      batchSize: options.batchSize * options.deviceIds.length,
      restart: options.restart,
      signal: abort.signal,
      onProgress: (done, total) => bar.update(done, total),
    });
  } finally {
    bar.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.allSettled([encoder.close(), corpus.close()]);
  }
}

/** The options as commander names them, after the flags. */
type BuildIndexFlags = Omit<BuildIndexCommandOptions, 'modelDir' | 'corpusPath' | 'outPath' | 'sidecarPath'> & {
  model: string;
  corpus: string;
  out: string;
  sidecar?: string;
};

export function buildIndexCommand(): Command {
  const command = new Command('build-index')
    .description('encode a wiki18 JSONL corpus into a FAISS Flat inner-product index (resumable)')
    .requiredOption('--model <dir>', 'model folder')
    .requiredOption('--corpus <jsonl>', 'wiki18-format corpus')
    .requiredOption('--out <file>', 'index file to write, e.g. e5_Flat.index')
    .option('--batch-size <n>', 'passages per encoder call on each device', argParser(anyInteger), 64)
    .option('--device <device>', "cuda | cpu | auto (CUDA runs the model's model.fp16.onnx when present)", argParser(device), 'auto')
    .option('--device-ids <ids>', 'GPUs to encode on, e.g. 0,1,2,3: one encoder each, every batch shared among them', argParser(deviceList), [0])
    .option('--sidecar <file>', 'corpus offsets file (default beside the corpus)')
    .option('--restart', 'discard a partial build instead of resuming it', false)
    .option('--max-passage-length <n>', "tokens per passage (default: the model's retriever.json, 256 as Search-R1 and FlashRAG index)", argParser(anyInteger))
    .action(async ({ model, corpus, out, sidecar, ...rest }: BuildIndexFlags) => {
      printJson(await runBuildIndex({ ...rest, modelDir: model, corpusPath: corpus, outPath: out, sidecarPath: sidecar }));
    });
  return acceptBothSpellings(command);
}
