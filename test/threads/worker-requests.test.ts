import assert from 'node:assert/strict';
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { ServiceError } from '../../src/errors.js';
import { processChannel, threadChannel, WorkerRequests, type Channel } from '../../src/threads/worker-requests.js';
import { isServiceError } from '../support/assert-service-error.js';
import type { EchoReply, EchoRequest } from './echo-worker.js';

const ECHO = new URL('./echo-worker.js', import.meta.url);

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

const transports: Array<{ name: string; open: () => { channel: Channel; crashed: RegExp; ended: Promise<unknown> } }> = [
  {
    name: 'a worker thread',
    open() {
      const worker = new Worker(ECHO);
      const ended = new Promise((resolve) => worker.once('exit', resolve));
      return { channel: threadChannel(worker, 'echo worker'), crashed: /^echo worker crashed: deliberate crash$/, ended };
    },
  },
  {
    name: 'a child process',
    open() {
      const child = fork(fileURLToPath(ECHO), [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
      return { channel: processChannel(child, 'echo process'), crashed: /^echo process exited \(code 1\)$/, ended: exitOf(child) };
    },
  },
];

for (const transport of transports) {
  describe(`worker requests over ${transport.name}`, function () {
    let opened: ReturnType<typeof transport.open>;
    let requests: WorkerRequests<EchoRequest, EchoReply>;

    beforeEach(function () {
      opened = transport.open();
      requests = new WorkerRequests(opened.channel);
    });

    afterEach(async function () {
      await opened.channel.end();
    });

    it('matches replies to their requests when they come back out of order', async function () {
      const slow = requests.send({ op: 'echo', value: 'slow', delayMs: 200 });
      const fast = requests.send({ op: 'echo', value: 'fast', delayMs: 0 });
      const order: string[] = [];
      await Promise.all([slow, fast].map((reply) => reply.then(({ value }) => order.push(value!))));
      assert.deepEqual(order, ['fast', 'slow']);
    });

    it("rejects with the other end's ServiceError, code and details kept, and with an internal one for any other error", async function () {
      await assert.rejects(requests.send({ op: 'fail', error: 'service' }), (error: unknown) => {
        assert.ok(error instanceof ServiceError);
        assert.deepEqual({ code: error.code, message: error.message, details: error.details }, { code: 'not_found', message: 'no such thing', details: { field: 'thing' } });
        return true;
      });
      await assert.rejects(requests.send({ op: 'fail', error: 'plain' }), isServiceError('internal', /^plain failure$/));
      assert.equal((await requests.send({ op: 'echo', value: 'still here', delayMs: 0 })).value, 'still here', 'a failed request leaves the other end serving');
    });

    it('fails pending and later requests once the other end dies, saying how', async function () {
      const pending = requests.send({ op: 'echo', value: 'never', delayMs: 60_000 });
      const crashing = requests.send({ op: 'crash' });
      await assert.rejects(pending, isServiceError('internal', opened.crashed));
      await assert.rejects(crashing, isServiceError('internal', opened.crashed));
      await assert.rejects(requests.send({ op: 'echo', value: 'later', delayMs: 0 }), isServiceError('internal', opened.crashed));
    });

    it('shuts down after the close reply: later requests fail with the error given, and the other end is gone', async function () {
      await requests.shutDown({ op: 'close' }, new ServiceError('not_ready', 'the echo is closed'));
      await opened.ended;
      await assert.rejects(requests.send({ op: 'echo', value: 'later', delayMs: 0 }), isServiceError('not_ready', /^the echo is closed$/));
      await requests.shutDown({ op: 'close' }, new ServiceError('not_ready', 'closed twice'));
    });

    it('abandons requests in flight at once, and ends the other end once its close is answered', async function () {
      const inFlight = requests.send({ op: 'echo', value: 'abandoned', delayMs: 200 });
      requests.abandon('the echo was stopped', { op: 'close' });
      await assert.rejects(inFlight, isServiceError('internal', /^the echo was stopped$/));
      await assert.rejects(requests.send({ op: 'echo', value: 'later', delayMs: 0 }), isServiceError('internal', /^the echo was stopped$/));
      await opened.ended;
    });
  });
}

describe('worker requests over a child process: who keeps whose process alive', function () {
  it('a request in flight keeps the parent process alive; the idle child then lets it exit', async function () {
    const { stdout } = await promisify(execFile)(process.execPath, [fileURLToPath(new URL('./idle-parent.js', import.meta.url))], { timeout: 30_000 });
    assert.equal(stdout, 'answered\n');
  });

  it("names the signal that ended the process in the failure", async function () {
    const child = fork(fileURLToPath(ECHO), [], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    const requests = new WorkerRequests<EchoRequest, EchoReply>(processChannel(child, 'echo process'));
    const pending = requests.send({ op: 'echo', value: 'never', delayMs: 60_000 });
    child.kill('SIGKILL');
    await assert.rejects(pending, isServiceError('internal', /^echo process exited \(SIGKILL\)$/));
  });

  it('a process that never started: requests fail saying why, and ending it does not wait for an exit that never comes', async function () {
    const child = fork(fileURLToPath(ECHO), [], { execPath: '/nonexistent/node', stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    const channel = processChannel(child, 'echo process');
    const requests = new WorkerRequests<EchoRequest, EchoReply>(channel);
    await assert.rejects(requests.send({ op: 'echo', value: 'never', delayMs: 0 }), isServiceError('internal', /^echo process failed: spawn \/nonexistent\/node ENOENT$/));
    assert.equal(child.pid, undefined);
    await channel.end();
  });
});
