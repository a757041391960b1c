import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { DomainEvent } from '../src/persistence/types.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { applyEvents, loadState } from '../src/persistence/state-store.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * Probe L, finding 1 (full mode): an operator inserts a section, a student, a staff member and a
 * department straight into PostgreSQL while the engine runs (SPEC 8: such rows are seen after a
 * restart at the latest); before that restart, staff create the same ids through the API, which the
 * engine acknowledges (201). The creations used `ON CONFLICT DO NOTHING`, so the batcher kept the
 * operator's rows without a word, the database and the engine disagreed, and a restart served the
 * operator's values in place of the acknowledged ones (capacity 7 -> 5, a male student female, the
 * password set through the API refused). The acknowledged record is now written over the row, and
 * the rows so replaced are reported for the batcher's warning. A redelivery still changes nothing.
 */

const cause = { requestId: 'operator-rows', actor: 'staff:1', at: Date.parse('2026-12-05T08:00:00Z') };

const events: DomainEvent[] = [
  { type: 'departmentCreated', seq: 1, department: { id: 55, name: 'Made through the API' }, cause },
  { type: 'staffCreated', seq: 1, staff: { id: 77, passwordHash: '$2b$10$api.staff.hash', departmentId: 55 }, cause },
  {
    type: 'studentCreated',
    seq: 1,
    student: { id: 93000010, passwordHash: '$2b$10$api.student.hash', enrollmentStart: Date.parse('2026-12-05T07:00:00Z'), maxUnits: 12, remainingActions: 2, departmentId: 55, entryYear: 1401, gender: 'male' },
    cause,
  },
  {
    type: 'sectionCreated',
    courseId: 930010,
    groupId: 1,
    seq: 1,
    cause,
    info: { courseId: 930010, groupId: 1, forDepartment: 55, name: 'API made', lecturer: 'Dr API', units: 3, examTime: null, classTime: null, notes: 'api' },
    capacity: 7,
    reserveCapacity: 1,
    sexLock: 'male',
    closed: false,
  },
];

describe('rows an operator inserted while the engine ran, then created through the engine', async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);

  test('the acknowledged records are written over them, reported as replaced, and read back after a restart; a redelivery changes nothing', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await migrate(db);
      await db.query(`INSERT INTO departments (id, name) VALUES (55, 'Inserted by the operator')`);
      await db.query(`INSERT INTO staff (id, password, department_id) VALUES (77, '$2b$10$operator.staff.hash', NULL)`);
      await db.query(
        `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
         VALUES (93000010, '$2b$10$operator.student.hash', now(), 20, 3, NULL, 1400, 'female')`,
      );
      await db.query(
        `INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity, class_time, notes)
         VALUES (930010, 1, NULL, 'Op direct live', 'Dr Q', 2, 5, 0, 0, 'db-note')`,
      );

      const replaced: string[] = [];
      assert.equal(await db.transaction((tx) => applyEvents(tx, events, undefined, replaced)), 4);
      assert.deepEqual(replaced.sort(), ['department 55', 'section 930010/1', 'staff member 77', 'student 93000010']);

      const course = (await db.query<Record<string, unknown>>('SELECT name, lecturer, units, capacity, reserve_capacity, sex_lock, notes, for_department FROM courses WHERE course_id = 930010')).rows[0];
      assert.deepEqual(
        { ...course, units: Number(course?.units), for_department: Number(course?.for_department) },
        { name: 'API made', lecturer: 'Dr API', units: 3, capacity: 7, reserve_capacity: 1, sex_lock: 'male', notes: 'api', for_department: 55 },
      );
      const student = (await db.query<Record<string, unknown>>('SELECT password, max_units, remaining_actions, gender, entry_year FROM students WHERE id = 93000010')).rows[0];
      assert.deepEqual(
        { ...student, max_units: Number(student?.max_units), remaining_actions: Number(student?.remaining_actions), entry_year: Number(student?.entry_year) },
        { password: '$2b$10$api.student.hash', max_units: 12, remaining_actions: 2, gender: 'male', entry_year: 1401 },
      );

      // What a restart reads: the acknowledged records.
      const state = await loadState(db);
      assert.equal(state.sections.find((s) => s.info.courseId === 930010)?.capacity, 7);
      assert.equal(state.students.find((s) => s.id === 93000010)?.gender, 'male');
      assert.equal(state.staff.find((s) => s.id === 77)?.passwordHash, '$2b$10$api.staff.hash');

      // A redelivery (the batcher's at-least-once reading) changes nothing, even after a later edit.
      await db.query('UPDATE courses SET capacity = 9 WHERE course_id = 930010');
      const again: string[] = [];
      assert.equal(await db.transaction((tx) => applyEvents(tx, events, undefined, again)), 0);
      assert.deepEqual(again, []);
      assert.equal((await db.query<{ capacity: number }>('SELECT capacity FROM courses WHERE course_id = 930010')).rows[0]?.capacity, 9);
    } finally {
      await db.close();
      await tdb.drop();
    }
  });
});
