import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFile, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ingestRecords } from '../../src/training/ingest.js';
import { jsonLinesOf } from '../../src/training/jsonl.js';
import { EXAMPLES_FILE, TrainingExampleStore } from '../../src/training/store.js';
import { makeRecord, SAMPLE_ROWS, temporaryDir } from '../support/training-fixtures.js';

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ingest-child.js');
const serverChildScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ingest-server-child.js');

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

  it('keeps a whole-record prefix of a streamed ingest SIGKILLed midway; re-sending the batch completes it, the stored part answered duplicate', async function () {
    const storeDir = path.join(dir, 'store');
    const child = spawn(process.execPath, [serverChildScript, storeDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'exit');
    const [portLine] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const port = Number(/^port (\d+)$/.exec(portLine)![1]);
    const body = Buffer.from(Array.from({ length: 20_000 }, (_, i) => JSON.stringify(makeRecord({ query_id: `stream-${i}` }, i % 900))).join('\n'));
    const upload = request({ port, host: '127.0.0.1', method: 'POST', path: '/training/examples', headers: { 'content-type': 'application/x-ndjson' } });
    const failed = once(upload, 'error');
    upload.end(body);
    // Once some slices are on disk the ingest is midway (20k records make 40 slices): kill it there.
    const examples = path.join(storeDir, EXAMPLES_FILE);
    while (((await stat(examples).catch(() => undefined))?.size ?? 0) === 0) await sleep(5);
    child.kill('SIGKILL');
    assert.equal((await exited)[1], 'SIGKILL');
    await failed;

    const store = await TrainingExampleStore.open(storeDir);
    try {
      const kept = store.stats().records;
      assert.ok(kept > 0, 'the kill came after the first slice was stored');
      const storedIds: string[] = [];
      for await (const record of store.records()) storedIds.push(record.query_id);
      assert.deepEqual(storedIds, Array.from({ length: kept }, (_, i) => `stream-${i}`));
      const report = await ingestRecords(store, jsonLinesOf(Readable.from([body])), { corpusRows: SAMPLE_ROWS });
      assert.deepEqual([report.accepted, report.duplicate, report.rejected], [20_000 - kept, kept, 0]);
      assert.equal(store.stats().records, 20_000);
    } finally {
      await store.close();
    }
  });
});
