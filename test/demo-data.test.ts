import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classTimeEntries, decodeClassTime, isValidClassTime } from '../src/actors/class-time.js';
import { checkWindow } from '../src/actors/student-rules.js';
import {
  DEMO_STAFF_ID,
  DEMO_STUDENT_ID,
  generateDemoData,
  type DemoDataOptions,
} from '../src/demo/demo-data.js';

const NOW = Date.UTC(2025, 8, 1, 9, 30); // a Monday morning
const WINDOW_MS = 60 * 60_000;
const base: DemoDataOptions = { now: NOW, passwordHash: 'student-hash', staffPasswordHash: 'staff-hash' };
const data = generateDemoData(base);

describe('demo data', () => {
  it('is deterministic for a seed and differs across seeds', () => {
    assert.deepEqual(generateDemoData(base), data);
    assert.deepEqual(generateDemoData({ ...base, seed: 7 }), generateDemoData({ ...base, seed: 7 }));
    assert.notDeepEqual(generateDemoData({ ...base, seed: 7 }).sections, data.sections);
  });

  it('has the documented counts', () => {
    assert.equal(data.departments.length, 20);
    assert.equal(data.sections.length, 1500);
    assert.equal(data.students.length, 1000);
    assert.deepEqual(data.staff.map((s) => s.id), [1, 2, 3]);
    const small = generateDemoData({ ...base, sections: 37, students: 12 });
    assert.equal(small.sections.length, 37);
    assert.equal(small.students.length, 12);
  });

  it('has unique ids and consistent references', () => {
    const keys = new Set(data.sections.map((s) => `${s.info.courseId}:${s.info.groupId}`));
    assert.equal(keys.size, data.sections.length);
    const ids = new Set(data.students.map((s) => s.id));
    assert.equal(ids.size, data.students.length);
    assert.equal(data.students[0]?.id, 40000001);
    assert.equal(new Set(data.departments.map((d) => d.id)).size, data.departments.length);
    assert.equal(new Set(data.departments.map((d) => d.name)).size, data.departments.length);
    const deptIds = new Set(data.departments.map((d) => d.id));
    for (const s of data.sections) assert.ok(s.info.forDepartment !== null && deptIds.has(s.info.forDepartment));
    for (const s of data.students) assert.ok(s.departmentId !== null && deptIds.has(s.departmentId));
    // Groups of a course are numbered 1..n without gaps.
    const groups = new Map<number, number[]>();
    for (const s of data.sections) groups.set(s.info.courseId, [...(groups.get(s.info.courseId) ?? []), s.info.groupId]);
    for (const [courseId, g] of groups) {
      assert.deepEqual(g, g.map((_, i) => i + 1), `groups of ${courseId}`);
      assert.ok(g.length >= 1 && g.length <= 4);
    }
    assert.ok(groups.has(40101));
  });

  it('keeps every field in its documented range', () => {
    for (const s of data.sections) {
      const { info } = s;
      assert.ok(info.units >= 1 && info.units <= 4);
      assert.ok(s.capacity >= 20 && s.capacity <= 120);
      assert.ok(s.reserveCapacity >= 0 && s.reserveCapacity <= 20);
      assert.ok(info.name.length > 0 && info.lecturer.length > 0);
      assert.notEqual(s.closed, true);
    }
    for (const st of data.students) {
      assert.equal(st.maxUnits, 20);
      assert.equal(st.remainingActions, 5);
      assert.equal(st.passwordHash, 'student-hash');
    }
    for (const st of data.staff) assert.equal(st.passwordHash, 'staff-hash');
    const genders = new Set(data.students.map((s) => s.gender));
    assert.deepEqual([...genders].sort(), ['female', 'male']);
  });

  it('gives every section a valid class time: 1-2 weekdays, 90 minutes from 8:00-18:00 on the half hour', () => {
    for (const s of data.sections) {
      const packed = s.info.classTime;
      assert.ok(packed !== null && isValidClassTime(packed), `class time of ${s.info.courseId}:${s.info.groupId}`);
      const slot = decodeClassTime(packed);
      const days = classTimeEntries(packed).length;
      assert.ok(days >= 1 && days <= 2);
      assert.ok(slot.startMinute >= 8 * 60 && slot.startMinute <= 18 * 60 && slot.startMinute % 30 === 0);
      assert.equal(slot.endMinute - slot.startMinute, 90);
    }
  });

  it('shares a course exam time across its groups, in a two-week period of fixed slots', () => {
    const exams = new Map<number, number | null>();
    let withExam = 0;
    for (const s of data.sections) {
      const { courseId, examTime } = s.info;
      if (exams.has(courseId)) assert.equal(examTime, exams.get(courseId), `exam of course ${courseId}`);
      else exams.set(courseId, examTime);
      if (examTime !== null) withExam += 1;
    }
    assert.ok(withExam > data.sections.length * 0.75, 'most sections have an exam');
    const times = [...exams.values()].filter((t): t is number => t !== null);
    const first = Math.min(...times);
    const last = Math.max(...times);
    assert.ok(first > NOW);
    assert.ok(last - first < 14 * 24 * 3_600_000);
    for (const t of times) assert.ok([9, 13, 16].includes(new Date(t).getUTCHours()) && t % 3_600_000 === 0);
  });

  it('sex-locks a few sections', () => {
    const locked = data.sections.filter((s) => s.sexLock !== null);
    assert.ok(locked.length > 0.02 * data.sections.length && locked.length < 0.1 * data.sections.length, `${locked.length} locked`);
    assert.ok(locked.some((s) => s.sexLock === 'male') && locked.some((s) => s.sexLock === 'female'));
  });

  it("opens the demo student's window at now and keeps a handful for later windows", () => {
    const demo = data.students.find((s) => s.id === DEMO_STUDENT_ID);
    assert.ok(demo);
    assert.equal(checkWindow(demo, NOW, WINDOW_MS), null);
    const open = data.students.filter((s) => checkWindow(s, NOW, WINDOW_MS) === null);
    const later = data.students.filter((s) => s.enrollmentStart > NOW);
    assert.equal(open.length + later.length, data.students.length);
    assert.ok(later.length >= 5 && later.length <= 50, `${later.length} later`);
    // The later windows open once the demo window has closed, one after another.
    assert.equal(new Set(later.map((s) => s.enrollmentStart)).size, 3);
    for (const s of later) assert.ok(s.enrollmentStart >= demo.enrollmentStart + WINDOW_MS);
    assert.ok(data.staff.some((s) => s.id === DEMO_STAFF_ID));
  });

  it('rejects impossible sizes', () => {
    assert.throws(() => generateDemoData({ ...base, sections: -1 }), RangeError);
    assert.throws(() => generateDemoData({ ...base, students: 1.5 }), RangeError);
    assert.throws(() => generateDemoData({ ...base, sections: 8000 }), RangeError);
    const max = generateDemoData({ ...base, sections: 7920, students: 0 });
    const keys = new Set(max.sections.map((s) => `${s.info.courseId}:${s.info.groupId}`));
    assert.equal(keys.size, 7920);
  });
});
