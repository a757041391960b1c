/** What a bounded check gave one caller: its value, its failure, or no answer in time. */
export type CheckOutcome<T> = { kind: 'ok'; value: T } | { kind: 'failed'; err: unknown } | { kind: 'late'; ms: number };

/**
 * A readiness check (a database round trip) that answers each caller within `ms` and runs at most
 * once at a time. `/ready` is probed every second or so by orchestrators with a 1 s timeout; a
 * database whose path drops packets (no reset) left the probe waiting for the statement bound (30 s
 * by default) or a pool connection, so the probe itself timed out and each one queued one more
 * query behind the stuck ones (probe M, finding 4). Now a caller that gets no answer within `ms`
 * is told so (`late`: the check counts as failing), and a caller arriving while a check is still
 * out waits on that same check instead of starting another. `run` must settle by itself at some
 * point (its own statement and connection bounds): until it does, no new check is started.
 */
export function sharedBoundedCheck<T>(run: () => Promise<T>, ms: number): () => Promise<CheckOutcome<T>> {
  let inFlight: Promise<CheckOutcome<T>> | null = null;
  return async () => {
    if (inFlight === null) {
      const current: Promise<CheckOutcome<T>> = run().then(
        (value) => ({ kind: 'ok', value }),
        (err: unknown) => ({ kind: 'failed', err }),
      );
      inFlight = current;
      void current.finally(() => {
        if (inFlight === current) inFlight = null;
      });
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<CheckOutcome<T>>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'late', ms }), ms);
    });
    try {
      return await Promise.race([inFlight, late]);
    } finally {
      clearTimeout(timer);
    }
  };
}
