import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../support/sample-data.js';

const run = promisify(execFile);

interface LibraryRecord {
  name: string;
  needed: boolean;
  path: string | null;
  source: string | null;
}

interface LibrariesRecord {
  pythons: { command: string; paths?: { sitePackages: string[] }; failed?: string }[];
  pythonLibraryFolders: string[];
  addedToLibraryPath: string[];
  libraries: LibraryRecord[];
}

/** Empty files named like libraries, as the loader looks them up by name. */
async function touch(dir: string, ...names: string[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  await Promise.all(names.map((name) => writeFile(path.join(dir, name), '')));
}

async function script(file: string, text: string): Promise<void> {
  await writeFile(file, `#!/usr/bin/env bash\n${text}\n`);
  await chmod(file, 0o755);
}

/**
 * scripts/cuda-libraries.sh sourced as gpu-check.sh sources it, with `bin` first on PATH (a fake
 * ldconfig, fake or venv Pythons), LD_LIBRARY_PATH `given` and the system folders `system`.
 */
async function findLibraries(work: string, bin: string[], given: string, system: string) {
  const recordFile = path.join(work, 'record.json');
  const { stdout } = await run(
    'bash',
    ['-c', 'set -euo pipefail; source scripts/cuda-libraries.sh; cuda_libraries_find "$1"; printf "%s\\n" "$LD_LIBRARY_PATH" "${cuda_libraries_missing[*]}"', 'bash', recordFile],
    {
      cwd: repoRoot,
      env: { ...process.env, PATH: [...bin, process.env.PATH].join(':'), LD_LIBRARY_PATH: given, CUDA_LIBRARY_SYSTEM_DIRS: system, CUDA_LIBRARIES_PYTHON_TIMEOUT_S: '2' },
    },
  );
  const [libraryPath, missing] = stdout.split('\n');
  const record = JSON.parse(await readFile(recordFile, 'utf8')) as LibrariesRecord;
  const where = Object.fromEntries(record.libraries.map((library) => [library.name, { path: library.path, source: library.source }]));
  return { libraryPath: libraryPath!, missing: missing!.split(' ').filter(Boolean), record, where };
}

describe('scripts/cuda-libraries.sh: the CUDA provider libraries on a GPU host', function () {
  this.timeout(30_000);
  let work: string;
  let fakeBin: string;

  beforeEach(async function () {
    work = await mkdtemp(path.join(os.tmpdir(), 'cuda-libraries-'));
    fakeBin = path.join(work, 'bin');
    await mkdir(fakeBin);
    // The driver's library, where ldconfig's cache says it is.
    await touch(path.join(work, 'driver'), 'libcuda.so.1');
    await script(path.join(fakeBin, 'ldconfig'), `printf '2 libs found\\n\\tlibcuda.so.1 (libc6,x86-64) => ${work}/driver/libcuda.so.1\\n\\tlibfoo.so (libc6) => /x/libfoo.so\\n'`);
  });

  afterEach(async function () {
    await rm(work, { recursive: true, force: true });
  });

  it("asks each Python where its site-packages are and loads from its nvidia wheels and torch/lib, after what the loader finds already", async function () {
    const venv = path.join(work, 'venv');
    await run('python3', ['-m', 'venv', '--without-pip', venv]);
    const { stdout: sitePackages } = await run(path.join(venv, 'bin', 'python3'), ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']);
    const site = sitePackages.trim();
    // CUDA 13's wheels share one folder; cuDNN's keeps its own; PyTorch's folder holds more.
    await touch(path.join(site, 'nvidia', 'cu13', 'lib'), 'libcudart.so.13', 'libcublas.so.13', 'libcublasLt.so.13');
    await touch(path.join(site, 'nvidia', 'cudnn', 'lib'), 'libcudnn.so.9');
    await touch(path.join(site, 'torch', 'lib'), 'libcufft.so.12', 'libcurand.so.10');
    // Already on the library path: loads from there, although torch/lib, added for cuFFT, holds one too.
    const given = path.join(work, 'given');
    await touch(given, 'libcurand.so.10');
    const system = path.join(work, 'system');
    // The system's copy of a library the wheels have too is not what loads.
    await touch(path.join(system, 'cuda-13', 'lib64'), 'libnvrtc.so.13', 'libcudart.so.13');

    const found = await findLibraries(work, [fakeBin, path.join(venv, 'bin')], given, `${path.join(work, 'sys*')} ${path.join(work, 'absent')}`);

    assert.deepEqual(found.missing, []);
    assert.deepEqual(found.where, {
      'libcuda.so.1': { path: `${work}/driver/libcuda.so.1`, source: 'ldconfig' },
      'libcudart.so.13': { path: `${site}/nvidia/cu13/lib/libcudart.so.13`, source: 'python3 site-packages' },
      'libcublas.so.13': { path: `${site}/nvidia/cu13/lib/libcublas.so.13`, source: 'python3 site-packages' },
      'libcublasLt.so.13': { path: `${site}/nvidia/cu13/lib/libcublasLt.so.13`, source: 'python3 site-packages' },
      'libcurand.so.10': { path: `${given}/libcurand.so.10`, source: 'LD_LIBRARY_PATH' },
      'libcudnn.so.9': { path: `${site}/nvidia/cudnn/lib/libcudnn.so.9`, source: 'python3 site-packages' },
      'libcufft.so.12': { path: `${site}/torch/lib/libcufft.so.12`, source: 'python3 site-packages' },
      'libnvrtc.so.13': { path: `${system}/cuda-13/lib64/libnvrtc.so.13`, source: 'system folder' },
    });
    // The given path first, then each folder once, the wheels' before the system's.
    assert.deepEqual(found.libraryPath.split(':'), [given, `${site}/nvidia/cu13/lib`, `${site}/nvidia/cudnn/lib`, `${site}/torch/lib`, `${system}/cuda-13/lib64`]);
    assert.deepEqual(
      found.record.pythons.map((python) => [python.command, python.paths?.sitePackages.includes(site)]),
      [
        ['python3', true],
        ['python', true],
      ],
    );
    assert.deepEqual(found.record.pythonLibraryFolders, [`${site}/nvidia`, `${site}/torch/lib`]);
  });

  it('records a Python that fails or hangs, and the needed libraries it could not find', async function () {
    await script(path.join(fakeBin, 'python3'), 'exit 3');
    await script(path.join(fakeBin, 'python'), 'exec sleep 30');

    const started = Date.now();
    const found = await findLibraries(work, [fakeBin], '', path.join(work, 'absent'));

    assert.ok(Date.now() - started < 10_000, 'a hanging Python is given up on');
    assert.deepEqual(found.record.pythons, [
      { command: 'python3', failed: 'exit 3' },
      { command: 'python', failed: 'exit 124' },
    ]);
    assert.deepEqual(found.missing, ['libcudart.so.13', 'libcublas.so.13', 'libcublasLt.so.13', 'libcurand.so.10', 'libcudnn.so.9']);
    assert.deepEqual(found.where['libcufft.so.12'], { path: null, source: null });
    assert.equal(found.libraryPath, '');
  });
});
