import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { deserializeError, type SerializedError } from '../threads/replies.js';
import type { ConvertIndexOptions, ConvertIndexResult } from './convert-index.js';
import { faissHostEnv } from './faiss-host.js';

const CONVERT_ENTRY = fileURLToPath(new URL('../workers/convert-index-worker.js', import.meta.url));

/** What a conversion process is asked: check a factory string, or convert a Flat index. */
export type ConvertRequest =
  | { op: 'check'; dimension: number; faissType: string }
  | { op: 'convert'; options: Omit<ConvertIndexOptions, 'onProgress' | 'log' | 'signal'> };

/** What it sends back: progress while converting, then one outcome. */
export type ConvertMessage =
  | { kind: 'progress'; stage: 'sampling' | 'adding'; done: number; total: number }
  | { kind: 'done'; result?: ConvertIndexResult }
  | { kind: 'failed'; error: SerializedError };

/**
 * Runs one request in a process of its own: faiss blocks its thread for a whole train or add
 * batch (seconds on wiki18), which would stall the server's searches, and faiss-node must not
 * load in two threads of one process. Aborting kills the process; convertIndex writes under a
 * staging name, so no file appears under the output name.
 */
function inConvertProcess(request: ConvertRequest, options: Pick<ConvertIndexOptions, 'onProgress' | 'signal'> = {}): Promise<ConvertIndexResult | undefined> {
  options.signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    const child = fork(CONVERT_ENTRY, [], { execArgv: [], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: faissHostEnv(process.env) });
    let outcome: { ok: true; result?: ConvertIndexResult } | { ok: false; error: unknown } | undefined;
    const onAbort = (): void => {
      outcome ??= { ok: false, error: options.signal!.reason };
      child.kill();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('message', (message: ConvertMessage) => {
      if (message.kind === 'progress') options.onProgress?.(message.stage, message.done, message.total);
      else outcome ??= message.kind === 'done' ? { ok: true, result: message.result } : { ok: false, error: deserializeError(message.error) };
    });
    child.on('error', (error) => {
      outcome ??= { ok: false, error };
    });
    child.on('exit', (code, signal) => {
      options.signal?.removeEventListener('abort', onAbort);
      outcome ??= { ok: false, error: new Error(`index conversion process exited (${signal ?? `code ${code}`}) without an answer`) };
      if (outcome.ok) resolve(outcome.result);
      else reject(outcome.error);
    });
    child.send(request);
  });
}

/** {@link convertIndex} in a process of its own (see {@link inConvertProcess}). */
export async function convertIndexInProcess(options: Omit<ConvertIndexOptions, 'log'>): Promise<ConvertIndexResult> {
  const { onProgress, signal, ...request } = options;
  return (await inConvertProcess({ op: 'convert', options: request }, { onProgress, signal }))!;
}

/** Rejects with faiss's own message when it cannot build `faissType` at `dimension` (a dry index_factory). */
export async function checkFaissType(dimension: number, faissType: string): Promise<void> {
  await inConvertProcess({ op: 'check', dimension, faissType });
}
