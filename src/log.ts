import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

/** pino's level names, in the order `--log_level`'s errors list them. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  logLevel: LogLevel;
  logQueries: boolean;
}

/**
 * One JSON object per line on stdout (or `destination`). Query text reaches the log only through
 * `queryLogFields`, which honours `logQueries`: training prompts can be private data.
 */
export function createLogger(options: LoggerOptions, destination?: DestinationStream): Logger {
  const settings = {
    level: options.logLevel,
    base: { service: 'agentic-retriever' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // Synchronous stdout: one line per request is cheap, and nothing is lost when shutdown exits.
  return pino(settings, destination ?? pino.destination({ dest: 1, sync: true }));
}

/** What a request log may say about its queries: always how many, their text only when allowed. */
export function queryLogFields(
  queryTexts: readonly string[],
  logQueries: boolean,
): { queries: number; queryTexts?: readonly string[] } {
  return logQueries ? { queries: queryTexts.length, queryTexts } : { queries: queryTexts.length };
}
