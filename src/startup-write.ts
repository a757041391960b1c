import type { Logger } from 'pino';
import { isEngineError } from './errors.js';
import type { ClusterMembership } from './persistence/types.js';

/**
 * The writes a start makes itself (the demo data, the BOOTSTRAP_STAFF_ID staff member) come right
 * after the first load, while this instance's own lease may still be settling: a reload after a
 * change of ownership, a lease round that could not run on time. Such a write first waits until
 * this instance decides writes for the shards it touches (lease held, state loaded under it), and a
 * refusal that says "not now" (NOT_OWNER, UNAVAILABLE: nothing was changed, or the outcome is read
 * back by the reload before the next try) is tried again, for a bounded time. Anything else, or the
 * bound reached, fails the start with an error that says what could not be written and why.
 * Fencing is the store's, unchanged: nothing here lets a write through without the lease.
 *
 * Several instances started at once on a new database each see it empty and each try the write;
 * one gets the leases and writes it, and the others learn it through the log they follow. `done`
 * tells them: the wait (and any retry) ends with null, the write not made, instead of waiting for
 * leases another instance holds and failing the start after the bound.
 */

export class StartupWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupWriteError';
  }
}

export interface StartupWriteOptions {
  /** Full mode's shard leases; null (embedded mode): this instance decides every write. */
  cluster: Pick<ClusterMembership, 'shards' | 'decides'> | null;
  log: Logger;
  /** Shards the write needs (default: every shard). */
  shards?: number[];
  /** How long the write may wait and be retried in all (ms; default 30 s). */
  timeoutMs?: number;
  /** True once what the write would make is there (another instance wrote it): no write, null. */
  done?: () => boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function startupWrite<T>(what: string, write: () => Promise<T>, o: StartupWriteOptions): Promise<T | null> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  const until = performance.now() + timeoutMs;
  const cluster = o.cluster;
  const wanted = o.shards ?? (cluster ? [...Array(cluster.shards).keys()] : []);
  const undecided = () => (cluster ? wanted.filter((s) => !cluster.decides(s)) : []);
  const doneElsewhere = () => {
    if (o.done?.() !== true) return false;
    o.log.info(`${what}: written by another instance meanwhile; not written again`);
    return true;
  };
  let last: unknown = null;
  for (let attempt = 1; ; attempt++) {
    let missing = undecided();
    if (missing.length > 0) {
      o.log.info({ shards: missing }, `${what}: waiting until this instance decides writes for its shards (lease held, state loaded under it)`);
      while (missing.length > 0 && performance.now() < until) {
        if (doneElsewhere()) return null;
        await sleep(25);
        missing = undecided();
      }
      if (doneElsewhere()) return null;
      if (missing.length > 0) {
        throw new StartupWriteError(
          `${what} could not be written: this instance did not get to decide writes for shard(s) ${missing.join(', ')} within ${Math.round(timeoutMs / 1000)} s ` +
            '(another instance holds the lease, or this instance could not load its state under it)' +
            (last !== null ? `; last refusal: ${(last as Error).message}` : ''),
          last !== null ? { cause: last } : undefined,
        );
      }
    }
    try {
      return await write();
    } catch (err) {
      const retryable = isEngineError(err) && (err.code === 'NOT_OWNER' || err.code === 'UNAVAILABLE');
      if (!retryable) throw err;
      last = err;
      if (performance.now() >= until) {
        throw new StartupWriteError(`${what} could not be written within ${Math.round(timeoutMs / 1000)} s: ${err.message}`, { cause: err });
      }
      const waitMs = Math.min(100 * 2 ** (attempt - 1), 1000);
      o.log.warn({ err, attempt, waitMs }, `${what}: refused while this instance's lease or state was settling; trying again`);
      await sleep(waitMs);
      if (doneElsewhere()) return null;
    }
  }
}
