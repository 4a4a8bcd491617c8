import { spawn } from 'node:child_process';
import { once } from 'node:events';
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

/**
 * `serve` in a child process on a free local port: its /info and /ready when it gets ready (then,
 * after `whileReady` has used it at `url`, SIGTERM), or its exit.
 */
export async function serveOnce(args: string[], whileReady?: (url: string) => Promise<void>): Promise<ServeRun> {
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--host', '127.0.0.1', '--port', '0', ...args]);
  child.stderr.resume();
  const log: ServeRun['log'] = [];
  let port: number | undefined;
  const closed = once(child, 'close');
  const ready = await new Promise<boolean>((resolve) => {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as ServeRun['log'][number] & { port?: number };
      log.push(line);
      if (line.port !== undefined) port = line.port;
      if (line.msg === 'ready') resolve(true);
    });
    void closed.then(() => resolve(false));
  });
  let answers: Pick<ServeRun, 'info' | 'ready'> = {};
  if (ready) {
    answers = {
      info: ((await (await fetch(`http://127.0.0.1:${port}/info`)).json()) as { retriever: RetrieverInfo }).retriever,
      ready: (await (await fetch(`http://127.0.0.1:${port}/ready`)).json()) as Readiness,
    };
    try {
      await whileReady?.(`http://127.0.0.1:${port}`);
    } finally {
      child.kill('SIGTERM');
    }
  }
  const [code] = await closed;
  return { ...answers, log, code: code as number | null };
}
