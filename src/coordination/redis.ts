import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../logger.js';
import { RevocationMirror, revocationEntries, type RevocationEntry } from './revocation-mirror.js';
import type { Coordination, WindowLimit, WindowVerdict } from './types.js';

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
 *   during the outage takes effect here at once and is written and published when Redis is back.
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
  /** Revocations made while Redis was unreachable: written and published once it is back. */
  let unsent: RevocationEntry[] = [];
  let seq = 0;
  const instance = randomBytes(6).toString('hex');
  let closed = false;
  let resyncTimer: NodeJS.Timeout | null = null;
  /** Features currently degraded (logged once each per outage). */
  const degraded = new Set<string>();

  client.on('error', () => undefined); // reported through failed commands and 'close' below
  sub.on('error', () => undefined);
  client.on('close', () => {
    if (!closed && !degraded.has('connection')) {
      degraded.add('connection');
      log.warn('redis connection lost; rate limits fail open, revocations served from the local copy until it is back');
    }
  });
  client.on('ready', () => {
    if (degraded.size > 0) log.info({ degraded: [...degraded] }, 'redis is back; rate limits and revocations shared again');
    degraded.clear();
    void flushUnsent();
  });
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
      degrade('revocations', err, 'the local copy of the revocation list is used; it is reloaded when redis is back');
    }
  }

  async function write(e: RevocationEntry): Promise<void> {
    const ttlMs = Math.max(1000, e.until * 1000 - now());
    await scripts.rvRevoke(2, hashKey, channel, e.key, JSON.stringify(e), ttlMs);
  }

  async function flushUnsent(): Promise<void> {
    const pending = unsent;
    unsent = [];
    for (const e of pending) {
      try {
        await write(e);
      } catch {
        unsent.push(e);
      }
    }
    if (pending.length > 0 && unsent.length === 0) log.info({ revocations: pending.length }, 'revocations made while redis was away are now shared');
  }

  const member = () => `${now()}-${instance}-${seq++}`;
  const failOpen = (err: unknown): WindowVerdict => {
    degrade('rate limits', err, 'limits fail open (requests are let through) until it is back');
    return ALLOWED;
  };
  const windowArgs = (limits: readonly WindowLimit[]) => limits.flatMap((l) => [l.windowMs, l.limit]);

  return {
    kind: 'redis',
    get connected() {
      return client.status === 'ready';
    },
    limits: {
      async check(limits) {
        if (limits.length === 0) return ALLOWED;
        try {
          const [blocked, wait] = await scripts.rlCheck(limits.length, ...limits.map((l) => key(l.key)), now(), ...windowArgs(limits));
          return blocked === 1 ? { allowed: false, retryAfterMs: Number(wait) } : ALLOWED;
        } catch (err) {
          return failOpen(err);
        }
      },
      async record(limits) {
        if (limits.length === 0) return;
        try {
          await scripts.rlRecord(limits.length, ...limits.map((l) => key(l.key)), now(), member(), ...windowArgs(limits));
        } catch (err) {
          failOpen(err);
        }
      },
      async take(l) {
        try {
          const [blocked, wait] = await scripts.rlTake(1, key(l.key), now(), l.windowMs, l.limit, member());
          return blocked === 1 ? { allowed: false, retryAfterMs: Number(wait) } : ALLOWED;
        } catch (err) {
          return failOpen(err);
        }
      },
      async clear(keys) {
        if (keys.length === 0) return;
        try {
          await client.del(...keys.map(key));
        } catch (err) {
          failOpen(err);
        }
      },
    },
    revocations: {
      isRevoked: (t) => mirror.isRevoked(t),
      revoke(e) {
        for (const entry of revocationEntries(e, now())) {
          mirror.apply(entry);
          write(entry).catch((err: unknown) => {
            unsent.push(entry);
            degrade('revocations', err, 'the revocation holds on this instance now and is shared when redis is back');
          });
        }
        // Answered once it holds here: while Redis is away it is shared when Redis is back (above).
        return Promise.resolve();
      },
    },
    async start() {
      try {
        await Promise.all([client.connect(), sub.connect()]);
        await sub.subscribe(channel);
        await resync();
        log.info({ prefix: opts.prefix }, 'redis connected: rate limits and revocations shared across instances');
      } catch (err) {
        degrade('connection', err, 'unreachable at start; rate limits fail open, revocations local until it is back (retrying)');
      }
      resyncTimer = setInterval(() => void (client.status === 'ready' ? resync() : undefined), opts.resyncMs ?? 10_000);
      resyncTimer.unref();
    },
    async close() {
      closed = true;
      if (resyncTimer) clearInterval(resyncTimer);
      client.disconnect();
      sub.disconnect();
    },
  };
}
