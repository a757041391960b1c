import type { Logger } from 'pino';
import { UnreadableMessageError } from './amqp-log.js';
import { storageSettingHint } from './setting-hints.js';

/** Pause before start attempt `attempt + 1` (ms): 0.5 s, 1 s, 2 s, 4 s, then every 5 s. */
export function startRetryDelayMs(attempt: number): number {
  return Math.min(250 * 2 ** attempt, 5000);
}

/**
 * Runs `step` (opening storage at start: migrations, the first load) until it succeeds, logging each
 * failure and waiting {@link startRetryDelayMs} between tries. Storage may still be starting (a
 * compose stack, a database restart), and a process that exits then stays down under a plain
 * process manager: the standalone batcher died of a raw stack trace when PostgreSQL was away at its
 * start (probe M, finding 5), while the server waited. A failure that names a setting (a wrong
 * password, a missing database, a host name that does not resolve) says so in the line and its
 * `hint`, since it will not heal by waiting; it is retried all the same (the setting may be fixed
 * on the other side).
 */
export async function retryStorageAtStart(log: Logger, step: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await step();
      return;
    } catch (err) {
      const waitMs = startRetryDelayMs(attempt);
      // Not an outage: the log holds a message no reader can apply, and waiting will not heal it
      // (probe T: the start said "storage unavailable" and never named the message or the way on).
      if (err instanceof UnreadableMessageError) {
        log.error(
          { err, attempt, waitMs, stream: err.stream, offset: err.offset },
          `cannot load: unreadable message at ${err.stream} offset ${err.offset}; an operator moves past it with npm run batcher -- --skip ${err.offset} (its change is lost; docs/operations.md), and this start then goes on by itself (retrying)`,
        );
        await new Promise((r) => setTimeout(r, waitMs));
        continue;
      }
      const hint = storageSettingHint(err);
      log.warn({ err, attempt, waitMs, ...(hint ? { hint } : {}) }, hint ? `storage refused at start: ${hint}; check the setting (retrying)` : 'storage unavailable at start; retrying');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
}
