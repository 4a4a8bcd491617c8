import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import request from 'supertest';
import { CONFIG_DEFAULTS } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import { createHarness } from '../support/app-harness.js';
import { sampleRows, StandInService } from '../support/stand-in-service.js';

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'serve-stand-in-main.js');

/** Collects a child's JSON log lines and resolves waits for a given message. */
class LogWatcher {
  readonly lines: Record<string, unknown>[] = [];
  private waiters: { msg: RegExp; resolve: (line: Record<string, unknown>) => void }[] = [];

  constructor(child: ChildProcessWithoutNullStreams) {
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as Record<string, unknown>;
      this.lines.push(line);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.msg.test(String(line.msg))) return true;
        waiter.resolve(line);
        return false;
      });
    });
  }

  waitFor(msg: RegExp): Promise<Record<string, unknown>> {
    const seen = this.lines.find((line) => msg.test(String(line.msg)));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ msg, resolve }));
  }
}

describe('server lifecycle (stand-in service)', () => {
  it('SIGTERM: stops accepting, finishes the in-flight request, closes the service, exits 0', async () => {
    const child = spawn(process.execPath, [childScript, '--host', '127.0.0.1', '--port', '0', '--faiss_gpu', '--search_backend', 'faiss'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const log = new LogWatcher(child);
    const exited = once(child, 'exit');
    try {
      const listening = await log.waitFor(/^listening on/);
      const url = `http://127.0.0.1:${String(listening.port)}`;
      assert.ok(log.lines.some((line) => /faiss-node searches on CPU only/.test(String(line.msg))));

      const inFlight = fetch(`${url}/retrieve`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ queries: ['held', 'across', 'shutdown'], topk: 2, return_scores: true }),
      });
      await log.waitFor(/^search started/);
      child.kill('SIGTERM');
      await log.waitFor(/^shutting down/);

      await assert.rejects(fetch(`${url}/health`), 'no new connections once shutdown began');
      assert.ok(!log.lines.some((line) => line.msg === 'service closed'), 'service stays open for the in-flight request');

      child.stdin.write('release\n');
      const response = await inFlight;
      assert.equal(response.status, 200);
      const body = (await response.json()) as { result: unknown[][] };
      assert.deepEqual(
        body.result.map((hits) => hits.length),
        [2, 2, 2],
      );
      const [code] = await exited;
      assert.equal(code, 0, stderr);
      const messages = log.lines.map((line) => line.msg);
      assert.ok(messages.indexOf('service closed') < messages.indexOf('shutdown complete'));
      assert.ok(messages.indexOf('service closed') > messages.lastIndexOf('request'), 'closed after the last request');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('listens before the retriever is ready: /ready says 503 with progress, /health 200', async () => {
    const service = new StandInService(await sampleRows());
    service.loaded = false;
    const { app, logger } = createHarness(service);
    const running = await startServer(app, { ...CONFIG_DEFAULTS, host: '127.0.0.1', port: 0 }, logger, {
      handleSignals: false,
    });
    try {
      const loading = await request(running.url).get('/ready').expect(503);
      assert.equal(loading.body.stage, 'loading index');
      assert.equal(loading.body.progress, 0.25);
      await request(running.url).get('/health').expect(200);
      service.loaded = true;
      await request(running.url).get('/ready').expect(200);
    } finally {
      await running.shutdown('test over');
    }
  });
});
