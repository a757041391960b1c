import { EngineError } from '../errors.js';

/**
 * A cap on password checks (bcrypt) running at once, with a bounded queue in front of it. Each
 * check holds one of libuv's four pool threads for tens of milliseconds; without a cap a login
 * flood queues thousands of them on the pool and starves everything else there, so students
 * already logged in wait behind strangers. Logins over the cap wait here instead, in arrival
 * order, for at most `maxWaitMs`: on registration day the whole year logs in within the same
 * minute, and a student answered in two seconds is better served than one told 503 to come back
 * (with the first default, no queue and a cap of 3, the Go service's own benchmark client had 862
 * of its 1,000 simultaneous logins refused). A login still waiting at its deadline is refused
 * then with 503 LOGIN_BUSY and `Retry-After`, and so is one arriving while {@link MAX_WAITING}
 * wait already (each holds a connection and a request).
 *
 * The wait is not predicted from recent check times: under a connection storm those are mostly
 * event-loop delay, which ends with the storm, and refusing on them turned away 187 of the
 * benchmark's 1,000 logins that the queue then served within about a second.
 */
export interface PasswordGate {
  /**
   * Runs `check` when a slot is free (at once, or after the logins queued before it), or throws
   * LOGIN_BUSY without running it (no slot within the wait, or the queue is full). `abandoned`:
   * asked when its turn comes; true (the client has gone) gives the slot to the next login instead.
   */
  run<T>(check: () => Promise<T>, abandoned?: () => boolean): Promise<T>;
  /** Checks running now (a gauge for metrics and tests). */
  readonly active: number;
  /** Logins waiting for a slot. */
  readonly waiting: number;
  readonly max: number;
}

export interface PasswordGateOptions {
  /** Checks at once. */
  max: number;
  /** Longest a login waits for a slot (ms); 0: never queued, refused at once when the slots are taken. */
  maxWaitMs: number;
}

interface Waiter {
  start: () => void;
  refuse: (err: EngineError) => void;
  abandoned: (() => boolean) | undefined;
  timer: NodeJS.Timeout;
  /** Refused at its deadline; left in the queue and skipped (removing each would cost a search). */
  expired: boolean;
}

/** Logins waiting at most; more are refused at once (each holds a socket and its request, a few kB). */
export const MAX_WAITING = 5_000;

function busy(retryAfterSeconds: number, why: string): EngineError {
  return new EngineError('LOGIN_BUSY', `too many logins at once (${why}); try again in a moment`, undefined, { retryAfterSeconds });
}

export function createPasswordGate(opts: PasswordGateOptions): PasswordGate {
  const { max, maxWaitMs } = opts;
  if (!Number.isInteger(max) || max < 1) throw new Error('the password-check cap must be a whole number of 1 or more');
  if (!Number.isInteger(maxWaitMs) || maxWaitMs < 0) throw new Error('the login queue wait must be a whole number of milliseconds, 0 or more');
  let active = 0;
  let queue: Waiter[] = [];
  /** Waiters in the queue not yet refused at their deadline. */
  let waiting = 0;

  function next(): void {
    while (active < max && queue.length > 0) {
      const w = queue.shift() as Waiter;
      if (w.expired) continue;
      waiting -= 1;
      clearTimeout(w.timer);
      if (w.abandoned?.()) {
        w.refuse(busy(1, 'the client left before its turn'));
        continue;
      }
      w.start();
    }
  }

  async function runNow<T>(check: () => Promise<T>): Promise<T> {
    active += 1;
    try {
      return await check();
    } finally {
      active -= 1;
      next();
    }
  }

  return {
    get active() {
      return active;
    },
    get waiting() {
      return waiting;
    },
    max,
    run(check, abandoned) {
      if (active < max && waiting === 0) return runNow(check);
      if (maxWaitMs === 0) return Promise.reject(busy(1, 'every password-check slot is taken'));
      if (waiting >= MAX_WAITING) return Promise.reject(busy(Math.max(1, Math.ceil(maxWaitMs / 1000)), `${MAX_WAITING} logins are waiting already`));
      return new Promise((resolve, reject) => {
        const w: Waiter = {
          start: () => runNow(check).then(resolve, reject),
          refuse: reject,
          abandoned,
          expired: false,
          timer: setTimeout(() => {
            w.expired = true;
            waiting -= 1;
            // While no slot frees (checks stuck), refused waiters would pile up here: drop them
            // once they outnumber the live ones, so the queue stays within twice MAX_WAITING.
            if (queue.length > 2 * waiting + 64) queue = queue.filter((x) => !x.expired);
            reject(busy(1, `no password-check slot came free within ${maxWaitMs} ms`));
          }, maxWaitMs),
        };
        queue.push(w);
        waiting += 1;
      });
    },
  };
}
