// Runs one index build in a separate process so a test can SIGKILL it midway.
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { buildIndex } from '../../src/index/build-index.js';
import { HashingEncoder } from './hashing-encoder.js';

const [corpusPath, outPath, start, end] = process.argv.slice(2);
const corpus = await CorpusStore.open(corpusPath!);
await buildIndex({
  corpus,
  encoder: new HashingEncoder('hashing', 16, 5),
  outPath: outPath!,
  batchSize: 20,
  // With a START and END: an index part of those rows.
  ...(start !== undefined && { rows: { start: Number(start), end: Number(end) } }),
  onProgress: (done) => process.stdout.write(`${done}\n`),
});
