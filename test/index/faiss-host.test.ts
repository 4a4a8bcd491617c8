import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { faissHostEnv } from '../../src/index/faiss-host.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { IxfiWriter } from '../../src/index/ixfi-writer.js';
import { childPids } from '../support/child-processes.js';
import { unitVectors } from '../support/index-fixtures.js';

const SAPPHIRE_RAPIDS = new Set(['sse3', 'avx', 'avx2', 'fma', 'avx512f', 'avx512dq', 'avx512bw', 'avx512vl', 'avx512_bf16', 'amx_tile']);
const ZEN3 = new Set(['sse3', 'avx', 'avx2', 'fma']);

/** A process's environment as /proc shows it (Linux). */
async function environmentOf(pid: string): Promise<Record<string, string>> {
  const entries = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
}

describe('faiss host environment (OpenBLAS and OpenMP settings)', function () {
  it('gives BLAS every core, makes idle OpenMP threads sleep, and names AVX-512 kernels on an AVX-512 CPU (Sapphire Rapids flags)', function () {
    const env = faissHostEnv({ PATH: '/bin' }, 16, SAPPHIRE_RAPIDS);
    assert.deepEqual(env, { PATH: '/bin', OMP_WAIT_POLICY: 'PASSIVE', OPENBLAS_NUM_THREADS: '16', OPENBLAS_CORETYPE: 'SkylakeX' });
  });

  it('names Haswell kernels on an AVX2 CPU and none on a CPU without AVX2', function () {
    assert.equal(faissHostEnv({}, 8, ZEN3).OPENBLAS_CORETYPE, 'Haswell');
    const old = faissHostEnv({}, 2, new Set(['sse3', 'avx']));
    assert.equal('OPENBLAS_CORETYPE' in old, false);
    assert.deepEqual(old, { OMP_WAIT_POLICY: 'PASSIVE', OPENBLAS_NUM_THREADS: '2' });
  });

  it('reads /proc/cpuinfo at most once per process, however many faiss hosts start', function () {
    const original = fs.readFileSync;
    let reads = 0;
    // Counted where cpu-flags.ts reads it: its named import sees the patched function once the ESM exports are synced.
    fs.readFileSync = ((file: fs.PathOrFileDescriptor, options?: unknown) => {
      if (file === '/proc/cpuinfo') reads++;
      return (original as (file: fs.PathOrFileDescriptor, options?: unknown) => string | Buffer)(file, options);
    }) as typeof fs.readFileSync;
    syncBuiltinESMExports();
    try {
      const coretypes = [1, 2, 3].map(() => faissHostEnv({}).OPENBLAS_CORETYPE);
      assert.equal(new Set(coretypes).size, 1);
    } finally {
      fs.readFileSync = original;
      syncBuiltinESMExports();
    }
    // Zero when an earlier test of this process already read it.
    assert.ok(reads <= 1, `/proc/cpuinfo read ${reads} times`);
  });

  it('keeps every value the user set, each on its own', function () {
    const user = { OMP_WAIT_POLICY: 'ACTIVE', OPENBLAS_CORETYPE: 'Zen' };
    assert.deepEqual(faissHostEnv(user, 16, SAPPHIRE_RAPIDS), { OMP_WAIT_POLICY: 'ACTIVE', OPENBLAS_CORETYPE: 'Zen', OPENBLAS_NUM_THREADS: '16' });
    assert.deepEqual(faissHostEnv({ OPENBLAS_NUM_THREADS: '3' }, 16, ZEN3), { OPENBLAS_NUM_THREADS: '3', OMP_WAIT_POLICY: 'PASSIVE', OPENBLAS_CORETYPE: 'Haswell' });
  });

  it('is what the real faiss host process runs with: this process\'s environment wins, the rest is filled in', async function () {
    const dir = await mkdtemp(path.join(tmpdir(), 'faiss-host-env-'));
    const file = path.join(dir, 'small.index');
    const writer = await IxfiWriter.open(file, { dimension: 8, rows: 4, description: {} });
    await writer.append(unitVectors(4, 8, 1));
    await writer.finish();
    const saved = process.env.OMP_WAIT_POLICY;
    process.env.OMP_WAIT_POLICY = 'ACTIVE';
    const before = new Set(await childPids());
    const index = await FaissIndex.open(file);
    try {
      const hosts = (await childPids()).filter((pid) => !before.has(pid));
      assert.equal(hosts.length, 1, 'one new child: the faiss host');
      const host = await environmentOf(hosts[0]!);
      assert.equal(host.OMP_WAIT_POLICY, 'ACTIVE');
      assert.equal(host.OPENBLAS_NUM_THREADS, process.env.OPENBLAS_NUM_THREADS ?? String(availableParallelism()));
      // This machine may set OPENBLAS_CORETYPE for everyone (older OpenBLAS builds misbehave on some CPUs): then it stays.
      assert.equal(host.OPENBLAS_CORETYPE, faissHostEnv(process.env).OPENBLAS_CORETYPE);
      assert.deepEqual([...(await index.nearest(unitVectors(1, 8, 1), 1)).rowIndices], [0]);
    } finally {
      if (saved === undefined) delete process.env.OMP_WAIT_POLICY;
      else process.env.OMP_WAIT_POLICY = saved;
      await index.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
