import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gpuMemoryReader, parseGpuMemory } from '../../src/onnx/gpu-memory.js';

const MiB = 2 ** 20;

describe("CUDA devices' free memory from the driver (a stand-in nvidia-smi script on PATH: no GPU here)", function () {
  let dir: string;

  before(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'gpu-memory-'));
  });

  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  /** A folder holding an executable `nvidia-smi` that runs `body` (sh), recording its arguments beside it. */
  async function standInDriver(name: string, body: string): Promise<{ env: NodeJS.ProcessEnv; argsFile: string }> {
    const bin = path.join(dir, name);
    const argsFile = path.join(bin, 'args');
    await mkdir(bin);
    await writeFile(path.join(bin, 'nvidia-smi'), `#!/bin/sh\necho "$@" > ${argsFile}\n${body}\n`);
    await chmod(path.join(bin, 'nvidia-smi'), 0o755);
    return { env: { PATH: `${bin}:/usr/bin:/bin` }, argsFile };
  }

  it('parses index, free and total in MiB, leaving out a GPU the driver cannot query', function () {
    const gpus = parseGpuMemory('0, 81037, 81559\n1, [N/A], [N/A]\n2, 40000, 40960\n');
    assert.deepEqual([...gpus], [
      [0, { freeBytes: 81037 * MiB, totalBytes: 81559 * MiB }],
      [2, { freeBytes: 40000 * MiB, totalBytes: 40960 * MiB }],
    ]);
  });

  it('asks the driver for the devices in the plan, numbered as CUDA_VISIBLE_DEVICES maps them', async function () {
    const { env, argsFile } = await standInDriver('two-gpus', 'printf "0, 1000, 81559\\n1, 2000, 81559\\n2, 3000, 40960\\n"');
    const warnings: string[] = [];
    const read = gpuMemoryReader({ env, warn: (message) => warnings.push(message) });
    assert.deepEqual([...(await read([0, 2]))], [
      [0, { freeBytes: 1000 * MiB, totalBytes: 81559 * MiB }],
      [2, { freeBytes: 3000 * MiB, totalBytes: 40960 * MiB }],
    ]);
    assert.equal((await readFile(argsFile, 'utf8')).trim(), '--query-gpu=index,memory.free,memory.total --format=csv,noheader,nounits');
    const visible = gpuMemoryReader({ env: { ...env, CUDA_VISIBLE_DEVICES: '2,1' }, warn: (message) => warnings.push(message) });
    assert.deepEqual([...(await visible([0]))].map(([id, gpu]) => [id, gpu.freeBytes]), [[0, 3000 * MiB]]);
    assert.deepEqual(warnings, []);
    // CUDA's device 3 is not among those listed: unknown, said once.
    assert.deepEqual([...(await read([3]))], []);
    assert.deepEqual([...(await read([3]))], []);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /nvidia-smi does not list CUDA device 3/);
  });

  it('reads nothing and asks nothing for a plan without CUDA devices', async function () {
    const { env, argsFile } = await standInDriver('never-asked', 'echo "0, 1, 1"');
    assert.deepEqual([...(await gpuMemoryReader({ env })([]))], []);
    await assert.rejects(readFile(argsFile), { code: 'ENOENT' });
  });

  it('without nvidia-smi, when it fails or when it does not answer in time, the memory is unknown and that is said once', async function () {
    const absent: string[] = [];
    const noDriver = gpuMemoryReader({ env: { PATH: path.join(dir, 'empty') }, warn: (message) => absent.push(message) });
    assert.deepEqual([...(await noDriver([0]))], []);
    assert.deepEqual([...(await noDriver([0]))], []);
    assert.deepEqual(absent, ["the GPU's free memory is unknown (nvidia-smi is not on PATH); the swap plan holds versions against --search_memory_budget alone"]);

    const failing = await standInDriver('failing', 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9');
    const failed: string[] = [];
    assert.deepEqual([...(await gpuMemoryReader({ env: failing.env, warn: (message) => failed.push(message) })([0]))], []);
    assert.equal(failed.length, 1);
    assert.match(failed[0]!, /^the GPU.s free memory is unknown \(nvidia-smi failed \(exit 9\): NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver\.\)/);

    const hanging = await standInDriver('hanging', 'exec sleep 30');
    const slow: string[] = [];
    assert.deepEqual([...(await gpuMemoryReader({ env: hanging.env, timeoutMs: 200, warn: (message) => slow.push(message) })([0]))], []);
    assert.deepEqual(slow, ["the GPU's free memory is unknown (nvidia-smi did not answer within 200 ms); the swap plan holds versions against --search_memory_budget alone"]);
  });
});
