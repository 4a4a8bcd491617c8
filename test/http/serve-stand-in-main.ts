/**
 * A child process for the shutdown test: serves the app over a stand-in engine whose searches
 * wait until the parent writes "release" on stdin, so a request can be held in flight across
 * SIGTERM. Logs go to stdout as JSON lines.
 */
import { createInterface } from 'node:readline';
import { parseServeArgs } from '../../src/config.js';
import { createApp } from '../../src/http/app.js';
import { createLogger } from '../../src/log.js';
import { startServer } from '../../src/server.js';
import { sampleRows, StandInService } from '../support/stand-in-service.js';

const config = parseServeArgs(process.argv.slice(2), process.env);
const logger = createLogger(config);
const service = new StandInService(await sampleRows());
let release: () => void = () => undefined;
service.gate = new Promise<void>((resolve) => {
  release = resolve;
});
const retrieve = service.retrieve.bind(service);
service.retrieve = (inputs, topk) => {
  logger.info({ queries: inputs.length }, 'search started');
  return retrieve(inputs, topk);
};
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'release') release();
});
await startServer(createApp({ service, config, logger }), config, logger, {
  close: async () => {
    logger.info('service closed');
  },
});
