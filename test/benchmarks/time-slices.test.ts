import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { sliceSeconds, TimeSlices } from '../../benchmarks/time-slices.js';
import { untilAborted } from '../../src/index/build-index.js';

describe("time slices: every step of gpu-check's budget leaves a record (real timers, about 1.5 s)", function () {
  it('gives a step an equal share of the time left, at least its minimum, at most what is left, or nothing below its minimum', function () {
    assert.equal(sliceSeconds(100, 4, 10), 25);
    assert.equal(sliceSeconds(100, 4, 30), 30);
    assert.equal(sliceSeconds(25, 1, 10), 25);
    assert.equal(sliceSeconds(20, 2, 30), undefined);
  });

  it('records a hung step as cut with its figures so far and goes on; a step stopped by its slice as cut, a failure as failed, a partial one as partial, and one that does not fit as skipped', async function () {
    const report: Record<string, unknown> = {};
    const steps = new TimeSlices(
      Date.now() + 3_000,
      [
        { name: 'hangs', minimumS: 0 },
        { name: 'waits', minimumS: 0 },
        { name: 'fails', minimumS: 0 },
        { name: 'partial', minimumS: 0 },
        { name: 'tooLong', minimumS: 60 },
      ],
      async (name, value) => {
        report[name] = value;
      },
      0.2,
    );
    const started = Date.now();
    const hangs = await steps.run('hangs', async (_slice, publish) => {
      await publish({ done: 1 });
      // Publishes again after its guard has given up on it, while the next steps run.
      await sleep(900);
      await publish({ done: 2 });
      return new Promise(() => undefined);
    });
    const afterHang = Date.now();
    const waits = await steps.run('waits', (slice) => untilAborted(new Promise(() => undefined), slice.signal));
    await steps.run('fails', async () => {
      throw new Error('no device');
    });
    await steps.run('partial', async (slice) => ({ rows: 3, partial: `stopped with ${slice.leftS() > 0 ? 'time' : 'none'} left` }));
    await steps.run('tooLong', async () => ({}));
    await sleep(200);

    // A 3 s budget over 5 steps: the hung one gets 0.6 s, and is given up on 0.2 s later.
    assert.ok(Math.abs(hangs.sliceSeconds! - 0.6) < 0.05, `slice of ${hangs.sliceSeconds} s`);
    assert.ok(afterHang - started < 1_000, `the hung step took ${afterHang - started} ms`);
    assert.equal(waits.status, 'cut');
    const { steps: outcomes, tooLong, ...figures } = report;
    assert.deepEqual(figures, {
      hangs: { done: 1, cut: 'still running 0.2 s after its 1 s slice; left running' },
      waits: { cut: waits.reason },
      fails: { failed: 'no device' },
      partial: { rows: 3, partial: 'stopped with time left' },
    });
    assert.match(waits.reason!, /^the step's \d+ s slice ended$/);
    assert.match((tooLong as { skipped: string }).skipped, /^\d+ s of the budget left, the step needs at least 60 s$/);
    assert.deepEqual(
      Object.entries(outcomes as Record<string, { status: string }>).map(([name, outcome]) => [name, outcome.status]),
      [
        ['hangs', 'cut'],
        ['waits', 'cut'],
        ['fails', 'failed'],
        ['partial', 'partial'],
        ['tooLong', 'skipped'],
      ],
    );
  });
});
