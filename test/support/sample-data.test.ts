import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, requireFixture, SAMPLE_CORPUS } from './sample-data.js';

describe('test fixtures inside the checkout', function () {
  it('holds the wiki18 sample: 1,000 rows, ids 0 to 999 in order, each {id, contents}', function () {
    assert.ok(SAMPLE_CORPUS.startsWith(path.join(repoRoot, 'test', 'data') + path.sep));
    const rows = readFileSync(SAMPLE_CORPUS, 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(rows.length, 1000);
    assert.deepEqual(rows.map((row) => row.id), Array.from({ length: 1000 }, (_, i) => String(i)));
    assert.deepEqual(Object.keys(rows[0]!), ['id', 'contents']);
    assert.match(rows[0]!.contents as string, /^"Evan Morris"\n/);
  });

  it('fails at once on a missing fixture, naming the file and how to restore it', function () {
    const missing = path.join(repoRoot, 'test', 'data', 'absent.jsonl');
    assert.throws(() => requireFixture(missing), {
      message: `test fixture ${missing} is missing: it is part of the repository, restore it (git checkout -- test/data/absent.jsonl)`,
    });
  });
});
