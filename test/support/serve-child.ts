import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import type { Readiness, RetrieverInfo } from '../../src/engine/types.js';
import { CLI_PATH } from './sample-data.js';

export interface ServeRun {
  /** `/info`'s retriever once ready; undefined when serve exited first. */
  info?: RetrieverInfo;
  /** `/ready`'s body once ready. */
  ready?: Readiness;
  /** Its JSON log lines, in order. */
  log: Array<{ level: number; msg: string }>;
  code: number | null;
}

/** A `serve` child process on 127.0.0.1, its log read as it runs. */
export interface ServeChild {
  child: ChildProcess;
  /** Its JSON log lines so far, in order. */
  log: ServeRun['log'];
  /** Resolves with its URL once it logs `ready`; rejects, with its last log lines, when it exits first. */
  ready: Promise<string>;
  /** Resolves with its exit code once it has exited. */
  exited: Promise<number | null>;
}

/** Starts `serve` on 127.0.0.1 and `port` (0: a free one) with `args`. */
export function spawnServe(args: string[], port = 0): ServeChild {
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--host', '127.0.0.1', '--port', String(port), ...args]);
  child.stderr.resume();
  const log: ServeRun['log'] = [];
  const exited = once(child, 'close').then(([code]) => code as number | null);
  let listening = port;
  const ready = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as ServeRun['log'][number] & { port?: number };
      log.push(line);
      if (line.port !== undefined) listening = line.port;
      if (line.msg === 'ready') resolve(`http://127.0.0.1:${listening}`);
    });
    void exited.then((code) => reject(new Error(`serve exited (${code}) before it was ready: ${log.slice(-3).map((line) => line.msg).join(' | ')}`)));
  });
  ready.catch(() => undefined);
  return { child, log, ready, exited };
}

/**
 * `serve` in a child process on a free local port: its /info and /ready when it gets ready (then,
 * after `whileReady` has used it at its URL, SIGTERM), or its exit.
 */
export async function serveOnce(args: string[], whileReady?: (url: string) => Promise<void>): Promise<ServeRun> {
  const serve = spawnServe(args);
  const url = await serve.ready.catch(() => undefined);
  let answers: Pick<ServeRun, 'info' | 'ready'> = {};
  if (url !== undefined) {
    answers = {
      info: ((await (await fetch(`${url}/info`)).json()) as { retriever: RetrieverInfo }).retriever,
      ready: (await (await fetch(`${url}/ready`)).json()) as Readiness,
    };
    try {
      await whileReady?.(url);
    } finally {
      serve.child.kill('SIGTERM');
    }
  }
  return { ...answers, log: serve.log, code: await serve.exited };
}

/** A port free on 127.0.0.1 now, for a server whose port must be known before it starts (a load balancer's upstream). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
