import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createLogger } from '../src/logger.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { createFullStore } from '../src/persistence/full-store.js';

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
