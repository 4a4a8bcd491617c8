import { CorpusStore } from '../corpus/corpus-store.js';
import type { DevicePreference } from '../onnx/execution-provider.js';
import { MultiDeviceEncoder } from '../encoder/multi-device-encoder.js';
import { rm } from 'node:fs/promises';
import { pathExists } from '../file-io.js';
import { buildIndex, type BuildIndexResult } from '../index/build-index.js';
import type { ConvertIndexResult } from '../index/convert-index.js';
import { convertIndexCommand, type ConvertIndexCommand } from './convert-index.js';
import { progressBar } from './progress.js';

export interface BuildIndexCommand {
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
  conversion?: Pick<ConvertIndexCommand, 'efConstruction' | 'trainRows' | 'seed'>;
}

/**
 * `build-index --faiss_type HNSW64` (any type but Flat): encodes into `<out>.flat` (resumable as
 * any build), converts that into `<out>` without re-encoding, then deletes it. A stopped
 * conversion keeps the encoded Flat, so running the command again only converts (`--restart`
 * encodes again).
 */
export async function buildTypedIndexCommand(
  options: BuildIndexCommand,
): Promise<BuildIndexResult | { encoded?: BuildIndexResult; conversion: ConvertIndexResult }> {
  if (options.faissType === undefined || options.faissType === 'Flat') return buildIndexCommand(options);
  const flatPath = `${options.outPath}.flat`;
  const reuse = !options.restart && (await pathExists(flatPath));
  if (reuse) process.stderr.write(`reusing the encoded ${flatPath} (--restart encodes the corpus again)\n`);
  const encoded = reuse ? undefined : await buildIndexCommand({ ...options, outPath: flatPath });
  const conversion = await convertIndexCommand({ ...options.conversion, sourcePath: flatPath, outPath: options.outPath, faissType: options.faissType });
  await rm(flatPath);
  return { ...(encoded && { encoded }), conversion };
}

/** `build-index`: Ctrl-C keeps the partial file, and running the same command again resumes it. */
export async function buildIndexCommand(options: BuildIndexCommand): Promise<BuildIndexResult> {
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
