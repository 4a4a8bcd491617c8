import { Command } from 'commander';
import { acceptBothSpellings, printJson } from '../command-line.js';
import { envName, SETTINGS } from '../config.js';
import { ensureDemo } from '../demo.js';

async function runBuildDemo(options: { data_dir: string }): Promise<void> {
  printJson(await ensureDemo(options.data_dir, (line) => process.stderr.write(`[demo] ${line}\n`)));
}

/** Builds where `serve` looks for the demo: the same `--data_dir` flag, variable and default. */
export function buildDemoCommand(): Command {
  const { flag, fallback } = SETTINGS.dataDir;
  const command = new Command('build-demo')
    .description('build the bundled demo model and index (in <data_dir>/demo) if missing or stale')
    .option(`--${flag} <dir>`, `service state folder, as for serve (env ${envName(flag)})`, process.env[envName(flag)] ?? fallback)
    .action(runBuildDemo);
  return acceptBothSpellings(command);
}
