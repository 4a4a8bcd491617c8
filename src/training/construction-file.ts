import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import {
  constructRecords,
  newConstructionSummary,
  type ConstructionOptions,
  type ConstructionSummary,
} from './construction.js';
import { readJsonLinesFile } from './jsonl.js';
import { serialiseRecord } from './record.js';

/**
 * `construct-training` for files: scored rounds (JSONL) in, Agentic-R records (JSONL) out, one
 * round in memory at a time. Records are written in the stored canonical form.
 */
export async function constructTrainingFile(
  inputPath: string,
  outputPath: string,
  options: ConstructionOptions,
): Promise<ConstructionSummary> {
  const summary = newConstructionSummary(options.seed);
  await pipeline(async function* () {
    for await (const records of constructRecords(readJsonLinesFile(inputPath), options, summary)) {
      yield records.map((record) => `${serialiseRecord(record)}\n`).join('');
    }
  }, createWriteStream(outputPath));
  return summary;
}
