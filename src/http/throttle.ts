import type { RateLimits, WindowLimit, WindowVerdict } from '../coordination/types.js';
import { EngineError } from '../errors.js';

/**
 * Login throttling and the per-student write limit, over the shared sliding windows of
 * `src/coordination` (Redis with several instances, in-process otherwise).
 *
 * Logins: only failed password checks are counted, per account (`role:id`) and per client
 * address. Once either has `limit` failures inside the window, further logins for that account or
 * from that address are answered 429 LOGIN_THROTTLED with `Retry-After` before any bcrypt work,
 * and are not counted themselves. So a burst of wrong passwords for one id locks that id for at
 * most one window (the oldest failure leaves it, then one more attempt fits), and a guesser gets
 * at most `limit` guesses per window per id. A successful login clears the account's failures and
 * is never counted, so students who type their password right are unaffected until someone fails
 * `limit` times for their id.
 *
 * Writes: with a limit configured, a student's write requests (enroll, change group, drop) are
 * counted in a window; one over it is answered 429 RATE_LIMITED with `Retry-After`, so a script
 * that hammers enroll cannot crowd out students who click.
 *
 * While Redis is down the windows answer "allowed" (see RateLimits): fail open, logged there.
 */
export interface ThrottlePolicy {
  /** Failed logins per account inside `loginWindowMs` before that account is throttled. */
  loginFailuresPerUser: number;
  /** Failed logins per client address inside `loginWindowMs` before that address is throttled. */
  loginFailuresPerAddress: number;
  loginWindowMs: number;
  /** Write requests per student inside `studentWriteWindowMs`; 0 turns the limit off. */
  studentWriteLimit: number;
  studentWriteWindowMs: number;
}

export const DEFAULT_THROTTLE_POLICY: ThrottlePolicy = {
  loginFailuresPerUser: 10,
  loginFailuresPerAddress: 50,
  loginWindowMs: 60_000,
  studentWriteLimit: 0,
  studentWriteWindowMs: 10_000,
};

export interface Throttle {
  readonly policy: ThrottlePolicy;
  /** Throws 429 LOGIN_THROTTLED when the account or the address has failed too often lately. */
  beforeLogin(account: string, address: string): Promise<void>;
  loginFailed(account: string, address: string): Promise<void>;
  loginSucceeded(account: string): Promise<void>;
  /** Throws 429 RATE_LIMITED when the student is over the write limit (no-op when the limit is off). */
  studentWrite(studentId: number): Promise<void>;
}

const seconds = (v: WindowVerdict) => Math.max(1, Math.ceil(v.retryAfterMs / 1000));

export function createThrottle(limits: RateLimits, policy: ThrottlePolicy = DEFAULT_THROTTLE_POLICY): Throttle {
  const loginLimits = (account: string, address: string): WindowLimit[] => [
    { key: `login:user:${account}`, limit: policy.loginFailuresPerUser, windowMs: policy.loginWindowMs },
    { key: `login:addr:${address}`, limit: policy.loginFailuresPerAddress, windowMs: policy.loginWindowMs },
  ];
  return {
    policy,
    async beforeLogin(account, address) {
      const v = await limits.check(loginLimits(account, address));
      if (!v.allowed) {
        throw new EngineError('LOGIN_THROTTLED', 'too many failed logins for this account or from this address; try again later', undefined, {
          retryAfterSeconds: seconds(v),
        });
      }
    },
    loginFailed: (account, address) => limits.record(loginLimits(account, address)),
    loginSucceeded: (account) => limits.clear([`login:user:${account}`]),
    async studentWrite(studentId) {
      if (policy.studentWriteLimit <= 0) return;
      const v = await limits.take({ key: `writes:student:${studentId}`, limit: policy.studentWriteLimit, windowMs: policy.studentWriteWindowMs });
      if (!v.allowed) {
        throw new EngineError('RATE_LIMITED', `too many changes in a short time (at most ${policy.studentWriteLimit} per ${policy.studentWriteWindowMs / 1000} s); try again in a moment`, undefined, {
          retryAfterSeconds: seconds(v),
        });
      }
    },
  };
}
