import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { EngineError } from '../errors.js';
import type { Logger } from '../logger.js';
import { RevocationMirror, mergeRevocation, revocationEntries, type RevocationEntry } from './revocation-mirror.js';
import type { Coordination, RevocationBackup, WindowLimit, WindowVerdict } from './types.js';

/**
 * The shared coordination store (`REDIS_URL`): every instance counts in the same windows and sees
 * the same revocations. Keys live under `prefix` and each has a TTL (a window's length, or the
 * latest expiry of a revoked token), so nothing stays behind.
 *
 * Rate limits are one Lua script per call (a sorted set of event times per key), so checking and
 * counting is atomic across instances. Revocations are written to one hash and published on a
 * channel; every instance applies what it receives to a local {@link RevocationMirror}, so the
 * per-request check never waits for Redis and a revocation reaches the other instances in
 * milliseconds. The mirror is reloaded whenever the subscription (re)connects, and every
 * `resyncMs`, so a message missed during a disconnection is not missed for long.
 *
 * While Redis is down (each behaviour logged once per outage, and again when Redis is back):
 * - rate limits fail open (answer "allowed"): the password-check cap and the per-student mailbox
 *   bound still apply, and refusing everyone would stop registration;
 * - revocation checks use the mirror: what was revoked before the outage stays revoked; a logout
 *   during the outage takes effect here at once, is saved to the {@link RevocationBackup} (the
 *   database in full mode) before it is answered, and is written and published when Redis is back.
 *   Every instance loads the backup at start (into its mirror, and to write to Redis), so a restart
 *   before Redis is back does not bring a revoked token back; while Redis is away the periodic
 *   resync reads the backup instead, so the other instances learn of it too. Redis and the backup
 *   both failing: the revocation holds here, and `revoke` rejects with `UNAVAILABLE`.
 *
 * "Down" includes a Redis that keeps the connection open but stops answering (a hung process, a
 * stalled link): ioredis sees nothing wrong with the connection, so without more the store counted
 * as connected for the whole outage and every call paid the full command timeout, a login twice.
 * So once a command times out the store marks Redis unresponsive: `connected` reads false, and
 * until Redis answers again no command is sent (limits fail open at once, revocations wait in
 * `unsent`); a background PING every `probeMs` on the same connection marks it back (TCP keeps the
 * order, so the PING's answer also means everything sent before it was answered). A connection
 * that has not answered for `recycleAfterMs` is dropped and made again: replies are matched to
 * commands by order, so one whose bytes a middlebox lost never answers a PING again (probe J: it
 * stayed degraded until the connection was broken by hand).
 */

const CHECK_LUA = `
local now = tonumber(ARGV[1])
local blocked, worst = 0, 0
for i, key in ipairs(KEYS) do
  local win, limit = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
  local n = redis.call('ZCARD', key)
  if n >= limit then
    blocked = 1
    local t = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    local wait = tonumber(t[2]) + win - now
    if wait < 1 then wait = 1 end
    if wait > worst then worst = wait end
  end
end
return {blocked, worst}`;

const TAKE_LUA = `
local key, now, win, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
local n = redis.call('ZCARD', key)
if n >= limit then
  local t = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  local wait = tonumber(t[2]) + win - now
  if wait < 1 then wait = 1 end
  return {1, wait}
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, win)
return {0, 0}`;

const RECORD_LUA = `
local now, member = tonumber(ARGV[1]), ARGV[2]
for i, key in ipairs(KEYS) do
  local win, limit = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 2))
  redis.call('PEXPIRE', key, win)
end
return 0`;

/** Records one revocation (field of the hash) and keeps the hash until the latest entry expires. */
const REVOKE_LUA = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PEXPIRE', KEYS[1], ARGV[3], 'GT') == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3], 'NX') end
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 0`;

type Reply = [number, number];
interface Scripts {
  rlCheck(numKeys: number, ...args: (string | number)[]): Promise<Reply>;
  rlTake(numKeys: number, ...args: (string | number)[]): Promise<Reply>;
  rlRecord(numKeys: number, ...args: (string | number)[]): Promise<number>;
  rvRevoke(numKeys: number, ...args: (string | number)[]): Promise<number>;
}

export interface RedisCoordinationOptions {
  url: string;
  /** Every key and channel starts with it, e.g. `enrollment:` (a test run uses its own). */
  prefix: string;
  logger: Logger;
  now?: () => number;
  /** How long a command may take before it counts as failed (default 250 ms). */
  commandTimeoutMs?: number;
  /** Full reload of the revocation list, besides the subscription (default 10 s). */
  resyncMs?: number;
  /**
   * While Redis is marked unresponsive (a command timed out on an open connection), how often a
   * PING checks whether it answers again (default 1 s).
   */
  probeMs?: number;
  /** While unresponsive, how long without any answer before the connection is made again (default 5 s). */
  recycleAfterMs?: number;
  /**
   * Where a revocation Redis could not take is saved before `revoke` resolves (full mode: the
   * database). Without one such a revocation is refused (`UNAVAILABLE`) once it holds here.
   */
  backup?: RevocationBackup;
}

/** ioredis's rejection of a command that got no answer within `commandTimeout`. */
function isTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === 'Command timed out';
}

const ALLOWED: WindowVerdict = { allowed: true, retryAfterMs: 0 };

export function createRedisCoordination(opts: RedisCoordinationOptions): Coordination {
  const now = opts.now ?? Date.now;
  const log = opts.logger.child({ module: 'coordination', store: 'redis' });
  const redisOptions = {
    lazyConnect: true,
    // Fail at once while disconnected instead of queueing: a login must not wait for Redis.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs ?? 250,
    connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
  };
  const client = new Redis(opts.url, redisOptions);
  const sub = new Redis(opts.url, { ...redisOptions, commandTimeout: undefined });
  const scripts = client as unknown as Scripts;
  client.defineCommand('rlCheck', { lua: CHECK_LUA });
  client.defineCommand('rlTake', { lua: TAKE_LUA });
  client.defineCommand('rlRecord', { lua: RECORD_LUA });
  client.defineCommand('rvRevoke', { lua: REVOKE_LUA });

  const mirror = new RevocationMirror(now);
  const hashKey = `${opts.prefix}revocations`;
  const channel = `${opts.prefix}revocations`;
  const key = (k: string) => `${opts.prefix}${k}`;
  /**
   * Revocations not yet in Redis (made while it was away, or loaded from the backup at start), by
   * key: written and published once it is back. `unsaved`: the keys among them that the backup did
   * not take either (their callers were refused), lost if this process stops before Redis is back.
   */
  const unsent = new Map<string, RevocationEntry>();
  const unsaved = new Set<string>();
  const backup = opts.backup ?? null;
  const keepUnsent = (e: RevocationEntry) => unsent.set(e.key, mergeRevocation(unsent.get(e.key), e));
  let readingBackup = false;
  let seq = 0;
  const instance = randomBytes(6).toString('hex');
  let closed = false;
  let resyncTimer: NodeJS.Timeout | null = null;
  /** Features currently degraded (logged once each per outage). */
  const degraded = new Set<string>();
  /**
   * A command timed out on an open connection and nothing has answered since: treated as down
   * (no command is sent, `connected` is false) until the probe or a new connection gets an answer.
   */
  let unresponsive = false;
  let probeTimer: NodeJS.Timeout | null = null;
  let probing = false;
  let unresponsiveSince = 0;
  const recycleAfterMs = opts.recycleAfterMs ?? 5000;
  const commandTimeoutMs = opts.commandTimeoutMs ?? 250;

  /**
   * The connection's last error (ioredis reports the cause there; a failed command or connect only
   * says "Connection is closed."): logged with an outage, so a host name that does not resolve or a
   * refused password is told apart from a Redis that is down (probe J).
   */
  let lastConnectionError: Error | null = null;
  client.on('error', (err: Error) => {
    lastConnectionError = err;
  }); // reported through failed commands and 'close' below
  // The subscriber's connection fails for the same reasons, and at start its failure may be the
  // one the start sees first (before the client's error event): its cause counts too.
  sub.on('error', (err: Error) => {
    lastConnectionError ??= err;
  });
  /** ` (<what the last connection error says>)`, or nothing. */
  const connectionCause = (): string => {
    const cause = lastConnectionError as Error | null;
    return cause === null ? '' : ` (${settingHint(cause) ?? (cause as NodeJS.ErrnoException).code ?? cause.message})`;
  };
  client.on('close', () => {
    if (!closed && !degraded.has('connection')) {
      degraded.add('connection');
      log.warn({ err: lastConnectionError ?? undefined }, `redis connection lost${connectionCause()}; rate limits fail open, revocations served from the local copy until it is back`);
    }
  });
  // A new connection answered its ready check: Redis answers again, whatever it did before.
  client.on('ready', () => answeredAgain(false));

  // (Re)subscribe on every connection: ioredis re-subscribes only channels a connection had, and a
  // Redis that was down at start never had one. Then reload what was missed meanwhile.
  sub.on('ready', () => {
    sub.subscribe(channel).then(
      () => resync(),
      (err: unknown) => degrade('revocations', err, 'the subscription failed; the local copy is reloaded every resync'),
    );
  });
  sub.on('message', (_channel: string, message: string) => {
    const e = parseEntry(message);
    if (e) mirror.apply(e);
  });

  const degrade = (feature: string, err: unknown, behaviour: string): void => {
    if (degraded.has(feature)) return;
    degraded.add(feature);
    log.warn({ err, feature }, `redis unavailable for ${feature}: ${behaviour}`);
  };

  /** Redis answers (again): shared features resume, and what was missed or held back meanwhile is caught up. */
  function answeredAgain(resyncNow: boolean): void {
    const wasUnresponsive = unresponsive;
    unresponsive = false;
    if (probeTimer !== null) clearInterval(probeTimer);
    probeTimer = null;
    if (degraded.size > 0) log.info({ degraded: [...degraded] }, 'redis is back; rate limits and revocations shared again');
    degraded.clear();
    void flushUnsent();
    // Messages published while it hung may never have reached the subscription: reload the list.
    if (resyncNow || wasUnresponsive) void resync();
  }

  /**
   * Called with every failed command: a timeout on an open connection marks Redis unresponsive
   * (see the header), so the next calls skip it at once instead of each waiting the full timeout,
   * and starts the probe. Other failures (connection closed, refused) need nothing: ioredis
   * refuses commands at once while disconnected, and its `ready` event says when it is back.
   */
  function noteFailure(err: unknown): void {
    if (closed || unresponsive || !isTimeout(err) || client.status !== 'ready') return;
    unresponsive = true;
    unresponsiveSince = performance.now();
    degrade('connection', err, `no answer within ${commandTimeoutMs} ms on an open connection; treated as away (rate limits fail open, revocations local) until it answers a PING again`);
    probeTimer = setInterval(probe, opts.probeMs ?? 1000);
    probeTimer.unref();
  }

  /** One PING at a time while unresponsive; an answer ends the outage. */
  function probe(): void {
    if (closed) return;
    if (unresponsive && client.status === 'ready' && performance.now() - unresponsiveSince >= recycleAfterMs) {
      // Not one answer for that long on an open connection: a new one (its ready check ends the outage).
      unresponsiveSince = performance.now();
      log.warn({ silentMs: recycleAfterMs }, 'redis has not answered on its connection; making a new one');
      client.disconnect(true);
      sub.disconnect(true);
      return;
    }
    if (probing || client.status !== 'ready') return;
    probing = true;
    client.ping().then(
      () => {
        probing = false;
        if (unresponsive && !closed) answeredAgain(true);
      },
      () => {
        probing = false;
      },
    );
  }

  /** The error that calls skipped while Redis is marked unresponsive fail with (logged once per feature). */
  const notAnswering = () => new Error(`redis is not answering (a command timed out after ${commandTimeoutMs} ms)`);

  function parseEntry(s: string): RevocationEntry | null {
    try {
      const v = JSON.parse(s) as Partial<RevocationEntry>;
      if (typeof v.key !== 'string' || typeof v.until !== 'number') return null;
      return { key: v.key, until: v.until, ...(typeof v.at === 'number' ? { at: v.at } : {}) };
    } catch {
      return null;
    }
  }

  async function resync(): Promise<void> {
    if (unresponsive) return;
    try {
      const all = await client.hgetall(hashKey);
      const nowSeconds = Math.floor(now() / 1000);
      const stale: string[] = [];
      for (const [field, value] of Object.entries(all)) {
        const e = parseEntry(value);
        if (e === null || e.until <= nowSeconds) stale.push(field);
        else mirror.apply(e);
      }
      if (stale.length > 0) await client.hdel(hashKey, ...stale);
    } catch (err) {
      noteFailure(err);
      degrade('revocations', err, 'the local copy of the revocation list is used; it is reloaded when redis is back');
    }
  }

  async function write(e: RevocationEntry): Promise<void> {
    if (unresponsive) throw notAnswering();
    const ttlMs = Math.max(1000, e.until * 1000 - now());
    await scripts.rvRevoke(2, hashKey, channel, e.key, JSON.stringify(e), ttlMs);
  }

  async function flushUnsent(): Promise<void> {
    const pending = [...unsent.values()];
    for (const e of pending) {
      try {
        await write(e);
        // Unless a later revocation of the same key was kept meanwhile (a new object): it is written next time.
        if (unsent.get(e.key) === e) {
          unsent.delete(e.key);
          unsaved.delete(e.key);
        }
      } catch (err) {
        // Kept; once one times out the rest fail at once (write refuses while unresponsive).
        noteFailure(err);
      }
    }
    if (pending.length > 0 && unsent.size === 0) log.info({ revocations: pending.length }, 'revocations made while redis was away are now shared');
  }

  /**
   * While Redis is away: what other instances saved to the backup meanwhile reaches this mirror
   * (one read at a time; a failure is logged once per outage).
   */
  async function readBackup(): Promise<void> {
    if (backup === null || readingBackup || closed) return;
    readingBackup = true;
    try {
      for (const e of await backup.load(now())) mirror.apply(e);
    } catch (err) {
      degrade('revocation backup', err, `${backup.name} cannot be read either; revocations made elsewhere during the outage are learnt when redis is back`);
    } finally {
      readingBackup = false;
    }
  }

  const member = () => `${now()}-${instance}-${seq++}`;
  const failOpen = (err: unknown): WindowVerdict => {
    noteFailure(err);
    degrade('rate limits', err, 'limits fail open (requests are let through) until it is back');
    return ALLOWED;
  };
  const windowArgs = (limits: readonly WindowLimit[]) => limits.flatMap((l) => [l.windowMs, l.limit]);

  return {
    kind: 'redis',
    get connected() {
      return client.status === 'ready' && !unresponsive;
    },
    limits: {
      async check(limits) {
        if (limits.length === 0) return ALLOWED;
        if (unresponsive) return failOpen(notAnswering());
        try {
          const [blocked, wait] = await scripts.rlCheck(limits.length, ...limits.map((l) => key(l.key)), now(), ...windowArgs(limits));
          return blocked === 1 ? { allowed: false, retryAfterMs: Number(wait) } : ALLOWED;
        } catch (err) {
          return failOpen(err);
        }
      },
      async record(limits) {
        if (limits.length === 0) return;
        if (unresponsive) return void failOpen(notAnswering());
        try {
          await scripts.rlRecord(limits.length, ...limits.map((l) => key(l.key)), now(), member(), ...windowArgs(limits));
        } catch (err) {
          failOpen(err);
        }
      },
      async take(l) {
        if (unresponsive) return failOpen(notAnswering());
        try {
          const [blocked, wait] = await scripts.rlTake(1, key(l.key), now(), l.windowMs, l.limit, member());
          return blocked === 1 ? { allowed: false, retryAfterMs: Number(wait) } : ALLOWED;
        } catch (err) {
          return failOpen(err);
        }
      },
      async clear(keys) {
        if (keys.length === 0) return;
        if (unresponsive) return void failOpen(notAnswering());
        try {
          await client.del(...keys.map(key));
        } catch (err) {
          failOpen(err);
        }
      },
    },
    revocations: {
      isRevoked: (t) => mirror.isRevoked(t),
      async revoke(e) {
        const entries = revocationEntries(e, now());
        for (const entry of entries) mirror.apply(entry);
        // Durable once Redis took it (each write bounded by the command timeout, none at all while
        // Redis is known to be away)...
        const results = await Promise.allSettled(entries.map((entry) => write(entry)));
        const failed: RevocationEntry[] = [];
        let failure: unknown = null;
        results.forEach((r, i) => {
          if (r.status === 'fulfilled') return;
          noteFailure(r.reason);
          failure ??= r.reason;
          failed.push(entries[i] as RevocationEntry);
        });
        if (failed.length === 0) return;
        for (const entry of failed) keepUnsent(entry);
        degrade(
          'revocations',
          failure,
          backup === null
            ? 'a revocation holds on this instance now and is shared when redis is back; with no backup it is refused (503) and lost if this process stops first'
            : `a revocation holds on this instance now, is saved to ${backup.name} and is shared when redis is back`,
        );
        // ...or else once the backup has it.
        if (backup !== null) {
          try {
            await backup.save(failed);
            return;
          } catch (err) {
            log.error({ err }, `a revocation could be saved neither to redis nor to ${backup.name}; it holds on this instance until it stops`);
          }
        }
        for (const entry of failed) unsaved.add(entry.key);
        throw new EngineError('UNAVAILABLE', 'the revocation holds on this instance but could not be saved (redis and its backup are unreachable); try again');
      },
    },
    async start() {
      // First, so that a failure leaves nothing started (the caller may retry): revocations saved
      // while Redis was away, by this instance before a restart or by another, hold at once and
      // are written to Redis once it answers (writing an entry Redis has already changes nothing).
      if (backup !== null) {
        const saved = await backup.load(now());
        for (const e of saved) {
          mirror.apply(e);
          keepUnsent(e);
        }
        if (saved.length > 0) log.info({ revocations: saved.length }, `revocations saved to ${backup.name} during a redis outage read back; written to redis once it answers`);
      }
      try {
        await Promise.all([client.connect(), sub.connect()]);
        await sub.subscribe(channel);
        await resync();
        if (unsent.size > 0) await flushUnsent();
        log.info({ prefix: opts.prefix }, 'redis connected: rate limits and revocations shared across instances');
      } catch (err) {
        degrade('connection', lastConnectionError ?? err, `unreachable at start${connectionCause()}; rate limits fail open, revocations local until it is back (retrying)`);
      }
      // Also how an idle instance notices a Redis that stopped answering (resync's timeout marks it).
      // While it is away, the backup is read instead (revocations other instances made meanwhile).
      resyncTimer = setInterval(() => void (client.status === 'ready' && !unresponsive ? resync() : readBackup()), opts.resyncMs ?? 10_000);
      resyncTimer.unref();
    },
    async close() {
      closed = true;
      if (unsent.size > 0) {
        const kept = unsent.size - unsaved.size;
        log.warn(
          { revocations: unsent.size, inBackup: kept, lost: unsaved.size },
          backup === null
            ? `${unsent.size} revocations never reached redis and are forgotten with this process (no backup)`
            : `${unsent.size} revocations not yet written to redis: ${kept} are kept in ${backup.name} and written to redis by the next instance to start` +
                (unsaved.size > 0 ? `; ${unsaved.size} could not be saved there either (their callers were answered 503) and are forgotten` : ''),
        );
      }
      if (resyncTimer) clearInterval(resyncTimer);
      if (probeTimer) clearInterval(probeTimer);
      client.disconnect();
      sub.disconnect();
    },
  };
}

/** What a connection error says about REDIS_URL itself (as opposed to an outage), if anything; never quotes the URL. */
function settingHint(err: Error): string | null {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'the host name of REDIS_URL does not resolve';
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(err.message)) return 'redis refused the user or password of REDIS_URL';
  return null;
}
