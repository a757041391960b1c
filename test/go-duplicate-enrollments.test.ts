import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { Engine } from '../src/engine/engine.js';
import { buildApp } from '../src/http/app.js';
import { TokenService } from '../src/http/auth.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { streamNames } from '../src/persistence/full-store.js';
import { deliveryQueueNames } from '../src/persistence/delivery-queue.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { createPgliteClient } from '../src/persistence/pglite-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { loadState } from '../src/persistence/state-store.js';
import { deleteQueues } from './support/amqp.js';
import { Api, Child, freePort, waitFor } from './support/fault-harness.js';
import { GO_DATABASE_SQL } from './support/go-database.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * A black-box probe: a database written by the Go service can hold more than one enrolled_courses
 * row for one student and course (its group change inserted the new row and never deleted the old
 * one; the same group twice, registered and reserved). 002's unique index on (student_id,
 * course_id) then failed: full mode logged "storage unavailable at start; retrying" for ever and
 * never listened, and `npm run migrate` exited 1 without naming the rows. Now, before 002, one row
 * per student and course is kept (a registered row over a reserved one, then the highest id) and
 * the others are moved, with their ids, to enrolled_courses_set_aside; one warning names them.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SECRET = 'go-duplicates-secret-0123456789-abcdefghijklmnop';
const S1 = 7000001;
const S2 = 7000002;
const S3 = 7000003;
const S4 = 7000004;
const S5 = 7000005;
const START = '2026-12-05T08:00:00Z';
const NOW = Date.parse('2026-12-05T08:30:00Z');

/** [id, course, group, student, reserved], as the Go service left them. */
const GO_ROWS: [number, number, number, number, boolean][] = [
  [1, 600, 1, S1, false], // a group change 1 -> 2: the old row, never deleted -> set aside
  [2, 610, 1, S2, false],
  [3, 610, 1, S3, true], // queue place 1
  [4, 610, 1, S4, false], // registered ...
  [5, 610, 1, S4, true], // ... and reserved in the same group, later -> set aside (the seat stays)
  [6, 610, 1, S5, true], // queue place 2
  [7, 600, 2, S1, false], // the group change's result -> kept
  [8, 620, 1, S2, false],
  [9, 620, 2, S5, false],
  [10, 620, 1, S3, true], // queued in two groups: the earlier -> set aside
  [11, 620, 2, S3, true], // the later -> kept
];
const KEPT_IDS = [2, 3, 4, 6, 7, 8, 9, 11];
const SET_ASIDE = [
  { id: 1, course_id: 600, group_id: 1, student_id: S1, reserved: false, kept_id: 7 },
  { id: 5, course_id: 610, group_id: 1, student_id: S4, reserved: true, kept_id: 4 },
  { id: 10, course_id: 620, group_id: 1, student_id: S3, reserved: true, kept_id: 11 },
];
/** The warning's rows: by student, then course. */
const WARNED = [
  { student: S1, course: 600, group: 1, reserved: false, id: 1, keptId: 7 },
  { student: S3, course: 620, group: 1, reserved: true, id: 10, keptId: 11 },
  { student: S4, course: 610, group: 1, reserved: true, id: 5, keptId: 4 },
];

async function makeGoDatabase(db: SqlClient): Promise<void> {
  await db.exec(GO_DATABASE_SQL);
  for (const id of [S1, S2, S3, S4, S5]) {
    await db.query(
      `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
       VALUES ($1, '$2a$10$abcdefghijklmnopqrstuuJ6cL1hmf7c8C3ylGmPl0G6cRO6k4nC6', $2, 20, 5, 1, 1400, 'male')`,
      [id, START],
    );
  }
  await db.query(`INSERT INTO staff (id, password, department_id) VALUES (900, '$2a$10$abcdefghijklmnopqrstuuJ6cL1hmf7c8C3ylGmPl0G6cRO6k4nC6', 1)`);
  await db.query(`INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity, class_time, notes)
                  VALUES (600, 1, 1, 'Compilers', 'Go', 3, 2, 1, 0, ''), (600, 2, 1, 'Compilers', 'Go', 3, 2, 1, 0, ''),
                         (610, 1, 1, 'Databases', 'Go', 3, 2, 3, 0, ''),
                         (620, 1, 1, 'Networks', 'Go', 3, 1, 2, 0, ''), (620, 2, 1, 'Networks', 'Go', 3, 1, 2, 0, '')`);
  for (const [id, course, group, student, reserved] of GO_ROWS) {
    await db.query('INSERT INTO enrolled_courses (id, course_id, group_id, student_id, reserved) VALUES ($1, $2, $3, $4, $5)', [id, course, group, student, reserved]);
  }
  await db.query(`SELECT setval('enrolled_courses_id_seq', 11)`);
}

function capture(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { logger, lines };
}

const setAsideWarnings = (lines: Record<string, unknown>[]) => lines.filter((l) => l.level === 40 && l.setAside !== undefined);

/** The rule's outcome in the tables, and the ids of both tables intact. */
async function checkTables(db: SqlClient): Promise<void> {
  const kept = await db.query<{ id: number }>('SELECT id FROM enrolled_courses ORDER BY id');
  assert.deepEqual(kept.rows.map((r) => Number(r.id)), KEPT_IDS);
  const aside = await db.query<Record<string, unknown>>(
    'SELECT id, course_id, group_id, student_id, reserved, kept_id, set_aside_at, reason FROM enrolled_courses_set_aside ORDER BY id',
  );
  assert.deepEqual(
    aside.rows.map((r) => ({ id: Number(r.id), course_id: Number(r.course_id), group_id: Number(r.group_id), student_id: Number(r.student_id), reserved: r.reserved, kept_id: Number(r.kept_id) })),
    SET_ASIDE,
  );
  for (const r of aside.rows) assert.ok(r.set_aside_at instanceof Date || typeof r.set_aside_at === 'string', 'set_aside_at is set');
  assert.match(String(aside.rows[0]?.reason), /student 7000001 in course 600.*kept id 7 \(group 2, registered\)/);
  assert.match(String(aside.rows[1]?.reason), /kept id 4 \(group 1, registered\)/);
  assert.match(String(aside.rows[2]?.reason), /kept id 11 \(group 2, reserved\)/);
  const index = await db.query("SELECT 1 FROM pg_indexes WHERE indexname = 'enrolled_courses_student_course'");
  assert.equal(index.rows.length, 1, "002's unique index exists");
}

async function checkLoaded(db: SqlClient): Promise<void> {
  const state = await loadState(db);
  const members = (c: number, g: number) => {
    const s = state.sections.find((x) => x.info.courseId === c && x.info.groupId === g);
    return { registered: s?.registered, queue: s?.queue };
  };
  assert.deepEqual(members(600, 1), { registered: [], queue: [] });
  assert.deepEqual(members(600, 2), { registered: [S1], queue: [] });
  assert.deepEqual(members(610, 1), { registered: [S2, S4], queue: [S3, S5] }, 'the queue in its Go order (by id)');
  assert.deepEqual(members(620, 1), { registered: [S2], queue: [] });
  assert.deepEqual(members(620, 2), { registered: [S5], queue: [S3] });
}

/** A student's schedule through the API (GET /student/course): [course, group, queue position]. */
type Held = [number, number, number | null][];
function heldOf(body: string): Held {
  const data = (JSON.parse(body) as { data: { course: { course_id: number; group_id: number }; reserve_queue_position?: number }[] }).data;
  return data.map((d) => [d.course.course_id, d.course.group_id, d.reserve_queue_position ?? null] as [number, number, number | null]).sort((a, b) => a[0] - b[0]);
}
const SCHEDULES: Record<number, Held> = {
  [S1]: [[600, 2, null]],
  [S3]: [
    [610, 1, 1],
    [620, 2, 1],
  ],
  [S4]: [[610, 1, null]],
};

describe("the Go service's duplicate enrolled_courses rows (one student, one course)", async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);

  test('PostgreSQL: migrate keeps one row per student and course by the rule, sets the others aside with their ids, warns once; a second migrate does nothing', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await makeGoDatabase(db);
      const { logger, lines } = capture();
      const applied = await migrate(db, { log: logger.child({ module: 'migrate' }) });
      assert.ok(applied.includes('002_engine_log.sql') && applied.includes('010_enrolled_courses_set_aside.sql'), applied.join(', '));
      await checkTables(db);
      const warnings = setAsideWarnings(lines);
      assert.equal(warnings.length, 1, 'one warning');
      assert.equal(warnings[0]?.module, 'migrate');
      assert.equal(warnings[0]?.setAside, 3);
      assert.equal(warnings[0]?.table, 'enrolled_courses_set_aside');
      assert.deepEqual(warnings[0]?.rows, WARNED);
      assert.match(String(warnings[0]?.msg), /registered row over a reserved one, then the highest id/);

      const again = capture();
      assert.deepEqual(await migrate(db, { log: again.logger }), [], 'nothing left to apply');
      assert.equal(again.lines.length, 0, 'and nothing said');
      await checkTables(db);
      await checkLoaded(db);
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test("docs/operations.md's inspect query and restore transaction work: the set-aside row is back with its id, the kept one aside in its place", { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await makeGoDatabase(db);
      await migrate(db);
      const seen = await db.query<{ id: number; kept_group: number; kept_reserved: boolean }>(
        `SELECT s.id, s.student_id, s.course_id, s.group_id, s.reserved, s.kept_id,
                k.group_id AS kept_group, k.reserved AS kept_reserved, s.set_aside_at, s.reason
         FROM enrolled_courses_set_aside s LEFT JOIN enrolled_courses k ON k.id = s.kept_id
         ORDER BY s.student_id, s.course_id, s.id`,
      );
      assert.deepEqual(seen.rows.map((r) => [Number(r.id), Number(r.kept_group), r.kept_reserved]), [
        [1, 2, false],
        [10, 2, true],
        [5, 1, false],
      ]);
      // The registrar restores row 10 (student 7000003 queued in 620/1) in place of row 11 (620/2).
      const [N, K] = [10, 11];
      await db.transaction(async (tx) => {
        await tx.query(
          `INSERT INTO enrolled_courses_set_aside (id, course_id, group_id, student_id, reserved, kept_id, reason)
             SELECT id, course_id, group_id, student_id, reserved, ${N}, 'set aside by the registrar: row ${N} restored in its place'
             FROM enrolled_courses WHERE id = ${K}`,
        );
        await tx.query(`DELETE FROM enrolled_courses WHERE id = ${K}`);
        await tx.query(
          `INSERT INTO enrolled_courses (id, course_id, group_id, student_id, reserved)
             SELECT id, course_id, group_id, student_id, reserved FROM enrolled_courses_set_aside WHERE id = ${N}`,
        );
        await tx.query(`DELETE FROM enrolled_courses_set_aside WHERE id = ${N}`);
      });
      const state = await loadState(db);
      const members = (c: number, g: number) => state.sections.find((x) => x.info.courseId === c && x.info.groupId === g);
      assert.deepEqual(members(620, 1)?.queue, [S3]);
      assert.deepEqual(members(620, 2)?.queue, []);
      const aside = await db.query<{ id: number; kept_id: number }>('SELECT id, kept_id FROM enrolled_courses_set_aside ORDER BY id');
      assert.deepEqual(aside.rows.map((r) => [Number(r.id), Number(r.kept_id)]), [
        [1, 7],
        [5, 4],
        [11, 10],
      ]);
      // A second restore for the same student and course is refused by the unique index, and changes nothing.
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.query(`INSERT INTO enrolled_courses (id, course_id, group_id, student_id, reserved) SELECT id, course_id, group_id, student_id, reserved FROM enrolled_courses_set_aside WHERE id = 11`);
          await tx.query('DELETE FROM enrolled_courses_set_aside WHERE id = 11');
        }),
        /duplicate key/,
      );
      assert.equal((await db.query('SELECT 1 FROM enrolled_courses_set_aside WHERE id = 11')).rows.length, 1);
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test('PostgreSQL: a database with no duplicates gets the empty set-aside table and no warning', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await makeGoDatabase(db);
      await db.query('DELETE FROM enrolled_courses WHERE id IN (1, 5, 10)');
      const { logger, lines } = capture();
      await migrate(db, { log: logger });
      assert.equal(lines.length, 0);
      assert.deepEqual((await db.query<{ id: number }>('SELECT id FROM enrolled_courses ORDER BY id')).rows.map((r) => Number(r.id)), KEPT_IDS);
      assert.equal((await db.query('SELECT * FROM enrolled_courses_set_aside')).rows.length, 0);
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test('npm run migrate on such a database exits 0 and logs the warning naming the rows', { skip, timeout: 120_000 }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await makeGoDatabase(db);
      const r = spawnSync('npm', ['run', 'migrate'], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATABASE_URL: tdb.url },
      });
      assert.equal(r.status, 0, `npm run migrate failed:\n${r.stdout}\n${r.stderr}`);
      const logged = r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const warnings = setAsideWarnings(logged);
      assert.equal(warnings.length, 1, r.stdout);
      assert.equal(warnings[0]?.module, 'migrate');
      assert.equal(warnings[0]?.setAside, 3);
      assert.deepEqual(warnings[0]?.rows, WARNED);
      await checkTables(db);
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test("embedded (PGlite): the store's migrate does the same, and the engine starts and serves each student's schedule", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'enroll-go-dups-'));
    try {
      const seed = await createPgliteClient(dir);
      await makeGoDatabase(seed);
      await seed.close();

      const { logger, lines } = capture();
      const store = await createEmbeddedStore({ dataDir: dir, logger, batchMaxEvents: 50 });
      const engine = new Engine({ persistence: store, logger, enrollmentWindowMs: 3600_000, now: () => NOW });
      try {
        await store.migrate();
        const warnings = setAsideWarnings(lines);
        assert.equal(warnings.length, 1);
        assert.equal(warnings[0]?.module, 'embedded-store');
        assert.deepEqual(warnings[0]?.rows, WARNED);
        await store.migrate();
        assert.equal(setAsideWarnings(lines).length, 1, 'a second migrate is a no-op');

        await engine.start();
        const app = await buildApp({ engine, logger, jwtSecret: SECRET, tokenTtlSeconds: 3600, readiness: async () => ({ ready: true, checks: {} }), now: () => NOW });
        try {
          const tokens = new TokenService({ secret: SECRET, ttlSeconds: 3600, now: () => NOW });
          for (const [student, held] of Object.entries(SCHEDULES)) {
            const r = await app.inject({ method: 'GET', url: '/student/course', headers: { authorization: `Bearer ${tokens.issue({ id: Number(student), role: 'student' })}` } });
            assert.equal(r.statusCode, 200, r.body);
            assert.deepEqual(heldOf(r.body), held, `student ${student}`);
          }
          assert.deepEqual(engine.sectionMembers(610, 1), { registered: [S2, S4], queue: [S3, S5] });
        } finally {
          await app.close();
        }
      } finally {
        engine.stop();
        await store.close();
      }
      const check = await createPgliteClient(dir);
      try {
        await checkTables(check);
      } finally {
        await check.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const skipFull = skip || (await requireService('RabbitMQ', AMQP_URL));
  test('full mode: the server starts on such a database (it retried for ever), logs the warning once, and serves the schedules and the queue order', { skip: skipFull, timeout: 120_000 }, async (t) => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    const prefix = uniqueName('godups');
    const api = new Api(await freePort());
    let child: Child | null = null;
    t.after(async () => {
      if (child?.alive) await child.stop();
      api.close();
      await db.close().catch(() => undefined);
      const n = streamNames(prefix);
      const w = deliveryQueueNames(prefix);
      await deleteQueues([n.stream, n.dead, w.work, w.dead]).catch(() => undefined);
      await tdb.drop();
    });
    await makeGoDatabase(db);
    const engine = new Child('engine', 'src/main.ts', {
      DATABASE_URL: tdb.url,
      RABBITMQ_URL: AMQP_URL,
      AMQP_PREFIX: prefix,
      JWT_SECRET: SECRET,
      HOST: '127.0.0.1',
      PORT: String(api.port),
      DEMO_DATA: 'false',
      LOG_LEVEL: 'warn',
      ENROLLMENT_WINDOW_MINUTES: '100000',
      WARMUP_REQUESTS: '0',
    });
    child = engine;
    await waitFor(
      async () => {
        if (!engine.alive) throw new Error(`the engine exited (${String(engine.exitCode)}):\n${engine.output()}`);
        return (await api.request('GET', '/ready', null, undefined, 1000)).status === 200;
      },
      60_000,
      'the engine to be ready',
      50,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n--- engine output ---\n${engine.output()}`);
    });
    assert.equal(engine.hasLog((l) => l.msg === 'storage unavailable at start; retrying'), false, engine.output());
    const warning = await engine.waitForLog((l) => l.setAside !== undefined, 1000);
    assert.equal(warning.level, 40);
    assert.equal(warning.setAside, 3);
    assert.deepEqual(warning.rows, WARNED);

    const tokens = new TokenService({ secret: SECRET, ttlSeconds: 3600 });
    for (const [student, held] of Object.entries(SCHEDULES)) {
      const r = await api.request('GET', '/student/course', tokens.issue({ id: Number(student), role: 'student' }));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(heldOf(JSON.stringify(r.body)), held, `student ${student}`);
    }
    const members = await api.request('GET', '/staff/course-students?course_id=610&group_id=1', tokens.issue({ id: 900, role: 'staff' }));
    assert.equal(members.status, 200, JSON.stringify(members.body));
    assert.deepEqual(members.body, { registered_students: [S2, S4], reserved_queue_students: [S3, S5] });
    await checkTables(db);
  });
});
