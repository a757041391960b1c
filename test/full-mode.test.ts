import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { batcherThreadFactory } from '../src/persistence/batcher-thread.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { loadState } from '../src/persistence/state-store.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { NOW, normalize, scenario } from './support/scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

async function waitFor(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('full mode: RabbitMQ stream + batcher + PostgreSQL', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  const prefix = uniqueName('enroll_test');
  const open = (runBatcher: boolean): Promise<FullStore> =>
    createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger, batchMaxEvents: 100, runBatcher });

  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
  });
  after(async () => {
    if (skip) return;
    const n = streamNames(prefix);
    await deleteQueues([n.stream, n.dead]);
    await tdb.drop();
  });

  test('restart with the batcher far behind rebuilds the acknowledged state from the stream, then the batcher catches up', { skip }, async () => {
    // 1. Run with no batcher at all: the database holds nothing but the schema.
    const s1 = await open(false);
    await s1.migrate();
    const e1 = createEngine({ persistence: s1, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
    await e1.start();
    await scenario(e1);
    const live = normalize(e1.dumpState());
    e1.stop();
    await s1.close();

    const db = createPgClient(tdb.url);
    try {
      assert.equal((await db.query('SELECT count(*)::int AS n FROM enrolled_courses')).rows[0]?.n, 0, 'nothing applied yet');

      // 2. Restart: the state comes back at once from database (empty) + stream tail.
      const s2 = await open(false);
      const e2 = createEngine({ persistence: s2, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
      await e2.start();
      assert.deepEqual(normalize(e2.dumpState()), live);
      e2.stop();
      await s2.close();

      // 3. A batcher drains the stream into PostgreSQL; the database then equals the actors.
      const s3 = await open(true);
      const e3 = createEngine({ persistence: s3, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
      await e3.start();
      await waitFor(async () => JSON.stringify(normalize(await loadState(db))) === JSON.stringify(live), 20_000, 'the database to catch up');
      assert.deepEqual(normalize(await loadState(db)), live);

      // 4. More load on the running engine, then a restart from database + (short) tail.
      await scenario(e3).catch(() => undefined);
      const live2 = normalize(e3.dumpState());
      e3.stop();
      await s3.close();
      const s4 = await open(true);
      const e4 = createEngine({ persistence: s4, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
      await e4.start();
      assert.deepEqual(normalize(e4.dumpState()), live2);
      await waitFor(async () => JSON.stringify(normalize(await loadState(db))) === JSON.stringify(live2), 20_000, 'the database to catch up again');
      e4.stop();
      await s4.close();
    } finally {
      await db.close();
    }
  });
  test('the batcher writes at once when quiet, and at most one transaction per BATCH_LINGER_MS under a trickle', { skip }, async () => {
    const p = uniqueName('enroll_linger');
    const lingerMs = 2_000;
    const store = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix: p, logger, batchMaxEvents: 100, batchLingerMs: lingerMs, runBatcher: true });
    const db = createPgClient(tdb.url);
    try {
      await store.migrate();
      const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
      await engine.start();
      await engine.importBatch(
        {
          departments: [{ id: 1, name: 'Testing' }],
          staff: [],
          students: [{ id: 7001, passwordHash: 'x', enrollmentStart: NOW - 60_000, maxUnits: 20, remainingActions: 100, departmentId: 1, entryYear: 2024, gender: 'male' }],
          sections: [1, 2].map((g) => ({ info: { courseId: 77, groupId: g, forDepartment: 1, name: 'Linger', lecturer: 'x', units: 1, examTime: null, classTime: 0, notes: '' }, capacity: 5, reserveCapacity: 0, sexLock: null })),
        },
        { requestId: 'import', actor: 'system' },
      );
      const sectionRows = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM courses WHERE course_id = 77')).rows[0]?.n ?? 0;
      await waitFor(async () => (await sectionRows()) === 2, 20_000, 'the import in the database');
      // Quiet for longer than the linger: the next change is written at once, not a linger later.
      await new Promise((r) => setTimeout(r, lingerMs + 200));
      await engine.enroll(7001, 77, 1, { requestId: 'first', actor: 'student:7001' });
      const enrolled = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM enrolled_courses WHERE student_id = 7001')).rows[0]?.n ?? 0;
      await waitFor(async () => (await enrolled()) === 1, lingerMs / 2, 'the first change of a quiet batcher well within the linger');
      // A trickle: ten acknowledged changes, one at a time, all within one linger window.
      const before = await db.query<{ max: string | null }>('SELECT max(id)::text AS max FROM transitions');
      for (let i = 0; i < 5; i++) {
        await engine.changeGroup(7001, 77, 2, { requestId: `move-${i}`, actor: 'student:7001' });
        await engine.changeGroup(7001, 77, 1, { requestId: `back-${i}`, actor: 'student:7001' });
        await new Promise((r) => setTimeout(r, 20));
      }
      const trickle = async () =>
        (
          await db.query<{ requests: number; tx: number }>(
            `SELECT count(DISTINCT request_id)::int AS requests, count(DISTINCT xmin::text)::int AS tx FROM transitions WHERE id > $1::bigint`,
            [before.rows[0]?.max ?? '0'],
          )
        ).rows[0] ?? { requests: 0, tx: 0 };
      await waitFor(async () => (await trickle()).requests === 10, 20_000, 'the trickle in the database');
      const t = await trickle();
      assert.ok(t.tx <= 2, `ten changes a few ms apart went into ${t.tx} transactions (at most 2 expected: one batch start per linger)`);
      engine.stop();
    } finally {
      await store.close();
      await db.close();
      await deleteQueues([streamNames(p).stream, streamNames(p).dead]);
    }
  });

  // The batcher on the server's thread and on its own worker thread (BATCHER_THREAD, default worker).
  for (const thread of ['main', 'worker'] as const) {
    test(`a clean stop applies what the batcher received first: the tables hold every acknowledged change at once (batcher on the ${thread} thread)`, { skip }, async () => {
      const p = uniqueName('enroll_stopflush');
      const own = await createTestDatabase();
      // A long linger: after the first change the batcher holds what arrives for 30 s, so only a
      // stop that applies it first leaves the tables current.
      const store = await createFullStore({
        databaseUrl: own.url,
        rabbitmqUrl: AMQP_URL,
        prefix: p,
        logger,
        batchMaxEvents: 100,
        batchLingerMs: 30_000,
        runBatcher: true,
        ...(thread === 'worker' ? { batcherFactory: batcherThreadFactory({ entry: join(import.meta.dirname, '..', 'src', 'cli', 'batcher-worker'), logLevel: 'silent' }) } : {}),
      });
      const db = createPgClient(own.url);
      try {
        await store.migrate();
        const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
        await engine.start();
        await scenario(engine);
        const live = normalize(engine.dumpState());
        engine.stop();
        await store.close();
        // Right after the stop, with no engine or batcher running: the database is the state.
        assert.deepEqual(normalize(await loadState(db)), live);
      } finally {
        await store.close().catch(() => undefined);
        await db.close();
        await own.drop();
        await deleteQueues([streamNames(p).stream, streamNames(p).dead]);
      }
    });
  }
  // A message the batcher cannot read or apply: test/log-stall.test.ts (it stops there, never skips).
});
