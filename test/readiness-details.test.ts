import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { createRedisCoordination } from '../src/coordination/redis.js';
import { createLogger } from '../src/logger.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { createFullStore } from '../src/persistence/full-store.js';
import { createHttpFixture } from './support/http-fixture.js';
import { REDIS_URL, requireService } from './support/services.js';

/**
 * Issue 13, item 6: /ready is public, so the stores' readiness reports carry short fixed reasons;
 * a driver's message (which names hosts, ports and users) goes to the log only.
 */
function capture() {
  const lines: string[] = [];
  return { lines, logger: createLogger('debug', { write: (l: string) => void lines.push(l) }) };
}

describe('readiness reports hold short reasons, the log holds the details', () => {
  test('full store with its database unreachable', async () => {
    const { lines, logger } = capture();
    const store = await createFullStore({
      databaseUrl: 'postgres://secret_user@127.0.0.1:1/nowhere',
      rabbitmqUrl: 'amqp://guest:guest@127.0.0.1:1',
      prefix: 'readiness_details',
      logger,
      batchMaxEvents: 10,
      runBatcher: false,
    });
    try {
      const r = await store.readiness();
      assert.equal(r.ready, false);
      assert.deepEqual(r.checks.database, { ok: false, detail: 'unreachable' });
      assert.doesNotMatch(JSON.stringify(r), /127\.0\.0\.1|ECONNREFUSED|secret_user/);
      assert.ok(lines.some((l) => l.includes('ECONNREFUSED')), 'the driver error is logged');
    } finally {
      await store.close();
    }
  });

  test('embedded store whose database is gone', async () => {
    const { lines, logger } = capture();
    const store = await createEmbeddedStore({ dataDir: null, logger, batchMaxEvents: 10 });
    await store.migrate();
    await store.close();
    const r = await store.readiness();
    assert.equal(r.ready, false);
    assert.deepEqual(r.checks.database, { ok: false, detail: 'unavailable' });
    assert.ok(lines.some((l) => l.includes('readiness: the database check failed') && l.includes('"err"')), 'the error is logged');
  });
});

describe('/ready shows the shared store (Redis) without counting it', async () => {
  const skip = await requireService('Redis', REDIS_URL);
  test('Redis away: still ready (limits fail open, revocations held here), and the check says so; Redis connected: ok', { skip }, async () => {
    const logger = createLogger('silent');
    const away = createRedisCoordination({ url: 'redis://127.0.0.1:1', prefix: `ready-${randomUUID()}:`, logger });
    const live = createRedisCoordination({ url: REDIS_URL, prefix: `ready-${randomUUID()}:`, logger });
    await away.start();
    await live.start();
    const a = await createHttpFixture({ app: { coordination: away } });
    const b = await createHttpFixture({ app: { coordination: live } });
    try {
      const ra = await a.request('GET', '/ready');
      assert.equal(ra.status, 200, 'a Redis outage does not pull the instance');
      const checks = (ra.body as { checks: Record<string, { ok: boolean; detail?: string }> }).checks;
      assert.equal(checks.redis?.ok, false);
      assert.match(String(checks.redis?.detail), /fail open/);
      const rb = await b.request('GET', '/ready');
      assert.equal(rb.status, 200);
      assert.equal((rb.body as { checks: Record<string, { ok: boolean }> }).checks.redis?.ok, true);
    } finally {
      await a.close();
      await b.close();
      await away.close();
      await live.close();
    }
  });
});
