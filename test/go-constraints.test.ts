import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { SectionEvent } from '../src/actors/types.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { applyEvents, loadState, readRequirements } from '../src/persistence/state-store.js';
import { pino } from 'pino';
import { Engine } from '../src/engine/engine.js';
import { buildApp } from '../src/http/app.js';
import { TokenService } from '../src/http/auth.js';
import type { LoadedState } from '../src/persistence/types.js';
import { outcome, studentMeta, T0, WINDOW_MS } from './support/engine-fixture.js';
import { GO_DATABASE_SQL } from './support/go-database.js';
import { createHttpFixture, expectError, expectStatus, SECRET, TTL_SECONDS } from './support/http-fixture.js';
import { MemoryPersistence } from './support/memory-persistence.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService } from './support/services.js';

const cause = { requestId: 'go-constraints', actor: 'staff:1', at: Date.parse('2026-12-04T12:00:00Z') };

function sectionCreated(courseId: number, classTime: number | null): SectionEvent {
  return {
    type: 'sectionCreated',
    courseId,
    groupId: 1,
    seq: 1,
    cause,
    info: { courseId, groupId: 1, forDepartment: 1, name: 'No class time', lecturer: '', units: 3, examTime: null, classTime, notes: '' },
    capacity: 5,
    reserveCapacity: 1,
    sexLock: null,
    closed: false,
  };
}

describe("the Go service's own database (its NOT NULL columns)", async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);

  test('the engine reads which optional fields it requires, and writes a section without class time as 0 (read back as none)', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await db.query(GO_DATABASE_SQL);
      await migrate(db);
      assert.deepEqual(await readRequirements(db), { sectionDepartment: true, studentDepartment: true, studentEntryYear: true, staffDepartment: true });
      await db.transaction((tx) => applyEvents(tx, [sectionCreated(301, null)]));
      const row = await db.query<{ class_time: number }>('SELECT class_time FROM courses WHERE course_id = 301');
      assert.equal(Number(row.rows[0]?.class_time), 0);
      const state = await loadState(db);
      const s = state.sections.find((x) => x.info.courseId === 301);
      assert.equal(s?.info.classTime, null, 'no class time, as it was created');
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test('a section the Go service left overbooked is loaded as it is, named in a warning at start, and gives no seat until drops bring it under capacity', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await db.query(GO_DATABASE_SQL);
      const start = new Date(T0).toISOString();
      for (let id = 1; id <= 5; id++) {
        await db.query(
          `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
           VALUES ($1, '$2a$10$abcdefghijklmnopqrstuuJ6cL1hmf7c8C3ylGmPl0G6cRO6k4nC6', $2, 20, 5, 1, 1400, 'male')`,
          [id, start],
        );
      }
      await db.query(`INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity, class_time, notes)
                      VALUES (501, 1, 1, 'Overbooked', 'Go', 3, 2, 1, 0, ''), (502, 1, 1, 'Fine', 'Go', 3, 5, 1, 0, '')`);
      // Three students registered in two seats, one queued in the one reserve place, as the Go rows say.
      await db.query(`INSERT INTO enrolled_courses (course_id, group_id, student_id, reserved)
                      VALUES (501, 1, 1, false), (501, 1, 2, false), (501, 1, 3, false), (501, 1, 4, true), (502, 1, 5, false)`);
      await migrate(db);
      const loaded = await loadState(db);
      const persistence = new (class extends MemoryPersistence {
        override async load(): Promise<LoadedState> {
          return structuredClone(loaded);
        }
      })();
      const lines: Record<string, unknown>[] = [];
      const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
      const engine = new Engine({ persistence, logger, enrollmentWindowMs: WINDOW_MS, now: () => T0 + 60_000 });
      await engine.start();
      try {
        const warnings = lines.filter((l) => l.level === 40 && l.overfull !== undefined);
        assert.equal(warnings.length, 1, 'one warning at start');
        assert.equal(warnings[0]?.overfull, 1, 'only the overbooked section');
        assert.deepEqual(warnings[0]?.sections, [{ courseId: 501, groupId: 1, registered: 3, capacity: 2, queued: 1, reserveCapacity: 1 }]);
        assert.deepEqual(engine.sectionMembers(501, 1), { registered: [1, 2, 3], queue: [4] }, 'nobody dropped by the start');
        assert.equal(await outcome(engine.enroll(5, 501, 1, studentMeta(5))), 'SECTION_FULL');
        assert.equal(await outcome(engine.drop(1, 501, studentMeta(1))), 'ok');
        assert.deepEqual(engine.sectionMembers(501, 1), { registered: [2, 3], queue: [4] }, 'still at capacity: no promotion');
        assert.equal(await outcome(engine.drop(2, 501, studentMeta(2))), 'ok');
        assert.deepEqual(engine.sectionMembers(501, 1), { registered: [3, 4], queue: [] }, 'under capacity: the queue head takes the free seat');
      } finally {
        engine.stop();
      }
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test('a stored class_time that does not decode is named in a warning at start, served and checked as no class time, and left as stored', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    const MON = 1 << 23;
    // -1 decoded to seven slots 1023-2912; the inverted one to Monday 700-600 (never overlapping anything).
    const bad = { minusOne: -1, inverted: 700 + 1440 * 600 + MON };
    try {
      await db.query(GO_DATABASE_SQL);
      await db.query(
        `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
         VALUES (1, '$2a$10$abcdefghijklmnopqrstuuJ6cL1hmf7c8C3ylGmPl0G6cRO6k4nC6', $1, 20, 5, 1, 1400, 'male')`,
        [new Date(T0).toISOString()],
      );
      await db.query(`INSERT INTO staff (id, password, department_id) VALUES (900, '$2a$10$abcdefghijklmnopqrstuuJ6cL1hmf7c8C3ylGmPl0G6cRO6k4nC6', 1)`);
      await db.query(
        `INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity, class_time, notes)
         VALUES (601, 1, 1, 'Minus one', 'Go', 3, 5, 1, $1, ''), (602, 1, 1, 'Inverted', 'Go', 3, 5, 1, $2, ''),
                (603, 1, 1, 'Monday late', 'Go', 3, 5, 1, $3, ''), (604, 1, 1, 'Monday 650-680', 'Go', 3, 5, 1, $4, ''),
                (605, 1, 1, 'Monday 600-720', 'Go', 3, 5, 1, $5, '')`,
        [bad.minusOne, bad.inverted, 1100 + 1440 * 1200 + MON, 650 + 1440 * 680 + MON, 600 + 1440 * 720 + MON],
      );
      await migrate(db);
      const loaded = await loadState(db);
      const persistence = new (class extends MemoryPersistence {
        override async load(): Promise<LoadedState> {
          return structuredClone(loaded);
        }
      })();
      const lines: Record<string, unknown>[] = [];
      const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
      const engine = new Engine({ persistence, logger, enrollmentWindowMs: WINDOW_MS, now: () => T0 + 60_000 });
      await engine.start();
      const app = await buildApp({ engine, logger, jwtSecret: SECRET, tokenTtlSeconds: TTL_SECONDS, readiness: async () => ({ ready: true, checks: {} }), now: () => T0 + 60_000 });
      try {
        const warnings = lines.filter((l) => l.level === 40 && l.undecodableClassTime !== undefined);
        assert.equal(warnings.length, 1, 'one warning at start');
        assert.equal(warnings[0]?.undecodableClassTime, 2);
        assert.deepEqual(warnings[0]?.sections, [
          { courseId: 601, groupId: 1, classTime: bad.minusOne },
          { courseId: 602, groupId: 1, classTime: bad.inverted },
        ]);
        assert.match(String(warnings[0]?.msg), /no class time/);

        // Served with no slots (the schema's end_minute <= 1440 holds), the valid one as it is.
        const staff = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => T0 + 60_000 }).issue({ id: 900, role: 'staff' });
        const classTimeOf = async (course: number) => {
          const r = await app.inject({ method: 'GET', url: `/sections/${course}/1`, headers: { authorization: `Bearer ${staff}` } });
          assert.equal(r.statusCode, 200, r.body);
          return (JSON.parse(r.body) as { class_time: unknown }).class_time;
        };
        assert.deepEqual(await classTimeOf(601), []);
        assert.deepEqual(await classTimeOf(602), []);
        assert.deepEqual(await classTimeOf(604), [{ day: 1, start_minute: 650, end_minute: 680 }]);

        // Checked as no class time: -1 clashes with nothing (it clashed with Monday 1100-1200 before).
        assert.equal(await outcome(engine.enroll(1, 603, 1, studentMeta(1))), 'registered');
        assert.equal(await outcome(engine.enroll(1, 601, 1, studentMeta(1))), 'registered');
        assert.equal(await outcome(engine.enroll(1, 602, 1, studentMeta(1))), 'registered');
        assert.equal(await outcome(engine.enroll(1, 604, 1, studentMeta(1))), 'registered');
        // The clash rule itself still holds between real slots.
        assert.equal(await outcome(engine.enroll(1, 605, 1, studentMeta(1))), 'CLASS_CONFLICT');

        // The stored values are kept: the engine's state still equals the database.
        assert.equal(engine.getSection(601, 1).info.classTime, bad.minusOne);
        assert.equal(engine.getSection(602, 1).info.classTime, bad.inverted);
        const rows = await db.query<{ course_id: number; class_time: number }>('SELECT course_id, class_time FROM courses WHERE course_id IN (601, 602) ORDER BY course_id');
        assert.deepEqual(rows.rows.map((r) => Number(r.class_time)), [bad.minusOne, bad.inverted]);
      } finally {
        await app.close();
        engine.stop();
      }
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test("the engine's own schema requires none of them", { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await migrate(db);
      assert.deepEqual(await readRequirements(db), { sectionDepartment: false, studentDepartment: false, studentEntryYear: false, staffDepartment: false });
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test('the API refuses, with 400 and the field named, a section, student or staff member the database could not store; with the field it is created', async () => {
    const fx = await createHttpFixture({
      app: { storageRequirements: { sectionDepartment: true, studentDepartment: true, studentEntryYear: true, staffDepartment: true } },
    });
    try {
      const staff = fx.staffToken();
      const section = { course_id: 401, group_id: 1, name: 'Compilers', units: 3, capacity: 5, reserve_capacity: 1 };
      const noDept = await fx.request('POST', '/sections', { token: staff, body: section });
      expectError(noDept, 400, 'BAD_REQUEST');
      assert.match(String((noDept.body as { reason: string }).reason), /for_department is required/);
      expectStatus(await fx.request('POST', '/sections', { token: staff, body: { ...section, for_department: 1 } }), 201);
      expectError(await fx.request('PATCH', '/sections/401/1', { token: staff, body: { for_department: null } }), 400, 'BAD_REQUEST');

      const student = { id: 700, password: 'correct horse', enrollment_start_time: '2025-09-01T07:30:00Z', max_units: 12, remaining_actions: 2, gender: 'female' };
      expectError(await fx.request('POST', '/students', { token: staff, body: student }), 400, 'BAD_REQUEST');
      expectError(await fx.request('POST', '/students', { token: staff, body: { ...student, department_id: 1 } }), 400, 'BAD_REQUEST');
      expectStatus(await fx.request('POST', '/students', { token: staff, body: { ...student, department_id: 1, entry_year: 2025 } }), 201);
      // The Go service's data holds solar hijri years (1400): a new student of the same kind is accepted.
      expectStatus(await fx.request('POST', '/students', { token: staff, body: { ...student, id: 701, department_id: 1, entry_year: 1403 } }), 201);
      expectError(await fx.request('POST', '/students', { token: staff, body: { ...student, id: 702, department_id: 1, entry_year: 99 } }), 400, 'BAD_REQUEST');

      expectError(await fx.request('POST', '/staff', { token: staff, body: { id: 960, password: 's3cret-staff-pw' } }), 400, 'BAD_REQUEST');
      expectStatus(await fx.request('POST', '/staff', { token: staff, body: { id: 960, password: 's3cret-staff-pw', department_id: 1 } }), 201);
    } finally {
      await fx.close();
    }
  });
});
