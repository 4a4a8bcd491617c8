import { Command } from 'commander';
import { acceptBothSpellings, argParser, printJson } from '../command-line.js';
import { DEFAULT_ROUND_DATASET } from '../training/construction.js';
import { constructTrainingFile } from '../training/construction-file.js';
import { anyInteger } from '../value-types.js';

interface ConstructTrainingCommandOptions {
  input: string;
  output: string;
  seed: number;
  dataset: string;
  corpusRows?: number;
}

async function runConstructTraining({ input, output, seed, dataset, corpusRows }: ConstructTrainingCommandOptions): Promise<void> {
  printJson(await constructTrainingFile(input, output, { seed, dataset, corpusRows }));
}

export function constructTrainingCommand(): Command {
  const command = new Command('construct-training')
    .description('apply the Agentic-R selection rule to scored rounds (JSONL) and write training records (JSONL)')
    .requiredOption('--input <jsonl>', 'scored rounds')
    .requiredOption('--output <jsonl>', 'training records to write')
    .option('--seed <n>', 'seed of the negative sampling', argParser(anyInteger), 0)
    .option('--dataset <name>', 'dataset of rounds that name none', DEFAULT_ROUND_DATASET)
    .option('--corpus-rows <n>', 'reject passage ids at or past this row count', argParser(anyInteger))
    .action(runConstructTraining);
  return acceptBothSpellings(command);
}
