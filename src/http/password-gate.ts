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
   * `from`: the client's address. Waiting logins queue per address, in arrival order, and the
   * addresses take turns for the slots, so 2,000 logins sent at once from one address delay that
   * address's own logins, not a student's from elsewhere (a probe's flood held everyone else's
   * logins 5 s and got the first refused LOGIN_BUSY); one address may hold at most
   * {@link MAX_WAITING_PER_ADDRESS} of the waiting places.
   */
  run<T>(check: () => Promise<T>, abandoned?: () => boolean, from?: string): Promise<T>;
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
/**
 * Logins one address may have waiting: half of all, so one address cannot take every place, yet a
 * campus behind one NAT address (or a benchmark on loopback) still gets 2,500 queued at once.
 */
export const MAX_WAITING_PER_ADDRESS = MAX_WAITING / 2;

function busy(retryAfterSeconds: number, why: string): EngineError {
  return new EngineError('LOGIN_BUSY', `too many logins at once (${why}); try again in a moment`, undefined, { retryAfterSeconds });
}

export function createPasswordGate(opts: PasswordGateOptions): PasswordGate {
  const { max, maxWaitMs } = opts;
  if (!Number.isInteger(max) || max < 1) throw new Error('the password-check cap must be a whole number of 1 or more');
  if (!Number.isInteger(maxWaitMs) || maxWaitMs < 0) throw new Error('the login queue wait must be a whole number of milliseconds, 0 or more');
  let active = 0;
  /** Waiting logins per address, each in arrival order; the addresses with waiters take turns. */
  const queues = new Map<string, { waiters: Waiter[]; live: number }>();
  /** Addresses with a queue, in turn order (the next slot goes to the first). */
  let turns: string[] = [];
  /** Waiters in the queues not yet refused at their deadline. */
  let waiting = 0;

  function next(): void {
    while (active < max && turns.length > 0) {
      const from = turns.shift() as string;
      const q = queues.get(from);
      if (!q) continue;
      let w: Waiter | undefined;
      while ((w = q.waiters.shift()) !== undefined && w.expired);
      if (q.waiters.length > 0) turns.push(from);
      else queues.delete(from);
      if (w === undefined || w.expired) continue;
      waiting -= 1;
      q.live -= 1;
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
    run(check, abandoned, from = '') {
      if (active < max && waiting === 0) return runNow(check);
      if (maxWaitMs === 0) return Promise.reject(busy(1, 'every password-check slot is taken'));
      const retry = Math.max(1, Math.ceil(maxWaitMs / 1000));
      if (waiting >= MAX_WAITING) return Promise.reject(busy(retry, `${MAX_WAITING} logins are waiting already`));
      let q = queues.get(from);
      if ((q?.live ?? 0) >= MAX_WAITING_PER_ADDRESS) {
        return Promise.reject(busy(retry, `${MAX_WAITING_PER_ADDRESS} logins from this address are waiting already`));
      }
      if (!q) {
        queues.set(from, (q = { waiters: [], live: 0 }));
        turns.push(from);
      }
      const queue = q;
      return new Promise((resolve, reject) => {
        const w: Waiter = {
          start: () => runNow(check).then(resolve, reject),
          refuse: reject,
          abandoned,
          expired: false,
          timer: setTimeout(() => {
            w.expired = true;
            waiting -= 1;
            queue.live -= 1;
            if (queue.waiters.length > 2 * queue.live + 64) queue.waiters = queue.waiters.filter((x) => !x.expired);
            if (queue.waiters.length === 0 && queues.get(from) === queue) {
              queues.delete(from);
              turns = turns.filter((t) => t !== from);
            }
            reject(busy(1, `no password-check slot came free within ${maxWaitMs} ms`));
          }, maxWaitMs),
        };
        queue.waiters.push(w);
        queue.live += 1;
        waiting += 1;
      });
    },
  };
}
