import { fileURLToPath } from 'node:url';
import type { FailedReply } from '../threads/replies.js';
import { processChannel, WorkerRequests, type WithoutId } from '../threads/worker-requests.js';
import type { ConvertIndexOptions, ConvertIndexResult } from './convert-index.js';
import { forkFaissProcess } from './faiss-host.js';

const CONVERT_ENTRY = fileURLToPath(new URL('../workers/convert-index-worker.js', import.meta.url));

/** What a conversion process is asked: check a factory string, or convert a Flat index. */
export type ConvertRequest = { id: number } & (
  | { op: 'check'; dimension: number; faissType: string }
  | { op: 'convert'; options: Omit<ConvertIndexOptions, 'onProgress' | 'log' | 'signal'> }
);

/** Progress while converting, before the one reply. */
export type ConvertProgress = { kind: 'progress'; stage: 'sampling' | 'adding'; done: number; total: number };

export type ConvertReply = { kind: 'reply'; id: number; ok: true; result?: ConvertIndexResult } | FailedReply;

/**
 * Runs one request in a process of its own: faiss blocks its thread for a whole train or add
 * batch (seconds on wiki18), which would stall the server's searches, and faiss-node must not
 * load in two threads of one process. Aborting kills the process; convertIndex writes under a
 * staging name, so no file appears under the output name.
 */
async function inConvertProcess(
  request: WithoutId<ConvertRequest>,
  options: Pick<ConvertIndexOptions, 'onProgress' | 'signal'> = {},
): Promise<ConvertIndexResult | undefined> {
  const { signal, onProgress } = options;
  signal?.throwIfAborted();
  const child = forkFaissProcess(CONVERT_ENTRY);
  const channel = processChannel(child, 'index conversion process');
  const requests = new WorkerRequests<ConvertRequest, ConvertReply>(channel);
  child.on('message', (message: ConvertProgress | ConvertReply) => {
    if (message.kind === 'progress') onProgress?.(message.stage, message.done, message.total);
  });
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      reject(signal!.reason);
      child.kill();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return (await Promise.race([requests.send(request), aborted])).result;
  } finally {
    signal?.removeEventListener('abort', onAbort!);
    await channel.end();
  }
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
