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
 *
 * "Down" includes a Redis that keeps the connection open but stops answering (a hung process, a
 * stalled link): ioredis sees nothing wrong with the connection, so without more the store counted
 * as connected for the whole outage and every call paid the full command timeout, a login twice.
 * So once a command times out the store marks Redis unresponsive: `connected` reads false, and
 * until Redis answers again no command is sent (limits fail open at once, revocations wait in
 * `unsent`); a background PING every `probeMs` on the same connection marks it back (TCP keeps the
 * order, so the PING's answer also means everything sent before it was answered).
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
  /** Revocations made while Redis was unreachable: written and published once it is back. */
  let unsent: RevocationEntry[] = [];
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
  const commandTimeoutMs = opts.commandTimeoutMs ?? 250;

  client.on('error', () => undefined); // reported through failed commands and 'close' below
  sub.on('error', () => undefined);
  client.on('close', () => {
    if (!closed && !degraded.has('connection')) {
      degraded.add('connection');
      log.warn('redis connection lost; rate limits fail open, revocations served from the local copy until it is back');
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
    degrade('connection', err, `no answer within ${commandTimeoutMs} ms on an open connection; treated as away (rate limits fail open, revocations local) until it answers a PING again`);
    probeTimer = setInterval(probe, opts.probeMs ?? 1000);
    probeTimer.unref();
  }

  /** One PING at a time while unresponsive; an answer ends the outage. */
  function probe(): void {
    if (probing || closed || client.status !== 'ready') return;
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
    const pending = unsent;
    unsent = [];
    for (const e of pending) {
      try {
        await write(e);
      } catch (err) {
        // Once one times out the rest are kept at once (write refuses while unresponsive).
        noteFailure(err);
        unsent.push(e);
      }
    }
    if (pending.length > 0 && unsent.length === 0) log.info({ revocations: pending.length }, 'revocations made while redis was away are now shared');
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
      revoke(e) {
        for (const entry of revocationEntries(e, now())) {
          mirror.apply(entry);
          write(entry).catch((err: unknown) => {
            noteFailure(err);
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
      // Also how an idle instance notices a Redis that stopped answering (resync's timeout marks it).
      resyncTimer = setInterval(() => void (client.status === 'ready' && !unresponsive ? resync() : undefined), opts.resyncMs ?? 10_000);
      resyncTimer.unref();
    },
    async close() {
      closed = true;
      if (resyncTimer) clearInterval(resyncTimer);
      if (probeTimer) clearInterval(probeTimer);
      client.disconnect();
      sub.disconnect();
    },
  };
}
