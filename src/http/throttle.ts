import type { RateLimits, WindowLimit, WindowVerdict } from '../coordination/types.js';
import { EngineError } from '../errors.js';

/**
 * Login throttling and the per-student write limit, over the shared sliding windows of
 * `src/coordination` (Redis with several instances, in-process otherwise).
 *
 * Logins: only failed password checks are counted, in three windows of `loginWindowMs`:
 * - per account and client address (`loginFailuresPerUser`, 10): the strict limit on one guesser;
 * - per account from every address together (`loginFailuresPerUserAllAddresses`, 100): the bound on
 *   guessing one account's password from many addresses;
 * - per client address, whatever the account (`loginFailuresPerAddress`, 50).
 * Once a window a login falls in is full, that login is answered 429 LOGIN_THROTTLED with
 * `Retry-After` before any bcrypt work, and is not counted itself.
 *
 * Why per account *and address*: counting an account's failures from everywhere in one small
 * window let anyone keep a chosen student locked out (refusing even the right password) by sending
 * ten wrong passwords a minute, a registration-day denial of service. Now wrong passwords from one
 * address lock that account only at that address; the student logging in from elsewhere is let in.
 * Locking the account everywhere takes `loginFailuresPerUserAllAddresses` failures a window, which
 * needs at least that many divided by `loginFailuresPerUser` addresses (10 with the defaults).
 * A guesser still gets at most `loginFailuresPerUser` guesses per window per account from one
 * address and `loginFailuresPerUserAllAddresses` from all of them.
 *
 * A successful login is never counted and clears the failures of that account at that address; the
 * all-addresses count is left to expire (clearing it would let the student's own login renew a
 * distributed guesser's budget). The client address is `request.ip`: the TCP peer, or the address
 * a trusted proxy forwarded (`TRUST_PROXY`; see src/config.ts).
 *
 * Writes: with a limit configured, a student's write requests (enroll, change group, drop) are
 * counted in a window; one over it is answered 429 RATE_LIMITED with `Retry-After`, so a script
 * that hammers enroll cannot crowd out students who click.
 *
 * While Redis is down the windows answer "allowed" (see RateLimits): fail open, logged there.
 */
export interface ThrottlePolicy {
  /** Failed logins per account from one client address inside `loginWindowMs` before that account is throttled at that address. */
  loginFailuresPerUser: number;
  /**
   * Failed logins per account from every address together inside `loginWindowMs` before that
   * account is throttled everywhere: the bound on distributed guessing. Much higher than
   * `loginFailuresPerUser`, so one address cannot lock a student out.
   */
  loginFailuresPerUserAllAddresses: number;
  /** Failed logins per client address inside `loginWindowMs` before that address is throttled. */
  loginFailuresPerAddress: number;
  loginWindowMs: number;
  /**
   * Logouts per user kept as their own revocation (the token and its session) inside the longest
   * session's span; the next one ends every session of that user instead (one entry however often
   * it happens). Each kept logout is an entry in every instance's revocation list until its session
   * could end (12 h): without a bound, a script logging one account in and out all day (successful
   * logins are not throttled) grew that list on every instance by millions of entries.
   */
  logoutsKeptPerUser: number;
  /** Write requests per student inside `studentWriteWindowMs`; 0 turns the limit off. */
  studentWriteLimit: number;
  studentWriteWindowMs: number;
}

export const DEFAULT_THROTTLE_POLICY: ThrottlePolicy = {
  loginFailuresPerUser: 10,
  loginFailuresPerUserAllAddresses: 100,
  loginFailuresPerAddress: 50,
  loginWindowMs: 60_000,
  logoutsKeptPerUser: 20,
  studentWriteLimit: 0,
  studentWriteWindowMs: 10_000,
};

/** One admitted password check: settle it once (a later call is a no-op). */
export interface LoginAttempt {
  /** Counts one failed password check in each of the three windows. */
  failed(): Promise<void>;
  /** Clears the account's failures at this address (not its all-addresses count). */
  succeeded(): Promise<void>;
  /** Neither (the check never ran: the login queue refused it, the client left). */
  release(): void;
}

export interface Throttle {
  readonly policy: ThrottlePolicy;
  /**
   * Admits one password check for the account at this address, or throws 429 LOGIN_THROTTLED when
   * the account has failed too often lately from this address or from all addresses together, or
   * this address has failed too often for any accounts. Checks still running count as failures
   * until they are decided: without that, a burst of guesses sent at once all passed the check
   * before the first was counted (a probe got 45 guesses for one id through in one burst, the
   * right password among them, against a budget of 10).
   */
  beforeLogin(account: string, address: string): Promise<LoginAttempt>;
  /**
   * Whether a logout of `subject` (`student:<id>`) may be kept as its own revocation; false once the
   * user has logged out `logoutsKeptPerUser` times within `spanMs` (the caller then ends every
   * session of the user). Counted in the shared limits, so across instances; fails open with them.
   */
  keepLogout(subject: string, spanMs: number): Promise<boolean>;
  /** Throws 429 RATE_LIMITED when the student is over the write limit (no-op when the limit is off). */
  studentWrite(studentId: number): Promise<void>;
}

const seconds = (v: WindowVerdict) => Math.max(1, Math.ceil(v.retryAfterMs / 1000));

/** The throttle of one app, counting in `limits` (shared by every instance when they are Redis's). */
export function createThrottle(limits: RateLimits, policy: ThrottlePolicy = DEFAULT_THROTTLE_POLICY): Throttle {
  /** The account's failures at one address (its own key, so a success clears only those). */
  const pairKey = (account: string, address: string) => `login:user-addr:${account}:${address}`;
  const userKey = (account: string) => `login:user:${account}`;
  const loginLimits = (account: string, address: string): WindowLimit[] => [
    { key: pairKey(account, address), limit: policy.loginFailuresPerUser, windowMs: policy.loginWindowMs },
    { key: userKey(account), limit: policy.loginFailuresPerUserAllAddresses, windowMs: policy.loginWindowMs },
    { key: `login:addr:${address}`, limit: policy.loginFailuresPerAddress, windowMs: policy.loginWindowMs },
  ];
  /**
   * Password checks admitted and not yet decided, per window key, on this instance. They take room
   * in the account's windows (per address and from all addresses), not in the address's own: a
   * campus behind one NAT address logs a thousand students in at once, each with their own account.
   * Several instances each admit their own in-flight checks (at most instances x the budget).
   */
  const inFlight = new Map<string, number>();
  const bump = (keys: string[], by: number) => {
    for (const k of keys) {
      const n = (inFlight.get(k) ?? 0) + by;
      if (n <= 0) inFlight.delete(k);
      else inFlight.set(k, n);
    }
  };
  const throttled = (retryAfterSeconds: number) =>
    new EngineError('LOGIN_THROTTLED', 'too many failed logins for this account or from this address; try again later', undefined, { retryAfterSeconds });
  return {
    policy,
    async beforeLogin(account, address) {
      const windows = loginLimits(account, address);
      // The account's windows (at this address, from all addresses), not the address's own.
      const reserved = [pairKey(account, address), userKey(account)];
      const room = windows.map((w) => ({ ...w, limit: w.limit - (inFlight.get(w.key) ?? 0) }));
      // Checks in flight fill the account's budget: the next guess waits for them (they take tens of ms).
      if (room.some((w) => w.limit <= 0)) throw throttled(1);
      bump(reserved, 1);
      let v: WindowVerdict;
      try {
        v = await limits.check(room);
      } catch (err) {
        bump(reserved, -1);
        throw err;
      }
      if (!v.allowed) {
        bump(reserved, -1);
        throw throttled(seconds(v));
      }
      let settled = false;
      const settle = () => {
        if (settled) return false;
        settled = true;
        bump(reserved, -1);
        return true;
      };
      return {
        // Recorded before the reservation is given back, so the budget never shows room in between.
        failed: async () => {
          if (settled) return;
          try {
            await limits.record(windows);
          } finally {
            settle();
          }
        },
        succeeded: async () => {
          if (settle()) await limits.clear([pairKey(account, address)]);
        },
        release: () => void settle(),
      };
    },
    async keepLogout(subject, spanMs) {
      const v = await limits.take({ key: `logouts:${subject}`, limit: policy.logoutsKeptPerUser, windowMs: spanMs });
      return v.allowed;
    },
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
