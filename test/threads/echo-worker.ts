/**
 * The other end of test/threads/worker-requests.test.ts, run as a worker thread or as a child
 * process: it echoes, fails and dies on request.
 */
import { parentPort } from 'node:worker_threads';
import { ServiceError } from '../../src/errors.js';
import { failedReply, type FailedReply } from '../../src/threads/replies.js';

export type EchoRequest =
  | { id: number; op: 'echo'; value: string; delayMs: number }
  | { id: number; op: 'fail'; error: 'service' | 'plain' }
  | { id: number; op: 'crash' }
  | { id: number; op: 'close' };

export type EchoReply = { kind: 'reply'; id: number; ok: true; value?: string } | FailedReply;

function post(reply: EchoReply): void {
  if (parentPort) parentPort.postMessage(reply);
  else process.send!(reply);
}

async function answer(request: EchoRequest): Promise<EchoReply> {
  switch (request.op) {
    case 'echo':
      await new Promise((resolve) => setTimeout(resolve, request.delayMs));
      return { kind: 'reply', id: request.id, ok: true, value: request.value };
    case 'fail':
      if (request.error === 'service') throw new ServiceError('not_found', 'no such thing', { field: 'thing' });
      throw new TypeError('plain failure');
    case 'crash':
      setImmediate(() => {
        throw new Error('deliberate crash');
      });
      return new Promise<never>(() => undefined);
    case 'close':
      return { kind: 'reply', id: request.id, ok: true };
  }
}

function onRequest(request: EchoRequest): void {
  answer(request).then(post, (error: unknown) => post(failedReply(request.id, error)));
}

if (parentPort) {
  parentPort.on('message', onRequest);
} else {
  process.on('message', onRequest);
  process.on('disconnect', () => process.exit(0));
}
