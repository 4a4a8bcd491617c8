import { Presets, SingleBar } from 'cli-progress';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

const LINE_EVERY_MS = 5000;

/** A bar with ETA on a terminal; on a pipe (CI, logs) a line every few seconds instead. */
export function progressBar(label: string, unit: string): Progress {
  if (process.stderr.isTTY) {
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
  const startedAt = Date.now();
  let lastLine = 0;
  let first: number | undefined;
  return {
    update(done, total) {
      first ??= done;
      const now = Date.now();
      if (now - lastLine < LINE_EVERY_MS && done < total) return;
      lastLine = now;
      const rate = (done - first) / Math.max((now - startedAt) / 1000, 1e-3);
      const eta = rate > 0 ? `, ETA ${Math.round((total - done) / rate)}s` : '';
      process.stderr.write(`${label}: ${done}/${total} ${unit} (${rate.toFixed(1)}/s${eta})\n`);
    },
    stop: () => undefined,
  };
}
