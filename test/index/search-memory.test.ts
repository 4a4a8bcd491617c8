import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isServiceError } from '../support/assert-service-error.js';
import { fixtureHost, meminfo } from '../support/host-memory.js';
import { writeSparseIndex } from '../support/index-fixtures.js';
import { FaissIndex } from '../../src/index/faiss-index.js';
import { OnnxFlatIndex } from '../../src/index/onnx-flat-index.js';
import { planSwap, readHostMemory, SYSTEM_MEMORY_FILES, type HostMemory, type MemoryFiles, type SearchMemoryPlan, type VersionMemory } from '../../src/index/search-memory.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

describe('host memory: /proc/meminfo and cgroup limits (fixture files)', function () {
  let dir: string;
  let n = 0;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'host-memory-'));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  /** A fresh fixture: meminfo, /proc/self/cgroup, and files under a cgroup root by relative path. */
  async function fixture(selfCgroup: string, cgroupFiles: Record<string, string>, mem = meminfo(16 * GiB, 10 * GiB)): Promise<MemoryFiles> {
    const root = path.join(dir, String(n++));
    const cgroupRoot = path.join(root, 'cgroup');
    await mkdir(cgroupRoot, { recursive: true });
    for (const [name, text] of Object.entries(cgroupFiles)) {
      await mkdir(path.dirname(path.join(cgroupRoot, name)), { recursive: true });
      await writeFile(path.join(cgroupRoot, name), text);
    }
    await writeFile(path.join(root, 'meminfo'), mem);
    await writeFile(path.join(root, 'self-cgroup'), selfCgroup);
    return { meminfo: path.join(root, 'meminfo'), selfCgroup: path.join(root, 'self-cgroup'), cgroupRoot };
  }

  it('no cgroup limit: MemAvailable is what the process may fill', async function () {
    const files = await fixture('0::/user.slice/session-1.scope\n', { 'user.slice/memory.max': 'max\n' });
    assert.deepEqual(await readHostMemory(files), { totalBytes: 16 * GiB, availableBytes: 10 * GiB, usableBytes: 10 * GiB });
  });

  it('cgroup v2: the limit minus the working set (usage less inactive file pages) when that is less', async function () {
    const files = await fixture('0::/kubepods/pod1/c1\n', {
      'kubepods/memory.max': 'max\n',
      'kubepods/pod1/c1/memory.max': `${8 * GiB}\n`,
      'kubepods/pod1/c1/memory.current': `${6 * GiB}\n`,
      'kubepods/pod1/c1/memory.stat': `anon ${4 * GiB}\ninactive_file ${GiB}\nactive_file ${GiB}\n`,
    });
    const memory = await readHostMemory(files);
    assert.equal(memory.usableBytes, 3 * GiB);
    assert.deepEqual(memory.cgroup, {
      version: 2,
      dir: path.join(files.cgroupRoot, 'kubepods/pod1/c1'),
      limitBytes: 8 * GiB,
      usageBytes: 6 * GiB,
      reclaimableBytes: GiB,
    });
  });

  it('cgroup v2: a parent limit tighter than the own one binds', async function () {
    const files = await fixture('0::/a/b\n', { 'a/memory.max': `${2 * GiB}\n`, 'a/memory.current': '0\n', 'a/b/memory.max': 'max\n' });
    const memory = await readHostMemory(files);
    assert.equal(memory.cgroup?.dir, path.join(files.cgroupRoot, 'a'));
    assert.equal(memory.usableBytes, 2 * GiB);
  });

  it('cgroup v1: the memory controller\'s limit; its "unlimited" value is no limit', async function () {
    const limited = await fixture('5:devices:/docker/abc\n4:memory:/docker/abc\n0::/\n', {
      'memory/docker/abc/memory.limit_in_bytes': `${4 * GiB}\n`,
      'memory/docker/abc/memory.usage_in_bytes': `${3 * GiB}\n`,
      'memory/docker/abc/memory.stat': `cache ${GiB}\ninactive_file 5\ntotal_inactive_file ${512 * MiB}\n`,
    });
    assert.equal((await readHostMemory(limited)).usableBytes, 1.5 * GiB);
    const unlimited = await fixture('4:memory:/docker/abc\n', { 'memory/docker/abc/memory.limit_in_bytes': '9223372036854771712\n' });
    assert.deepEqual(await readHostMemory(unlimited), { totalBytes: 16 * GiB, availableBytes: 10 * GiB, usableBytes: 10 * GiB });
  });

  it('a meminfo without MemAvailable is an internal error naming the file', async function () {
    const files = await fixture('0::/\n', {}, 'MemTotal: 1024 kB\n');
    await assert.rejects(readHostMemory(files), isServiceError('internal', /cannot read MemTotal and MemAvailable from .*meminfo/));
  });

  it('this host: MemAvailable within MemTotal, and what may be filled within both', async function () {
    const memory = await readHostMemory();
    assert.ok(memory.availableBytes > 0 && memory.availableBytes <= memory.totalBytes);
    assert.ok(memory.usableBytes <= memory.availableBytes);
  });
});

describe('search memory check before an index loads (sparse IxFI files, real load paths)', function () {
  let dir: string;
  let index: string;
  /** 2M rows × 32 fp32 = 244.1 MiB of vectors that take no disk space. */
  const shape = { dimension: 32, rows: 2_000_000 };
  /** 512 queries × 32,768 rows × 4 bytes = 64 MiB of scores per run. */
  const SHARD_ROWS = 32_768;
  let smallHost: MemoryFiles;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'search-memory-'));
    index = path.join(dir, 'sparse.index');
    await writeSparseIndex(index, shape);
    smallHost = await fixtureHost(dir, GiB, 100 * MiB);
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('onnx on CPU: a mapped index past MemAvailable is refused with the sizes and the ways out', async function () {
    await assert.rejects(
      OnnxFlatIndex.open(index, {}, { memoryFiles: smallHost, shardRows: SHARD_ROWS }),
      isServiceError(
        'bad_request',
        new RegExp(
          'needs 308.1 MB of this host\'s memory but MemAvailable is 100 MB \\(1 GB RAM\\): 2000000 rows × 32 fp32 mapped by the onnx backend on CPU ' +
            '\\(244.1 MB of file pages, every one read by every query\\) and 64 MB of the process\'s own memory; ' +
            'ways out: a compressed index \\(convert-index --faiss_type SQ8 .*fp16 on a GPU \\(--faiss_gpu.*a host with more RAM; ' +
            'or --search_memory_budget 1gb to map it anyway and read the pages that do not fit from disk as queries reach them$',
        ),
      ),
    );
  });

  it('onnx on CPU: a budget that covers it maps it anyway, with a warning that queries stream from disk', async function () {
    const warnings: string[] = [];
    const opened = await OnnxFlatIndex.open(index, {}, { memoryFiles: smallHost, shardRows: SHARD_ROWS, memoryBudgetBytes: GiB, warn: (message) => warnings.push(message) });
    await opened.close();
    assert.deepEqual(
      warnings.map((message) => message.replace(/^index \S+ /, '')),
      [
        'needs 308.1 MB of this host\'s memory but MemAvailable is 100 MB (1 GB RAM): 2000000 rows × 32 fp32 mapped by the onnx backend on CPU ' +
          '(244.1 MB of file pages, every one read by every query) and 64 MB of the process\'s own memory; ' +
          'mapping it anyway, as --search_memory_budget 1 GB allows: queries read the pages that do not fit from disk as they reach them',
      ],
    );
  });

  it("the budget of the device the encoder runs on covers its weights too, as a swap plans them; an encoder on another device does not count", async function () {
    // 244.1 MiB of vectors + 64 MiB of scores = 308.1 MiB: a 320 MiB budget holds the index alone, not with 20 MiB of encoder beside it.
    const budget = { memoryBudgetBytes: 320 * MiB, shardRows: SHARD_ROWS };
    const bigHostDir = path.join(dir, 'big-host');
    await mkdir(bigHostDir, { recursive: true });
    const bigHost = await fixtureHost(bigHostDir, 16 * GiB, 8 * GiB);
    await assert.rejects(
      OnnxFlatIndex.open(index, {}, { ...budget, memoryFiles: bigHost, encoderWeights: { device: 'cpu', bytes: 20 * MiB } }),
      isServiceError(
        'bad_request',
        /does not fit the search memory budget of 320 MB per device: 2000000 rows × 32 fp32 take 244.1 MB plus 64 MB of scores \(mapped by the onnx backend on CPU\), beside 20 MB of encoder weights on cpu; ways out: /,
      ),
    );
    await (await OnnxFlatIndex.open(index, {}, { ...budget, memoryFiles: bigHost, encoderWeights: { device: 'cuda:0', bytes: 20 * MiB } })).close();
    await (await OnnxFlatIndex.open(index, {}, { ...budget, memoryFiles: bigHost })).close();
  });

  it('faiss: reading the file into the heap past MemAvailable is refused whatever the budget, before faiss reads a byte', async function () {
    for (const memoryBudgetBytes of [0, GiB]) {
      await assert.rejects(
        FaissIndex.open(index, {}, { memoryFiles: smallHost, memoryBudgetBytes }),
        isServiceError('bad_request', /needs 244.1 MB of this host's memory but MemAvailable is 100 MB \(1 GB RAM\): 2000000 rows × 32 fp32 read into memory by the faiss backend and 244.1 MB of the process's own memory; ways out: a compressed index \(convert-index --faiss_type SQ8[^;]*; fp16 on a GPU[^;]*; or a host with more RAM$/),
      );
    }
  });

  it('a cgroup limit tighter than MemAvailable is named in the refusal', async function () {
    const cgroupRoot = path.join(dir, 'cgroup');
    await mkdir(path.join(cgroupRoot, 'job'), { recursive: true });
    await writeFile(path.join(cgroupRoot, 'job', 'memory.max'), `${64 * MiB}\n`);
    await writeFile(path.join(cgroupRoot, 'job', 'memory.current'), `${16 * MiB}\n`);
    await writeFile(path.join(dir, 'job-cgroup'), '0::/job\n');
    const files = { meminfo: SYSTEM_MEMORY_FILES.meminfo, selfCgroup: path.join(dir, 'job-cgroup'), cgroupRoot };
    await assert.rejects(
      OnnxFlatIndex.open(index, {}, { memoryFiles: files, shardRows: SHARD_ROWS }),
      isServiceError('bad_request', /needs 308.1 MB of this host's memory but the cgroup limit of 64 MB \(\S+job\) leaves 48 MB \(/),
    );
  });

  it('an index larger than this host\'s RAM opens mapped, without a reservation of its size (ORT\'s memory pattern is off)', async function () {
    const { totalBytes } = await readHostMemory();
    if (totalBytes > 512 * GiB) this.skip();
    // Past MemTotal the kernel's default overcommit heuristic refuses any one anonymous allocation
    // of the index's size: ORT's memory pattern used to make one and died with std::bad_alloc.
    const dimension = 768;
    const big = { dimension, rows: Math.ceil((totalBytes + GiB) / (dimension * 4)) };
    const file = path.join(dir, 'larger-than-ram.index');
    await writeSparseIndex(file, big);
    const warnings: string[] = [];
    const opened = await OnnxFlatIndex.open(file, {}, { memoryBudgetBytes: 2 * totalBytes, warn: (message) => warnings.push(message) });
    await opened.close();
    assert.equal(opened.rows, big.rows);
    assert.match(warnings.join('\n'), /mapping it anyway/);
  });
});

describe('swap plan: both versions, their indexes and encoders, against each device budget, the driver and the host, before anything loads', function () {
  /** An index of `vectorBytes` per device with 10 MB of scores, mapped on this host or copied to `cuda:0` and `cuda:1`. */
  function indexPlan(indexPath: string, vectorBytes: number, onHost: boolean): SearchMemoryPlan {
    return {
      indexPath,
      rowFormat: '768 fp16',
      holding: onHost ? 'mapped by the onnx backend on CPU' : 'copied to each CUDA device by the onnx backend',
      devices: onHost ? ['cpu'] : ['cuda:0', 'cuda:1'],
      perDevice: { rows: vectorBytes / 1536, vectorBytes, scoreBytes: 10 * MiB },
      hostRows: onHost ? vectorBytes / 1536 : 0,
      hostMappedBytes: onHost ? vectorBytes : 0,
      mappedReads: 'every one read by every query',
      hostAnonymousBytes: onHost ? 10 * MiB : 0,
    };
  }
  /** A version of that index, its encoder's weights (`encoderBytes`) on `cuda:0`, or on the host with a CPU index. */
  function version(indexPath: string, vectorBytes: number, onHost: boolean, encoderBytes = 0): VersionMemory {
    return { index: indexPlan(indexPath, vectorBytes, onHost), encoder: { device: onHost ? 'cpu' : 'cuda:0', bytes: encoderBytes } };
  }
  const host = (usableBytes: number): HostMemory => ({ totalBytes: 64 * GiB, availableBytes: usableBytes, usableBytes });
  const gpuActive = version('/a.index', 30 * GiB, false);
  const gpuNext = version('/b.index', 30 * GiB, false);

  it('side by side when both fit the budget; replace when only one does, with the sizes', function () {
    const both = planSwap(gpuActive, gpuNext, 75 * GiB, host(8 * GiB), 'auto');
    assert.equal(both.mode, 'side-by-side');
    assert.equal(both.fits, true);
    assert.equal(both.reason, "both versions fit: 60 GB on cuda:0 of the search memory budget of 75 GB, 0 B of the host's 8 GB");
    const one = planSwap(gpuActive, gpuNext, 40 * GiB, host(8 * GiB), 'auto');
    assert.equal(one.mode, 'replace');
    assert.equal(one.reason, 'both versions need 60 GB on cuda:0, over the search memory budget of 40 GB');
    const cuda0 = { name: 'cuda:0', activeBytes: 30 * GiB + 10 * MiB, nextBytes: 30 * GiB + 10 * MiB, encoderBytes: { active: 0, next: 0 }, budgetBytes: 40 * GiB, limitBytes: 40 * GiB };
    assert.deepEqual(one.device, cuda0);
    assert.deepEqual(one.devices, [cuda0, { ...cuda0, name: 'cuda:1' }]);
  });

  it("counts each encoder's weights on the device it runs on: cuda:0 holds a slice and both encoders, and decides", function () {
    const withEncoders = planSwap(version('/a.index', 30 * GiB, false, 1 * GiB), version('/b.index', 30 * GiB, false, 1 * GiB), 61 * GiB, host(8 * GiB), 'auto');
    assert.equal(withEncoders.mode, 'replace');
    assert.equal(withEncoders.reason, 'both versions need 62 GB on cuda:0 (2 GB of it encoder weights), over the search memory budget of 61 GB');
    assert.deepEqual(
      withEncoders.devices.map(({ name, activeBytes, encoderBytes }) => [name, activeBytes, encoderBytes]),
      [
        ['cuda:0', 31 * GiB + 10 * MiB, { active: GiB, next: GiB }],
        ['cuda:1', 30 * GiB + 10 * MiB, { active: 0, next: 0 }],
      ],
    );
    // Without the encoders the same budget holds both.
    assert.equal(planSwap(gpuActive, gpuNext, 61 * GiB, host(8 * GiB), 'auto').mode, 'side-by-side');
  });

  it("counts a CPU encoder (int8 or fp32 graph) in this host's memory", function () {
    // The serving encoder is already outside MemAvailable; the new one is not: 2 GB mapped + 2 GB + 0.5 GB.
    const cpu = planSwap(version('/a.index', 2 * GiB, true, 512 * MiB), version('/b.index', 2 * GiB, true, 512 * MiB), 0, host(4.25 * GiB), 'auto');
    assert.deepEqual(cpu.host, { activeBytes: 2.5 * GiB + 10 * MiB, nextBytes: 2.5 * GiB + 10 * MiB, usableBytes: 4.25 * GiB });
    assert.equal(cpu.mode, 'replace');
    assert.match(cpu.reason, /^both versions need 4\.5 GB more of this host's memory than the 4\.\d GB it has left$/);
    assert.equal(planSwap(version('/a.index', 2 * GiB, true), version('/b.index', 2 * GiB, true), 0, host(4.25 * GiB), 'auto').mode, 'side-by-side');
  });

  it("plans a CUDA device against the driver's free memory plus what the serving version holds there, when that is less than the budget", function () {
    const active = version('/a.index', 30 * GiB, false, 1 * GiB);
    const next = version('/b.index', 30 * GiB, false, 1 * GiB);
    // An 80 GB card with the serving version (31 GB) and 20 GB of another process: 29 GB free.
    const driver = new Map([['cuda:0', 29 * GiB], ['cuda:1', 49 * GiB]]);
    const plan = planSwap(active, next, 75 * GiB, host(8 * GiB), 'auto', driver);
    assert.equal(plan.mode, 'replace');
    assert.equal(plan.device.name, 'cuda:0');
    assert.equal(plan.device.freeBytes, 29 * GiB);
    assert.equal(plan.device.limitBytes, 60 * GiB + 10 * MiB);
    assert.equal(plan.reason, "both versions need 62 GB on cuda:0 (2 GB of it encoder weights), over the 60 GB the driver leaves there (29 GB free + the serving version's 31 GB)");
    // The budget binds where it is the lesser; a device the driver cannot tell about has the budget alone.
    assert.deepEqual(plan.devices.map(({ name, limitBytes }) => [name, limitBytes]), [['cuda:0', 60 * GiB + 10 * MiB], ['cuda:1', 75 * GiB]]);
    const unknown = planSwap(active, next, 75 * GiB, host(8 * GiB), 'auto', new Map());
    assert.deepEqual([unknown.mode, unknown.device.freeBytes, unknown.device.limitBytes], ['side-by-side', undefined, 75 * GiB]);
    // No budget: the driver alone.
    const plenty = planSwap(active, next, 0, host(8 * GiB), 'auto', new Map([['cuda:0', 40 * GiB]]));
    assert.equal(plenty.mode, 'side-by-side');
    assert.match(plenty.reason, /^both versions fit: 62 GB on cuda:0 \(2 GB of it encoder weights\) of the 71 GB the driver leaves there/);
  });

  it('refuses a new version the driver cannot hold even once the serving one is closed', function () {
    assert.throws(
      () => planSwap(gpuActive, version('/big.index', 40 * GiB, false), 0, host(8 * GiB), 'auto', new Map([['cuda:0', 5 * GiB]])),
      isServiceError('bad_request', /^index \/big\.index with its encoder needs 40 GB on cuda:0, over the 35 GB the driver leaves there .* even once the serving version is closed/),
    );
  });

  it("replace when the host cannot keep the serving version's mapped pages and the new version's, though each fits alone", function () {
    const cpu = planSwap(version('/a.index', 3 * GiB, true), version('/b.index', 3 * GiB, true), 0, host(5 * GiB), 'auto');
    assert.equal(cpu.mode, 'replace');
    assert.match(cpu.reason, /both versions need 6 GB more of this host's memory than the 5 GB it has left/);
    assert.deepEqual(cpu.host, { activeBytes: 3 * GiB + 10 * MiB, nextBytes: 3 * GiB + 10 * MiB, usableBytes: 5 * GiB });
  });

  it('--swap_mode forces either mode; a forced side by side that does not fit says so', function () {
    assert.deepEqual(
      [planSwap(gpuActive, gpuNext, 40 * GiB, host(8 * GiB), 'side-by-side'), planSwap(gpuActive, gpuNext, 0, host(8 * GiB), 'replace')].map(({ mode, fits, reason }) => [mode, fits, reason]),
      [
        [
          'side-by-side',
          false,
          '--swap_mode side-by-side forced though they do not fit (both versions need 60 GB on cuda:0, over the search memory budget of 40 GB): loading the new version beside the serving one may run out of memory',
        ],
        ['replace', true, "--swap_mode replace (both versions fit: 60 GB on cuda:0, 0 B of the host's 8 GB)"],
      ],
    );
  });

  it('refuses a new version that does not fit the budget even alone, before the serving one is touched', function () {
    assert.throws(
      () => planSwap(gpuActive, version('/big.index', 50 * GiB, false), 40 * GiB, host(8 * GiB), 'auto'),
      isServiceError('bad_request', /^index \/big\.index does not fit the search memory budget of 40 GB per device/),
    );
  });

  it("refuses a new version this host cannot hold even once the serving one is closed, before the serving one is touched", function () {
    assert.throws(
      () => planSwap(version('/a.index', 1 * GiB, true), version('/huge.index', 6 * GiB, true), 0, host(5 * GiB), 'auto'),
      isServiceError('bad_request', /^index \/huge\.index needs 6 GB of this host's memory but MemAvailable is 5 GB/),
    );
  });
});
