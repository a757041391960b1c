import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import amqp from 'amqplib';
import { pino } from 'pino';
import { createEngine, type Engine } from '../src/engine/engine.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { skipLogMessage } from '../src/persistence/log-skip.js';
import { persistenceRegistry } from '../src/persistence/metrics.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { deleteQueues } from './support/amqp.js';
import { C, S, seedData, T0, WINDOW_MS } from './support/http-fixture.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe T, finding 2: with two instances, an unreadable message stopped the second instance's read
 * copy; after the operator's documented skip the copy stayed stopped, its /ready said 200 (and the
 * stall gauge 0) while its reads missed every later change, until a restart. Now the instance is not
 * ready while its copy is stopped, the gauge says where, and once the skip has moved the database's
 * offset past the message it reloads and goes on.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const meta = (actor: string) => ({ requestId: randomUUID(), actor });

async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a read copy stopped at an unreadable message (two instances, full mode)', { timeout: 120_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  const prefix = uniqueName('copy-skip');
  const names = streamNames(prefix);
  const clock = { now: T0 + 5 * 60_000 };
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  const stores: FullStore[] = [];
  const engines: Engine[] = [];

  const start = async (name: string, runBatcher: boolean): Promise<{ store: FullStore; engine: Engine }> => {
    const store = await createFullStore({
      databaseUrl: tdb.url,
      rabbitmqUrl: AMQP_URL,
      prefix,
      logger: logger.child({ instance: name }),
      batchMaxEvents: 500,
      runBatcher,
      forwarding: true,
      joinWhenListening: true,
      address: `http://${name}.invalid`,
    });
    await store.migrate();
    const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: WINDOW_MS, now: () => clock.now, cluster: store });
    await engine.start();
    store.join();
    stores.push(store);
    engines.push(engine);
    return { store, engine };
  };

  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
  });
  after(async () => {
    if (skip) return;
    for (const e of engines) e.stop();
    for (const s of stores) await s.close().catch(() => undefined);
    await deleteQueues([...Object.values(names)]).catch(() => undefined);
    await tdb.drop();
  });

  test('the instance is not ready while its copy is stopped, and after the skip it reloads past the message and follows again', { skip }, async () => {
    const a = await start('a', true);
    await a.engine.importBatch(seedData(), meta('system'));
    const b = await start('b', false);
    await until(() => b.engine.dumpState().sections.length === a.engine.dumpState().sections.length, 'b to hold the seeded sections');

    // An unreadable message lands in the log (a foreign or damaged publisher).
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      ch.sendToQueue(names.stream, Buffer.from('{damaged'), { persistent: true });
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    // A change after it, decided and acknowledged by the owner.
    await a.engine.enroll(S.alice, C.physics[0], C.physics[1], meta(`student:${S.alice}`));

    await until(async () => (await b.store.readiness()).checks['readCopy']?.ok === false, "b's readiness to report its stopped copy");
    const report = await b.store.readiness();
    assert.equal(report.ready, false, 'not ready: its reads would miss the change after the message');
    assert.match(String(report.checks['readCopy']?.detail), /read copy stopped at .* offset \d+: unreadable message/);
    const stalledAt = Number(/offset (\d+)/.exec(String(report.checks['readCopy']?.detail))?.[1]);
    assert.match(await persistenceRegistry.metrics(), new RegExp(`enrollment_log_stalled\\{stream="${names.stream.replace(/\./g, '\\.')}",reader="read-copy"\\} 1`));
    const members = () => b.engine.sectionMembers(C.physics[0], C.physics[1]).registered;
    assert.ok(!members().includes(S.alice), "b does not have the change after the message yet");

    // The batcher stops at the same message; the operator skips it.
    const db = createPgClient(tdb.url);
    try {
      await until(async () => (await db.query('SELECT 1 FROM log_stalls WHERE log_name = $1', [names.stream])).rows.length === 1, 'the batcher to record its stall');
      await skipLogMessage({ db, amqpUrl: AMQP_URL, stream: names.stream, deadLetterQueue: names.dead, offset: stalledAt, by: 'test', reason: 'test', logger });
    } finally {
      await db.close();
    }

    await until(() => members().includes(S.alice), 'b to reload past the skipped message and show the change after it');
    await until(async () => (await b.store.readiness()).ready, 'b ready again');
    // And it follows the log again: a later change reaches it.
    await a.engine.enroll(S.bea, C.physics[0], C.physics[1], meta(`student:${S.bea}`));
    await until(() => members().includes(S.bea), 'b to follow the log after the skip');
  });
});
