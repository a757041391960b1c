import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { applyEvents, loadState } from '../src/persistence/state-store.js';
import { streamOf, type DomainEvent, type Persistence } from '../src/persistence/types.js';
import { MemoryPersistence, replayLog } from './support/memory-persistence.js';
import { createTestDatabase } from './support/pg.js';
import { NOW, normalize, scenario } from './support/scenario.js';
import { PG_ADMIN_URL, requireService } from './support/services.js';

const logger = pino({ level: 'silent' });
for (const thread of ['main', 'worker'] as const)
describe(`embedded store (PGlite, PGLITE_THREAD=${thread})`, () => {
  let store: Persistence;
  before(async () => {
    store = await createEmbeddedStore({ dataDir: null, logger, batchMaxEvents: 50, thread });
    await store.migrate();
  });
  after(() => store.close());

  test('a restart rebuilds exactly the committed state, queue order included', async () => {
    const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
    await engine.start();
    await scenario(engine);
    const live = engine.dumpState();
    assert.ok(live.sections.some((s) => s.queue.length > 1), 'scenario should leave a queue with order to check');
    const restarted = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
    await restarted.start();
    assert.deepEqual(normalize(restarted.dumpState()), normalize(live));
    const transitions = await store.recentTransitions(10, 1, 5);
    assert.equal(transitions.length, 5);
    assert.ok(transitions[0]!.seq > transitions[1]!.seq, 'newest first');
    // Paging back with beforeSeq reaches the whole history, each transition once, in order.
    const all = await store.recentTransitions(10, 1, 10_000);
    const paged: number[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await store.recentTransitions(10, 1, 3, before);
      if (page.length === 0) break;
      paged.push(...page.map((t) => t.seq));
      before = page.at(-1)!.seq;
    }
    assert.ok(all.length > 5);
    assert.deepEqual(paged, all.map((t) => t.seq));
  });

  test('migrations are idempotent', async () => {
    await store.migrate();
    await store.migrate();
  });
});

describe('state store on PostgreSQL', async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);
  test('set-based batches equal the reference fold, and redelivery changes nothing', { skip }, async () => {
    const mem = new MemoryPersistence();
    const engine = createEngine({ persistence: mem, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
    await engine.start();
    await scenario(engine);
    const expected = normalize(replayLog(mem.log));
    assert.ok(mem.log.filter((e) => e.type === 'studentUpdated').length >= 10, 'scenario should correct student records');
    assert.ok(mem.log.filter((e) => e.type === 'staffUpdated').length >= 1, 'scenario should change a staff password');
    assert.deepEqual(normalize(engine.dumpState()), expected);

    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await migrate(db);
      // Uneven batches, each followed by a redelivery of an overlapping slice.
      let i = 0;
      let size = 1;
      let applied = 0;
      while (i < mem.log.length) {
        const batch = mem.log.slice(i, i + size);
        applied += await db.transaction((tx) => applyEvents(tx, batch));
        const again = await db.transaction((tx) => applyEvents(tx, mem.log.slice(Math.max(0, i - 3), i + size)));
        assert.equal(again, 0, 'a redelivered slice must apply nothing');
        i += size;
        size = (size * 7) % 97 + 1;
      }
      assert.equal(applied, mem.log.length);
      assert.deepEqual(normalize(await loadState(db)), expected);

      // The transition log holds every event once, in log order, each row with its own payload
      // (secrets left out) beside its own columns.
      const rows = await db.query<{
        stream: string;
        seq: number;
        type: string;
        student_id: number | null;
        course_id: number | null;
        request_id: string;
        actor: string;
        at: Date;
        payload: Record<string, unknown>;
      }>('SELECT stream, seq, type, student_id, course_id, request_id, actor, at, payload FROM transitions ORDER BY id');
      assert.equal(rows.rows.length, mem.log.length);
      for (const [k, e] of mem.log.entries()) {
        const row = rows.rows[k];
        assert.ok(row);
        const where = `transition ${k} (${e.type})`;
        assert.deepEqual([row.stream, Number(row.seq), row.type], [streamOf(e), e.seq, e.type], where);
        const { passwordHash: _h, ...withoutHash } = e.type === 'studentCreated' ? e.student : e.type === 'staffCreated' ? e.staff : { passwordHash: '' };
        const withoutNewHash = (c: Record<string, unknown>) => {
          const { passwordHash, ...rest } = c;
          return passwordHash === undefined ? rest : { ...rest, passwordChanged: true };
        };
        const own =
          e.type === 'studentCreated'
            ? { ...e, student: withoutHash }
            : e.type === 'staffCreated'
              ? { ...e, staff: withoutHash }
              : e.type === 'studentUpdated' || e.type === 'staffUpdated'
                ? { ...e, changes: withoutNewHash(e.changes) }
                : e;
        if ((e.type === 'studentUpdated' || e.type === 'staffUpdated') && e.changes.passwordHash !== undefined) {
          assert.ok(!JSON.stringify(row.payload).includes(e.changes.passwordHash), `${where}: no password hash in the log`);
        }
        assert.deepEqual(row.payload, JSON.parse(JSON.stringify(own)), where);
        if ('studentId' in e) assert.equal(Number(row.student_id), e.studentId, where);
        assert.equal(row.course_id === null ? null : Number(row.course_id), 'courseId' in e ? e.courseId : null, where);
        assert.deepEqual([row.request_id, row.actor, row.at.getTime()], [e.cause.requestId, e.cause.actor, e.cause.at], where);
      }

      // Text that needs escaping, and a time with milliseconds, come back exactly.
      const odd = { ...(mem.log.find((e) => e.type === 'studentEnrolled') as DomainEvent), seq: 1_000_000 };
      odd.cause = { requestId: 'q"u\\o\u00e9\n\u2028é', actor: "student:'1' \"x\"", at: Date.UTC(2026, 11, 3, 8, 0, 0, 123) };
      assert.equal(await db.transaction((tx) => applyEvents(tx, [odd])), 1);
      const back = await db.query<{ request_id: string; actor: string; at: Date; payload: Record<string, unknown> }>(
        'SELECT request_id, actor, at, payload FROM transitions WHERE seq = 1000000',
      );
      assert.deepEqual(
        [back.rows[0]?.request_id, back.rows[0]?.actor, back.rows[0]?.at.getTime(), back.rows[0]?.payload],
        [odd.cause.requestId, odd.cause.actor, odd.cause.at, JSON.parse(JSON.stringify(odd))],
      );
    } finally {
      await db.close();
      await tdb.drop();
    }
  });
});
