import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './sample-data.js';

const run = promisify(execFile);

/** The test files a mocha command line would run, listed by a dry run (no hook or test runs). */
async function filesRun(commandLine: string): Promise<Set<string>> {
  const { stdout } = await run('sh', ['-c', `${commandLine} --dry-run --reporter json`], { cwd: repoRoot, maxBuffer: 64 * 2 ** 20 });
  const report = JSON.parse(stdout) as { tests: { file: string }[] };
  return new Set(report.tests.map((test) => path.relative(repoRoot, test.file)));
}

/** The areas (folders of dist/test/) that a set of test files comes from. */
function areas(files: Set<string>): Set<string> {
  return new Set([...files].map((file) => file.split(path.sep)[2]!));
}

describe("the README's test commands run what they say", function () {
  it('`npx mocha dist/test/<area>/*.test.js` runs that area alone, and `npm test` runs every area', async function () {
    const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    const oneArea = /`(npx mocha dist\/test\/<area>\/\*\.test\.js)`/.exec(readme)?.[1];
    assert.ok(oneArea, 'README names the one-area command');
    assert.deepEqual(areas(await filesRun(oneArea.replace('<area>', 'threads'))), new Set(['threads']));

    const script = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: { test: string } }).scripts.test;
    const compiled = path.join(repoRoot, 'dist', 'test');
    const everyArea = readdirSync(compiled, { withFileTypes: true }).filter(
      (entry) => entry.isDirectory() && readdirSync(path.join(compiled, entry.name)).some((file) => file.endsWith('.test.js')),
    );
    assert.deepEqual(areas(await filesRun(`npx ${script}`)), new Set(everyArea.map((entry) => entry.name)));
  });
});
