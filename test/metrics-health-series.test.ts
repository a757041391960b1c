import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { batcherThreadFactory } from '../src/persistence/batcher-thread.js';
import { createEmbeddedStore, EMBEDDED_LOG_STREAM } from '../src/persistence/embedded-store.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import { persistenceRegistry } from '../src/persistence/metrics.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe O2, finding 2: the gauges the alert rules (ops/prometheus/alerts.yml) and the dashboard read
 * must say "healthy" while healthy. `enrollment_log_stalled` had no series until a first stall, so
 * `max(enrollment_log_stalled)` showed "No data"; embedded mode exported `enrollment_batcher_leader 0`
 * for ever, so `sum(enrollment_batcher_leader) == 0` would fire for ever on an embedded deployment,
 * although its group commit applies its own log to the tables (it is its own batcher).
 */
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

async function gauge(name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const m = (await persistenceRegistry.getMetricsAsJSON()).find((x) => x.name === name);
  return m?.values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))?.value;
}

describe('embedded mode', () => {
  test('counts as the one batcher while its store is open, and its log has a 0 stall series', { timeout: 60_000 }, async () => {
    const store = await createEmbeddedStore({ dataDir: null, logger, batchMaxEvents: 100 });
    try {
      await store.migrate();
      const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000 });
      await engine.start();
      assert.equal(await gauge('enrollment_batcher_leader'), 1, 'embedded mode applies its own log: one batcher leading');
      assert.equal(await gauge('enrollment_log_stalled', { stream: EMBEDDED_LOG_STREAM, reader: 'batcher' }), 0);
      assert.equal(await gauge('enrollment_log_stalled_offset', { stream: EMBEDDED_LOG_STREAM, reader: 'batcher' }), -1);
      engine.stop();
    } finally {
      await store.close();
    }
    assert.equal(await gauge('enrollment_batcher_leader'), 0, 'a closed store applies nothing');
  });
});

/** The batcher on a worker thread (BATCHER_THREAD=worker, the server's default): its gauges are mirrored on this thread. */
const onWorker = batcherThreadFactory({ entry: join(import.meta.dirname, '..', 'src', 'cli', 'batcher-worker'), logLevel: process.env.TEST_LOG_LEVEL ?? 'silent' });

for (const thread of ['main', 'worker'] as const) {
  describe(`full mode, the batcher on the ${thread} thread`, async () => {
    const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
    let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
    const prefix = uniqueName('enroll_health_series');
    const names = streamNames(prefix);
    before(async () => {
      if (!skip) tdb = await createTestDatabase();
    });
    after(async () => {
      if (skip) return;
      await deleteQueues([names.stream, names.dead]);
      await tdb.drop();
    });

    test('a healthy batcher and replay export enrollment_log_stalled 0 (offset -1), not nothing', { skip, timeout: 60_000 }, async () => {
      const store = await createFullStore({
        databaseUrl: tdb.url,
        rabbitmqUrl: AMQP_URL,
        prefix,
        logger,
        batchMaxEvents: 100,
        runBatcher: true,
        ...(thread === 'worker' ? { batcherFactory: onWorker } : {}),
      });
      try {
        await store.migrate();
        const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000 });
        await engine.start();
        for (const reader of ['batcher', 'replay']) {
          assert.equal(await gauge('enrollment_log_stalled', { stream: names.stream, reader }), 0, `${reader}: stalled 0`);
          assert.equal(await gauge('enrollment_log_stalled_offset', { stream: names.stream, reader }), -1, `${reader}: offset -1`);
        }
        engine.stop();
      } finally {
        await store.close();
      }
    });
  });
}
