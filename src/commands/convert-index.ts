import { faissHostEnv } from '../index/faiss-host.js';
import { convertIndex, type ConvertIndexOptions, type ConvertIndexResult } from '../index/convert-index.js';
import { progressBar, type Progress } from './progress.js';

export type ConvertIndexCommand = Omit<ConvertIndexOptions, 'onProgress' | 'log' | 'signal'>;

/**
 * `convert-index` (and the last step of `build-index --faiss_type`): faiss runs in this process,
 * so OpenBLAS and OpenMP get a faiss host's settings before faiss-node loads. Ctrl-C stops
 * between batches and leaves no file under the output name.
 */
export async function convertIndexCommand(options: ConvertIndexCommand): Promise<ConvertIndexResult> {
  Object.assign(process.env, faissHostEnv(process.env));
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new Error('conversion stopped: no index was written (a new run starts over)'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bars: Partial<Record<'sampling' | 'adding', Progress>> = {};
  const bar = (stage: 'sampling' | 'adding'): Progress => {
    if (stage === 'adding') bars.sampling?.stop();
    return (bars[stage] ??= progressBar(stage === 'sampling' ? 'reading the training sample' : `adding vectors to ${options.faissType}`, 'rows'));
  };
  try {
    return await convertIndex({
      ...options,
      signal: abort.signal,
      onProgress: (stage, done, total) => bar(stage).update(done, total),
      log: (line) => process.stderr.write(`${line}\n`),
    });
  } finally {
    Object.values(bars).forEach((progress) => progress.stop());
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
