import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { compatibilityNotices, type ServiceConfig } from './config.js';
import type { Logger } from './log.js';

export interface ServerOptions {
  /** Releases what the app serves from (workers, native indexes) once in-flight requests are done. */
  close?: () => Promise<void>;
  /** Called with the exit code after a signal-triggered shutdown; `process.exit` when absent. */
  exit?: (code: number) => void;
  /** Install SIGTERM/SIGINT handlers (default true). */
  handleSignals?: boolean;
}

export interface RunningServer {
  server: Server;
  /** `http://host:port` as bound (the real port when config.port is 0). */
  url: string;
  port: number;
  /** Stop accepting, let in-flight requests finish, then close the service. Idempotent. */
  shutdown(reason: string): Promise<void>;
}

/**
 * Listens right away, before the retriever has loaded, so `/ready` can report loading progress
 * and `/health` answers from the first second.
 */
export async function startServer(
  app: RequestListener,
  config: ServiceConfig,
  logger: Logger,
  options: ServerOptions = {},
): Promise<RunningServer> {
  for (const notice of compatibilityNotices(config)) logger.warn(notice);
  const server = createServer(app);
  // Node's default 5 s keep-alive drops idle sockets that Python clients (requests' pool) reuse
  // between training steps; a longer one avoids a reconnect per step.
  server.keepAliveTimeout = 65_000;
  // Node aborts requests whose body takes longer than this to arrive; a 64 MB body on a slow
  // link needs more than the default when a deadline is configured longer.
  server.requestTimeout = Math.max(server.requestTimeout, config.requestTimeoutMs);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const displayHost = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${displayHost}:${port}`;
  logger.info({ host: config.host, port }, `listening on ${url}`);

  let closing: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    closing ??= (async () => {
      logger.info({ reason }, 'shutting down: no new connections, finishing in-flight requests');
      // Keep-alive sockets would otherwise hold the server open: drop the idle ones now and each
      // busy one as soon as its response is out.
      server.on('request', (_req, res) => {
        res.setHeader('Connection', 'close');
      });
      const closed = new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
      server.closeIdleConnections();
      const sweep = setInterval(() => server.closeIdleConnections(), 100);
      try {
        await closed;
      } finally {
        clearInterval(sweep);
      }
      await options.close?.();
      logger.info('shutdown complete');
    })();
    return closing;
  };

  if (options.handleSignals ?? true) {
    const exit = options.exit ?? ((code: number) => process.exit(code));
    const onSignal = (signal: NodeJS.Signals): void => {
      shutdown(signal).then(
        () => exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          exit(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    server.once('close', () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    });
  }

  return { server, url, port, shutdown };
}
