import { Presets, SingleBar } from 'cli-progress';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

const LINE_EVERY_MS = 5000;

/** A bar with ETA on a terminal; on a pipe (CI, logs) a line every few seconds instead. */
export function progressBar(label: string, unit: string): Progress {
  if (!process.stderr.isTTY) return progressLines(label, unit, (line) => process.stderr.write(line));
  const bar = new SingleBar(
    { format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | ETA {eta_formatted}`, stream: process.stderr, etaBuffer: 50 },
    Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      if (!started) bar.start(total, done);
      started = true;
      bar.update(done);
    },
    stop: () => bar.stop(),
  };
}

/**
 * Progress as text lines: the first update, then one every few seconds, and the last. The rate
 * counts from the first update (a resumed build's old rows are not this run's speed) and shows
 * only once some work has been measured.
 */
export function progressLines(label: string, unit: string, write: (line: string) => void, now: () => number = () => performance.now()): Progress {
  let start: { done: number; at: number } | undefined;
  let lastLine = -Infinity;
  return {
    update(done, total) {
      const at = now();
      start ??= { done, at };
      if (at - lastLine < LINE_EVERY_MS && done < total) return;
      lastLine = at;
      const seconds = (at - start.at) / 1000;
      const rate = seconds > 0 ? (done - start.done) / seconds : 0;
      const speed = rate > 0 ? ` (${rate.toFixed(1)} ${unit}/s, ETA ${Math.round((total - done) / rate)}s)` : '';
      write(`${label}: ${done}/${total} ${unit}${speed}\n`);
    },
    stop: () => undefined,
  };
}
