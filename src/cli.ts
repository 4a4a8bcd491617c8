#!/usr/bin/env node
import { Command } from 'commander';
import { buildDemoCommand } from './commands/build-demo.js';
import { buildIndexCommand } from './commands/build-index.js';
import { constructTrainingCommand } from './commands/construct-training.js';
import { convertIndexCommand } from './commands/convert-index.js';
import { makeModelCommand } from './commands/make-model.js';
import { mergeIndexCommand } from './commands/merge-index.js';
import { serveCommand } from './commands/serve.js';
import { ServiceError } from './errors.js';

const program = new Command('agentic-retriever')
  .description('Search-R1-compatible retrieval server for Agentic-R/E5 retrievers')
  .showHelpAfterError();

// addCommand, unlike program.command(), does not pass showHelpAfterError and the like on by itself.
for (const command of [serveCommand(), makeModelCommand(), buildIndexCommand(), convertIndexCommand(), mergeIndexCommand(), buildDemoCommand(), constructTrainingCommand()]) {
  program.addCommand(command.copyInheritedSettings(program));
}

program.parseAsync(process.argv).catch((error: unknown) => {
  const message = error instanceof ServiceError ? `${error.code}: ${error.message}` : String((error as Error).stack ?? error);
  process.stderr.write(`error: ${message}\n`);
  process.exitCode = 1;
});
