import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../support/sample-data.js';

const run = promisify(execFile);
const DEPCRUISE = path.join(repoRoot, 'node_modules', '.bin', 'depcruise');
const CONFIG = path.join(repoRoot, '.dependency-cruiser.cjs');

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
}

/** dependency-cruiser over `src` of `cwd` with the project's rules; exits non-zero on a violation, so read its JSON either way. */
async function violations(cwd: string): Promise<Violation[]> {
  const result = await run(DEPCRUISE, ['--config', CONFIG, '--output-type', 'json', 'src'], { cwd, maxBuffer: 64 * 1024 * 1024 }).catch(
    (error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }),
  );
  const report = JSON.parse(result.stdout) as { summary: { violations: Violation[]; totalCruised: number } };
  assert.ok(report.summary.totalCruised > 0, 'dependency-cruiser read no modules');
  return report.summary.violations;
}

describe('rooms import only the rooms below them (dependency-cruiser, .dependency-cruiser.cjs)', function () {
  this.timeout(60_000);

  it('finds no upward import, cycle or test import in src/', async function () {
    const found = await violations(repoRoot);
    assert.deepEqual(
      found.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`),
      [],
    );
  });

  it('catches a type-only import from a lower room into a higher one', async function () {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'rooms-'));
    try {
      await mkdir(path.join(dir, 'src', 'encoder'), { recursive: true });
      await mkdir(path.join(dir, 'src', 'engine'), { recursive: true });
      await writeFile(path.join(dir, 'src', 'engine', 'types.ts'), 'export interface RetrievalResult { version: string }\n');
      await writeFile(
        path.join(dir, 'src', 'encoder', 'probe.ts'),
        "import type { RetrievalResult } from '../engine/types.js';\nexport const probe = (r: RetrievalResult) => r.version;\n",
      );
      const found = await violations(dir);
      assert.deepEqual(
        found.map((v) => [v.rule.name, v.from, v.to]),
        [['encoder-imports-downward', 'src/encoder/probe.ts', 'src/engine/types.ts']],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
