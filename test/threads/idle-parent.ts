/**
 * Run by test/threads/worker-requests.test.ts as a process of its own: it asks an echo child
 * process once and then has nothing left to do, so it exits only if the idle child lets it.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { processChannel, WorkerRequests } from '../../src/threads/worker-requests.js';
import type { EchoReply, EchoRequest } from './echo-worker.js';

const child = fork(fileURLToPath(new URL('./echo-worker.js', import.meta.url)), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
const requests = new WorkerRequests<EchoRequest, EchoReply>(processChannel(child, 'echo process'));
const { value } = await requests.send({ op: 'echo', value: 'answered', delayMs: 300 });
console.log(value);
