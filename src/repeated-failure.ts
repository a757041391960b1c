import type { Logger } from 'pino';

/**
 * How often at most a failure that keeps repeating is logged again (ms). Loops that retry a store
 * every few hundred milliseconds (lease rounds, the webhook feed, the due-deliveries poll) logged a
 * warning on every attempt while the database was away: a probe counted 8 lines a second, 136 in 22
 * s, burying everything else. One line when it starts, one per this period while it lasts (with how
 * many failures it stands for) and one when it ends say the same.
 */
export const REPEATED_FAILURE_LOG_MS = 15_000;

/** What a loop with retries tells its {@link RepeatedFailureLog} after each attempt. */
export interface RepeatedFailureLog {
  /** An attempt failed: the first of a run is logged at warn at once, later ones at most every `everyMs`. */
  failed(err: unknown, fields?: Record<string, unknown>): void;
  /** An attempt succeeded: ends a run of failures with one info line (nothing if none was failing). */
  succeeded(fields?: Record<string, unknown>): void;
  /** Whether the last attempt failed. */
  readonly failing: boolean;
}

/**
 * Logs a failure that a loop meets again on every retry as a few lines, not one per attempt: the
 * first failure at `warn` (`message`, with `err`), then while it keeps failing at most one `warn`
 * per `everyMs` (`message` with "(still failing)", `failures`: the failures since the previous line,
 * `failingForMs`), and one `info` line (`recovered`, with the run's `failures` and `failingForMs`)
 * at the first success after it.
 */
export function createRepeatedFailureLog(
  log: Logger,
  opts: { message: string; recovered: string; everyMs?: number; now?: () => number },
): RepeatedFailureLog {
  const everyMs = opts.everyMs ?? REPEATED_FAILURE_LOG_MS;
  const now = opts.now ?? (() => performance.now());
  let since: number | null = null;
  let lastLineAt = 0;
  let sinceLastLine = 0;
  let total = 0;
  return {
    get failing() {
      return since !== null;
    },
    failed(err, fields) {
      const t = now();
      total += 1;
      if (since === null) {
        since = t;
        lastLineAt = t;
        sinceLastLine = 0;
        log.warn({ ...fields, err }, opts.message);
        return;
      }
      sinceLastLine += 1;
      if (t - lastLineAt < everyMs) return;
      log.warn({ ...fields, err, failures: sinceLastLine, failingForMs: Math.round(t - since) }, `${opts.message} (still failing)`);
      lastLineAt = t;
      sinceLastLine = 0;
    },
    succeeded(fields) {
      if (since === null) return;
      log.info({ ...fields, failures: total, failingForMs: Math.round(now() - since) }, opts.recovered);
      since = null;
      total = 0;
      sinceLastLine = 0;
    },
  };
}
