/**
 * What several engine instances must agree on, behind one interface so the HTTP layer never knows
 * whether it is Redis (several instances, `REDIS_URL`) or an in-process store (one instance).
 */

/** One sliding-window limit: at most `limit` events per `windowMs` on `key`. */
export interface WindowLimit {
  key: string;
  limit: number;
  windowMs: number;
}

/** The answer to a limit check: when refused, how long until one more event fits. */
export interface WindowVerdict {
  allowed: boolean;
  /** Milliseconds until the window has room again (0 when allowed). */
  retryAfterMs: number;
}

/**
 * Sliding-window counters. Implementations never throw: while the shared store is unreachable
 * every call answers "allowed" (fail open) and the outage is logged, because refusing every login
 * or enroll during a Redis outage would turn a throttle into a registration-day outage, while the
 * per-student mailbox bound and the password-check cap still bound the damage of letting them in.
 */
export interface RateLimits {
  /** Whether every limit still has room, counting nothing. */
  check(limits: readonly WindowLimit[]): Promise<WindowVerdict>;
  /** Counts one event on every key (the caller checked before, e.g. a failed login). */
  record(limits: readonly WindowLimit[]): Promise<void>;
  /** Counts one event if the limit has room (atomically); refused events are not counted. */
  take(limit: WindowLimit): Promise<WindowVerdict>;
  /** Forgets the keys' events (e.g. an id's failed logins after a successful one). */
  clear(keys: readonly string[]): Promise<void>;
}

/** What a revocation check needs to know of a token. */
export interface RevocationSubject {
  /** This token's id. */
  jti: string;
  /** The session (login and its refreshes). */
  sid: string;
  /** Who it speaks for, e.g. `student:40000001`. */
  subject: string;
  /** Unix milliseconds of the session's login. */
  authTimeMs: number;
}

/** One revocation as stored and published: `j:<jti>`, `s:<sid>` or `u:<subject>` (with the login cut-off `at`). */
export interface RevocationEntry {
  key: string;
  /** Unix seconds after which the entry is forgotten. */
  until: number;
  /** For `u:` entries: sessions that logged in at or before this unix ms are revoked. */
  at?: number;
}

/**
 * Where the shared store (Redis) keeps a revocation it could not write to Redis, so that an
 * acknowledged logout survives a restart of the instance before Redis is back: PostgreSQL in full
 * mode (src/persistence/revocation-backup.ts), the data directory's journal in embedded mode. No
 * driver types: main wires the implementation in.
 */
export interface RevocationBackup {
  /** What it is, for logs and refusals (e.g. `the database`). */
  readonly name: string;
  /** Resolves once the entries are durable (a later `until` or `at` of the same key wins); rejects otherwise. */
  save(entries: readonly RevocationEntry[]): Promise<void>;
  /** The entries saved so far (by any instance sharing it) that are still live at `nowMs`; expired ones may be forgotten. */
  load(nowMs: number): Promise<RevocationEntry[]>;
}

/**
 * Tokens withdrawn before their expiry. Consulted on every request, before the verified-token
 * cache may answer, so it is synchronous: a shared implementation keeps a local mirror that a
 * subscription keeps current (a revocation reaches every instance within milliseconds).
 */
export interface TokenRevocations {
  isRevoked(token: RevocationSubject): boolean;
  /**
   * Revokes one token (`jti`), one session (`sid`), or every session of `subject` that logged in
   * at or before `at` (unix ms, default now), until `until` (unix seconds: the latest expiry of
   * what is revoked); after that the entry is forgotten. The revocation holds on this instance at
   * once (`isRevoked` sees it before this returns); the promise settles when it is as durable as
   * the store makes it (on disk for one instance with a data directory; in Redis, or else in the
   * {@link RevocationBackup}, for the shared store), so the caller answers only then. It rejects
   * with an EngineError when it could not be recorded (it still holds on this instance).
   */
  revoke(entry: { jti?: string; sid?: string; subject?: string; at?: number; until: number }): Promise<void>;
}

/** The coordination store: rate limits and revocations, with a lifecycle. */
export interface Coordination {
  /** `memory` (one instance) or `redis` (shared). */
  readonly kind: 'memory' | 'redis';
  readonly limits: RateLimits;
  readonly revocations: TokenRevocations;
  /** Whether the shared store answers now (always true in memory); for `/ready` details and metrics. */
  readonly connected: boolean;
  /**
   * Connects and loads the revocations already recorded. An absent Redis never fails it (degraded,
   * logged); a data directory whose revocation journal cannot be read or written does, and so does
   * a revocation backup that cannot be read (before anything is started: it may be called again).
   */
  start(): Promise<void>;
  close(): Promise<void>;
}
