import { EngineError } from '../errors.js';

/**
 * A cap on password checks (bcrypt) running at once. Each check holds one of libuv's four pool
 * threads for tens of milliseconds; without a cap a login flood queues thousands of them and
 * starves everything else on the pool, so students already logged in wait behind strangers.
 * Over the cap a login is refused at once with 503 LOGIN_BUSY and `Retry-After`, never queued.
 */
export interface PasswordGate {
  /** Runs `check` if a slot is free, else throws LOGIN_BUSY without running it. */
  run<T>(check: () => Promise<T>): Promise<T>;
  /** Checks running now (a gauge for metrics and tests). */
  readonly active: number;
  readonly max: number;
}

/** Seconds a refused login is told to wait: about one bcrypt check per slot, rounded up to a second. */
const RETRY_AFTER_SECONDS = 1;

export function createPasswordGate(max: number): PasswordGate {
  if (!Number.isInteger(max) || max < 1) throw new Error('the password-check cap must be a whole number of 1 or more');
  let active = 0;
  return {
    get active() {
      return active;
    },
    max,
    async run(check) {
      if (active >= max) {
        throw new EngineError('LOGIN_BUSY', 'too many logins at once; try again in a moment', undefined, {
          retryAfterSeconds: RETRY_AFTER_SECONDS,
        });
      }
      active += 1;
      try {
        return await check();
      } finally {
        active -= 1;
      }
    },
  };
}
