import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Express } from 'express';
import request from 'supertest';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { trainingRouter } from '../../src/http/training-routes.js';
import { COUNTERS_FILE, EXAMPLES_FILE, TrainingExampleStore, type TrainingStats } from '../../src/training/store.js';
import { createHarness } from '../support/app-harness.js';
import { assertMatchesOpenApi } from '../support/openapi-schemas.js';
import { StandInService } from '../support/stand-in-service.js';
import { makeRecord, samplePath, temporaryDir } from '../support/training-fixtures.js';

const run = promisify(execFile);

/** Fills the file system holding `file` with whole pages until it refuses another. */
async function fillDisk(file: string): Promise<void> {
  const handle = await open(file, 'w');
  const page = Buffer.alloc(4096);
  try {
    for (;;) await handle.write(page);
  } catch (error) {
    assert.equal((error as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    await handle.close();
  }
}

/** The counters as saved: what `stats` must report. */
async function savedCounters(storeDir: string): Promise<Pick<TrainingStats, 'duplicates' | 'rejections'>> {
  return JSON.parse(await readFile(path.join(storeDir, COUNTERS_FILE), 'utf8')) as Pick<TrainingStats, 'duplicates' | 'rejections'>;
}

describe('training ingest on a full disk (a real 256 KiB tmpfs; skipped, saying so, where mounting is not permitted)', function () {
  let dir: string;
  let mountPoint: string;
  let mounted = false;
  let corpus: CorpusStore;
  let store: TrainingExampleStore;
  let app: Express;

  beforeEach(async function () {
    dir = await temporaryDir('disk-full');
    mountPoint = path.join(dir, 'mnt');
    await mkdir(mountPoint);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mountPoint]);
      mounted = true;
    } catch (error) {
      console.warn(`      skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): ${(error as Error).message.trim()}`);
      await rm(dir, { recursive: true, force: true });
      this.skip();
    }
    corpus = await CorpusStore.open(samplePath, { sidecarPath: path.join(dir, 'corpus.offsets') });
    store = await TrainingExampleStore.open(path.join(mountPoint, 'store'));
    app = createHarness(new StandInService([]), {}, [trainingRouter({ store: () => store, corpus: () => corpus, allowUnauthenticated: true })]).app;
  });

  afterEach(async function () {
    if (!mounted) return;
    await store.close();
    await corpus.close();
    await run('umount', [mountPoint]);
    mounted = false;
    await rm(dir, { recursive: true, force: true });
  });

  it('answers 200 to batches of only duplicates or rejects, 507 to one that needs space, and stats always equal the files', async function () {
    const storeDir = path.join(mountPoint, 'store');
    const examples = path.join(storeDir, EXAMPLES_FILE);
    const stored = [makeRecord({ query_id: 'a' }), makeRecord({ query_id: 'b' }, 40)];
    const post = (body: unknown[]) => request(app).post('/training/examples').send(body);
    await post(stored).expect(200);
    await post([{ ...makeRecord(), round_index: -1 }]).expect(200);
    const filler = path.join(mountPoint, 'filler');
    await fillDisk(filler);
    const before = await readFile(examples, 'utf8');
    const rejectionsBefore = (await savedCounters(storeDir)).rejections;
    assert.equal(rejectionsBefore.invalid_value, 1);

    const duplicates = await post(stored).expect(200);
    assert.deepEqual(duplicates.body.results, [{ index: 0, status: 'duplicate' }, { index: 1, status: 'duplicate' }]);
    assertMatchesOpenApi('POST', '/training/examples', duplicates);
    const rejected = await post([{ ...makeRecord(), round_index: 'one' }]).expect(200);
    assert.equal(rejected.body.results[0].reason, 'wrong_type');
    // Nothing could be saved, so neither count moved: stats report what the file holds.
    assert.deepEqual(await savedCounters(storeDir), { duplicates: 0, rejections: rejectionsBefore });
    assert.deepEqual(
      { duplicates: store.stats().duplicates, rejections: store.stats().rejections },
      { duplicates: 0, rejections: rejectionsBefore },
    );

    // A record larger than a page cannot fit in the slack of the file's last page.
    const fresh = makeRecord({ query_id: 'c', question: 'q'.repeat(10_000) });
    const full = await post([fresh]).expect(507);
    assert.equal(full.body.error.code, 'insufficient_storage');
    assert.match(full.body.error.message, /disk holding the training store is full: .*ENOSPC.*records from index 0 on were not stored/);
    assertMatchesOpenApi('POST', '/training/examples', full);
    assert.equal(await readFile(examples, 'utf8'), before);
    assert.equal(store.stats().records, 2);

    // With space again, the next save carries the counts that waited, and the record goes in.
    await rm(filler);
    const afterwards = await post([{ ...makeRecord(), round_index: 'two' }, fresh]).expect(200);
    assert.deepEqual([afterwards.body.accepted, afterwards.body.rejected], [1, 1]);
    const saved = await savedCounters(storeDir);
    assert.deepEqual(saved, { duplicates: 2, rejections: { ...rejectionsBefore, wrong_type: 2 } });
    assert.deepEqual({ duplicates: store.stats().duplicates, rejections: store.stats().rejections }, saved);
    assert.equal(store.stats().records, 3);
  });
});
