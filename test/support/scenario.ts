import { encodeClassTime } from '../../src/actors/class-time.js';
import type { StudentRecord } from '../../src/actors/student-rules.js';
import type { Engine, NewSection, RequestMeta } from '../../src/engine/engine.js';
import type { LoadedState } from '../../src/persistence/types.js';

/** A deterministic workload with every kind of transition, shared by the storage tests. */
export const NOW = Date.UTC(2026, 8, 1, 9, 0);
export const meta = (actor = 'system'): RequestMeta => ({ requestId: `req-${Math.random().toString(36).slice(2)}`, actor });

function section(courseId: number, groupId: number, capacity: number, reserveCapacity: number, day: number): NewSection {
  return {
    info: {
      courseId,
      groupId,
      forDepartment: 1,
      name: `Course ${courseId}`,
      lecturer: 'Dr. Test',
      units: 3,
      examTime: NOW + courseId * 3_600_000,
      classTime: encodeClassTime({ days: 1 << day, startMinute: 600 + groupId * 100, endMinute: 690 + groupId * 100 }),
      notes: '',
    },
    capacity,
    reserveCapacity,
    sexLock: null,
  };
}

function student(id: number): StudentRecord {
  return {
    id,
    passwordHash: '$2b$04$abcdefghijklmnopqrstuuJ0Tzi4S7tL4SG6wHkcp7f3jX.0cCxBG',
    enrollmentStart: NOW - 60_000,
    maxUnits: 20,
    remainingActions: 50,
    departmentId: 1,
    entryYear: 2024,
    gender: id % 2 ? 'male' : 'female',
  };
}

/** A deterministic mix of every kind of transition, with many promotions and moves. */
export async function scenario(engine: Engine): Promise<void> {
  await engine.importBatch(
    {
      departments: [{ id: 1, name: 'Testing' }],
      staff: [{ id: 1, passwordHash: 'x', departmentId: 1 }],
      students: Array.from({ length: 30 }, (_, i) => student(100 + i)),
      sections: [section(10, 1, 3, 3, 1), section(10, 2, 2, 2, 2), section(20, 1, 4, 5, 3), section(30, 1, 2, 0, 4)],
    },
    meta(),
  );
  let rnd = 42;
  const next = (n: number) => {
    rnd = (rnd * 1103515245 + 12345) % 2 ** 31;
    return rnd % n;
  };
  const sections: [number, number][] = [[10, 1], [10, 2], [20, 1], [30, 1]];
  for (let i = 0; i < 300; i++) {
    const sid = 100 + next(30);
    const [c, g] = sections[next(sections.length)] as [number, number];
    const op = next(10);
    const calls: Promise<unknown>[] = [];
    if (op < 4) calls.push(engine.enroll(sid, c, g, meta()));
    else if (op < 6) calls.push(engine.drop(sid, c, meta()));
    else if (op === 6) calls.push(engine.changeGroup(sid, 10, next(2) + 1, meta()));
    else if (op === 7) calls.push(engine.forceEnroll(sid, c, g, meta('staff:1')));
    else if (op === 8) calls.push(engine.changeCapacity(c, g, next(6), meta('staff:1')));
    else calls.push(next(2) ? engine.setClosed(c, g, next(3) === 0, meta()) : engine.updateSection(c, g, { reserveCapacity: next(5), sexLock: null }, meta()));
    await Promise.allSettled(calls);
  }
  // Registrars' corrections of student records, among the students' own drops and enrolls (after
  // the first 300 steps, so what those leave is the same as before corrections existed).
  for (let i = 0; i < 60; i++) {
    const sid = 100 + next(30);
    const [c, g] = sections[next(sections.length)] as [number, number];
    const op = next(4);
    const calls: Promise<unknown>[] = [];
    if (i === 10 || i === 40) calls.push(engine.updateStaff(1, { passwordHash: `$2b$04$staff${i}` }, meta('staff:1')));
    if (op === 0) calls.push(engine.updateStudent(sid, { remainingActions: next(4), maxUnits: 10 + next(10) }, meta('staff:1')));
    else if (op === 1) {
      const changes = { enrollmentStart: NOW - 60_000 * (1 + next(3)), entryYear: next(2) ? 1400 : 2024, passwordHash: `$2b$04$scenario${i}` };
      calls.push(engine.updateStudent(sid, changes, meta('staff:1')));
    } else if (op === 2) calls.push(engine.drop(sid, c, meta()));
    else calls.push(engine.enroll(sid, c, g, meta()));
    await Promise.allSettled(calls);
  }
}

export function normalize(s: LoadedState): unknown {
  return {
    departments: [...s.departments].sort((a, b) => a.id - b.id),
    staff: [...s.staff].sort((a, b) => a.id - b.id),
    students: [...s.students].sort((a, b) => a.id - b.id),
    sections: [...s.sections]
      .sort((a, b) => a.info.courseId - b.info.courseId || a.info.groupId - b.info.groupId),
  };
}

