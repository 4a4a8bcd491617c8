import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { EXAMPLES_FILE, TrainingExampleStore } from '../../src/training/store.js';
import { temporaryDir } from './fixtures.js';

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ingest-child.js');

/** Runs the ingesting child until it has acknowledged `acks` records, then SIGKILLs it. */
async function ingestThenKill(dataDir: string, acks: number): Promise<string[]> {
  const child = spawn(process.execPath, [childScript, dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  const acknowledged: string[] = [];
  for await (const line of createInterface({ input: child.stdout })) {
    acknowledged.push(line.replace(/^ack /, ''));
    if (acknowledged.length === acks) child.kill('SIGKILL');
  }
  assert.equal(await exited, 'SIGKILL', `child ended on its own: ${stderr}`);
  return acknowledged;
}

describe('training store durability (kill -9 of a real ingesting process)', function () {
  let dir: string;

  beforeEach(async function () {
    dir = await temporaryDir('durability');
  });

  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps every acknowledged record after SIGKILL mid-stream and reopens without error, also over a torn last line', async function () {
    const acknowledged = await ingestThenKill(dir, 150);
    assert.ok(acknowledged.length >= 150);
    // The child may have stored records it had no time to acknowledge; it must not have lost any it did.
    let store = await TrainingExampleStore.open(dir);
    const stored = new Set<string>();
    for await (const record of store.records()) stored.add(record.query_id);
    for (const queryId of acknowledged) assert.ok(stored.has(queryId), `acknowledged ${queryId} is missing`);
    assert.equal(store.stats().records, stored.size);
    await store.close();

    // A crash inside a write leaves a partial line: it was never acknowledged and must vanish.
    await appendFile(path.join(dir, EXAMPLES_FILE), '{"dataset":"hotpotqa","query_id":"half-writ');
    store = await TrainingExampleStore.open(dir);
    assert.equal(store.truncatedBytes, 43);
    const reread: string[] = [];
    for await (const record of store.records()) reread.push(record.query_id);
    assert.deepEqual(new Set(reread), stored);
    assert.equal(reread.length, stored.size);
    await store.close();
  });
});
