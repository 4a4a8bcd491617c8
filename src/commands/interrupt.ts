/**
 * Runs `work` with a signal that Ctrl-C (SIGINT) or SIGTERM aborts, with `stopped` as the reason
 * when given; the handlers are removed once it ends, so a later step gets the default again.
 */
export async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>, stopped?: string): Promise<T> {
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(stopped === undefined ? undefined : new Error(stopped));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await work(abort.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
