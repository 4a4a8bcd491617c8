import assert from 'node:assert/strict';
import { progressLines } from '../../src/commands/progress.js';

describe('progress lines on a pipe (a given clock, no waiting)', function () {
  it('prints rows with the rate since the first update, and no rate before any row is done', function () {
    const lines: string[] = [];
    let clock = 1000;
    const progress = progressLines('encoding passages', 'rows', (line) => lines.push(line), () => clock);
    progress.update(200, 1000);
    clock += 2000;
    progress.update(240, 1000);
    clock += 4000;
    progress.update(320, 1000);
    clock += 4000;
    progress.update(400, 1000);
    clock += 500;
    progress.update(1000, 1000);
    assert.deepEqual(lines, [
      'encoding passages: 200/1000 rows\n',
      'encoding passages: 320/1000 rows (20.0 rows/s, ETA 34s)\n',
      'encoding passages: 1000/1000 rows (76.2 rows/s, ETA 0s)\n',
    ]);
  });
});
