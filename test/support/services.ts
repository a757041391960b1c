import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import net from 'node:net';

/**
 * Real services for integration tests. A test that needs one calls `requireService`: when the
 * service is unreachable the test is skipped locally, but fails under CI (CI=true), as SPEC 8 asks.
 */
export const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const AMQP_URL = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function reachable(url: string, timeoutMs = 1000): Promise<boolean> {
  const u = new URL(url);
  const port = Number(u.port || { 'postgres:': 5432, 'amqp:': 5672, 'redis:': 6379 }[u.protocol] || 0);
  return new Promise((resolve) => {
    const s = net.connect({ host: u.hostname, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Returns a skip reason (string) or false when the service is there; throws under CI. */
export async function requireService(name: string, url: string): Promise<string | false> {
  if (await reachable(url)) return false;
  if (process.env.CI) throw new Error(`${name} at ${url} is unreachable, and CI is set: integration tests must run`);
  return `${name} unreachable at ${url}`;
}

/** A unique name per test run, so runs never collide on shared services. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

/** Deletes a test run's Redis keys, by prefix (SCAN + DEL: never the keys of other runs or users). */
export async function deleteRedisKeys(prefixes: readonly string[]): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    for (const p of prefixes) {
      const keys: string[] = [];
      for await (const batch of redis.scanStream({ match: `${p}*`, count: 1000 }) as AsyncIterable<string[]>) keys.push(...batch);
      if (keys.length > 0) await redis.del(...keys);
    }
  } finally {
    redis.disconnect();
  }
}
