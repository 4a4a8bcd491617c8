import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { REGISTRY_FILE, VersionRegistry } from '../../src/versions/version-registry.js';
import { temporaryDir } from '../support/version-fixtures.js';

const execFileAsync = promisify(execFile);

describe('version registry on a full disk (a real one-page tmpfs)', function () {
  let dir: string;

  before(async function () {
    dir = await temporaryDir('registry-full');
    try {
      await execFileAsync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', dir]);
    } catch (error) {
      process.stderr.write(`      skipped: cannot mount a tmpfs here (${(error as Error).message.trim()})\n`);
      this.skip();
    }
  });

  after(async function () {
    await execFileAsync('umount', [dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('undoes a change it could not write, keeps a job end it could not write, and writes that end once there is room', async function () {
    const registry = await VersionRegistry.open(dir);
    const fields = { source: 'm', modelDir: 'm', indexPath: path.join(dir, 'x.index'), corpusPath: 'c' };
    // The file fills the one page; replacing it needs a second page for the new copy.
    await registry.addVersion({ ...fields, id: 'v1', state: 'registered' });
    await assert.rejects(registry.updateVersion('v1', { state: 'ready' }), { code: 'ENOSPC' });
    assert.equal(registry.version('v1').state, 'registered', 'memory says what the file says');
    await assert.rejects(registry.startJob({ versionId: 'v1', indexPath: fields.indexPath, rowsDone: 0, rowsTotal: 9, resumedFrom: 0, startedAt: 'now' }), {
      code: 'ENOSPC',
    });
    assert.deepEqual([registry.jobs(), registry.version('v1').state], [[], 'registered']);

    await execFileAsync('mount', ['-o', 'remount,size=64k', dir]);
    const job = await registry.startJob({ versionId: 'v1', indexPath: fields.indexPath, rowsDone: 0, rowsTotal: 9, resumedFrom: 0, startedAt: 'now' });
    assert.equal(job.id, 'job-2', 'an id handed out stays taken');
    await execFileAsync('mount', ['-o', 'remount,size=4k', dir]);
    await assert.rejects(registry.endJob(job.id, { state: 'failed', reason: 'ENOSPC' }, { state: 'failed', reason: 'build failed' }), { code: 'ENOSPC' });
    assert.deepEqual([registry.job(job.id).state, registry.version('v1').state], ['failed', 'failed'], 'the end happened: memory keeps it');
    const file = path.join(dir, REGISTRY_FILE);
    assert.equal(JSON.parse(await readFile(file, 'utf8')).jobs[0].state, 'running');

    await execFileAsync('mount', ['-o', 'remount,size=64k', dir]);
    await registry.close();
    const written = JSON.parse(await readFile(file, 'utf8'));
    assert.deepEqual([written.jobs[0].state, written.versions[0].state], ['failed', 'failed']);
  });
});
