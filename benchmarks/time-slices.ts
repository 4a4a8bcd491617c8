/**
 * Steps that share one time budget (a lent GPU machine's command limit), each inside its own slice
 * of it, so that one slow or hung step cannot take the time of the steps after it and every step
 * leaves a record: its figures, marked partial where it stopped early, or why it was skipped, cut
 * or failed.
 */

/** The part of the budget one step may spend. */
export interface Slice {
  /** Aborts when the slice ends: a step stops its work there and reports what it did. */
  readonly signal: AbortSignal;
  readonly endMs: number;
  /** Seconds until the slice ends, negative after. */
  leftS(): number;
  /** A signal that aborts at `ms` (epoch ms) or when the slice ends, whichever comes first: a part of the step. */
  until(ms: number): AbortSignal;
}

export type Figures = Record<string, unknown>;

/** Records a step's figures so far (written at once), so a step stopped later still leaves them. */
export type Publish = (figures: Figures) => Promise<void>;

/** A step returns figures with `partial` (saying why) when it stopped short of its whole work. */
export type StepWork = (slice: Slice, publish: Publish) => Promise<Figures>;

export interface StepOutcome {
  status: 'done' | 'partial' | 'cut' | 'failed' | 'skipped';
  sliceSeconds?: number;
  seconds?: number;
  reason?: string;
}

/**
 * Seconds after its slice that a step may take to stop (close its encoders, delete its files)
 * before it is left running and the next step starts.
 */
const GRACE_S = 5;

/**
 * A step's slice: an equal share of the time left among the steps left, its minimum if that is
 * more, and never more than is left; undefined when less than its minimum is left. Time a step
 * does not use goes to the steps after it.
 */
export function sliceSeconds(leftS: number, stepsLeft: number, minimumS: number): number | undefined {
  if (leftS < minimumS) return undefined;
  return Math.min(leftS, Math.max(minimumS, leftS / stepsLeft));
}

export class TimeSlices {
  private readonly outcomes: Record<string, StepOutcome> = {};

  /**
   * `steps`: each step's name and the least seconds it needs, in the order they run; `record`
   * puts a step's figures (or the outcomes of all, under `steps`) in the report and writes it.
   */
  constructor(
    private readonly deadlineMs: number,
    private readonly steps: readonly { name: string; minimumS: number }[],
    private readonly record: (name: string, value: unknown) => Promise<void>,
    private readonly graceS = GRACE_S,
  ) {}

  /**
   * Runs step `name` inside its slice and records how it ended. A step still running `graceS` after
   * its slice is recorded as cut and left running (its later figures are ignored).
   */
  async run(name: string, work: StepWork): Promise<StepOutcome> {
    const index = this.steps.findIndex((step) => step.name === name);
    if (index < 0) throw new Error(`no step ${name} was planned`);
    const { minimumS } = this.steps[index]!;
    const startMs = Date.now();
    const leftS = (this.deadlineMs - startMs) / 1e3;
    const sliceS = sliceSeconds(leftS, this.steps.length - index, minimumS);
    if (sliceS === undefined) {
      const reason = `${leftS.toFixed(0)} s of the budget left, the step needs at least ${minimumS} s`;
      return this.end(name, { skipped: reason }, { status: 'skipped', reason });
    }

    const controller = new AbortController();
    const endMs = startMs + sliceS * 1e3;
    const until = (ms: number): AbortSignal => {
      const part = new AbortController();
      const timer = setTimeout(() => part.abort(new Error('its share of the slice ended')), Math.max(0, ms - Date.now()));
      const stop = (): void => {
        clearTimeout(timer);
        part.abort(controller.signal.reason);
      };
      if (controller.signal.aborted) stop();
      else controller.signal.addEventListener('abort', stop, { once: true });
      return part.signal;
    };
    const slice: Slice = { signal: controller.signal, endMs, leftS: () => (endMs - Date.now()) / 1e3, until };
    const sliceTimer = setTimeout(() => controller.abort(new Error(`the step's ${sliceS.toFixed(0)} s slice ended`)), sliceS * 1e3);
    let guardTimer: NodeJS.Timeout | undefined;
    const guard = new Promise<'guard'>((resolve) => {
      guardTimer = setTimeout(() => resolve('guard'), (sliceS + this.graceS) * 1e3);
    });
    let figures: Figures = {};
    let open = true;
    const publish: Publish = async (value) => {
      if (!open) return;
      figures = value;
      await this.record(name, value);
    };
    const ended = work(slice, publish).then(
      (value) => ({ value }),
      (error: unknown) => ({ error: error instanceof Error ? error : new Error(String(error)) }),
    );
    const outcome = await Promise.race([ended, guard]);
    const sliceEnded = controller.signal.aborted;
    clearTimeout(sliceTimer);
    clearTimeout(guardTimer);
    // Work left running (a cut step) stops at its next check, and writes no more.
    controller.abort(new Error('the step has ended'));
    open = false;

    const timing = { sliceSeconds: sliceS, seconds: (Date.now() - startMs) / 1e3 };
    if (outcome === 'guard') {
      const reason = `still running ${this.graceS} s after its ${sliceS.toFixed(0)} s slice; left running`;
      return this.end(name, { ...figures, cut: reason }, { status: 'cut', ...timing, reason });
    }
    if ('error' in outcome) {
      // Stopped by the slice's end (a wait it could not shorten): cut, with what it had recorded.
      const status = sliceEnded ? 'cut' : 'failed';
      return this.end(name, { ...figures, [status]: outcome.error.message }, { status, ...timing, reason: outcome.error.message });
    }
    const partial = outcome.value.partial;
    return this.end(name, outcome.value, typeof partial === 'string' ? { status: 'partial', ...timing, reason: partial } : { status: 'done', ...timing });
  }

  /** Records the step's last figures and how it ended, and prints both. */
  private async end(name: string, figures: Figures, outcome: StepOutcome): Promise<StepOutcome> {
    this.outcomes[name] = outcome;
    await this.record(name, figures);
    await this.record('steps', this.outcomes);
    console.log(name, JSON.stringify(outcome), JSON.stringify(figures));
    return outcome;
  }
}
