import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { serialiseRecord } from '../../src/training/record.js';
import { EXAMPLES_FILE, LOAD_PROGRESS_RECORDS } from '../../src/training/store.js';
import { buildRetrieverFiles, DEMO_CORPUS } from '../support/retriever-fixture.js';
import { CLI_PATH } from '../support/sample-data.js';
import { makeRecord, temporaryDir } from '../support/training-fixtures.js';


describe('serve opens a large training store in the background (child process, tiny model)', function () {
  let dataDir: string;

  beforeEach(async function () {
    dataDir = await temporaryDir('serve-loading');
  });

  afterEach(async function () {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('answers /health once listening, training routes 503 not_ready with progress or 200, logs progress, then serves every stored record', async function () {
    const records = LOAD_PROGRESS_RECORDS + 10_000;
    await mkdir(path.join(dataDir, 'training'));
    const lines = Array.from({ length: records }, (_, i) => serialiseRecord(makeRecord({ query_id: `stored-${i}` }, i % 50)));
    await writeFile(path.join(dataDir, 'training', EXAMPLES_FILE), `${lines.join('\n')}\n`);
    const files = await buildRetrieverFiles({ preset: 'tiny', seed: 7, corpus: DEMO_CORPUS });
    const child = spawn(process.execPath, [
      CLI_PATH,
      'serve',
      ...['--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath],
      ...['--data_dir', dataDir, '--no_training_auth', '--host', '127.0.0.1', '--port', '0', '--device', 'cpu'],
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'close');
    try {
      const log: { msg: string; port?: number; records?: number }[] = [];
      let listening!: (port: number) => void;
      const port = new Promise<number>((resolve) => (listening = resolve));
      let loaded!: () => void;
      const storeLoaded = new Promise<void>((resolve) => (loaded = resolve));
      createInterface({ input: child.stdout }).on('line', (text) => {
        const line = JSON.parse(text) as (typeof log)[number];
        log.push(line);
        if (line.port !== undefined && line.msg.startsWith('listening on')) listening(line.port);
        if (line.msg === 'training store loaded') loaded();
      });
      const url = `http://127.0.0.1:${await port}`;
      assert.equal((await fetch(`${url}/health`)).status, 200);
      const early = await fetch(`${url}/training/stats`);
      if (early.status === 503) {
        assert.equal(early.headers.get('retry-after'), '5');
        const body = (await early.json()) as { error: { code: string; message: string } };
        assert.equal(body.error.code, 'not_ready');
        assert.match(body.error.message, /^the training store is still loading: \d+ records, \d+% of \d+ bytes read$/);
      } else assert.equal(early.status, 200);
      await storeLoaded;
      const stats = (await (await fetch(`${url}/training/stats`)).json()) as { records: number };
      assert.equal(stats.records, records);
      const progress = log.filter((line) => line.msg === 'loading the training store').map((line) => line.records);
      assert.deepEqual(progress, [0, LOAD_PROGRESS_RECORDS]);
      assert.equal(log.find((line) => line.msg === 'training store loaded')!.records, records);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
