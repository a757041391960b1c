import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeClassTime } from '../src/actors/class-time.js';
import type { StudentRecord } from '../src/actors/student-rules.js';
import type { Sex } from '../src/actors/types.js';
import type { Engine } from '../src/engine/engine.js';
import type { EngineError } from '../src/errors.js';
import {
  assertStateInvariants,
  createFixture,
  type Fixture,
  makeSection,
  makeStaff,
  makeStudent,
  meta,
  MINUTE,
  outcome,
  sectionOf,
  studentMeta,
  T0,
  WINDOW_MS,
} from './support/engine-fixture.js';

const MON = 1 << 1;
const TUE = 1 << 2;
const EXAM_A = Date.UTC(2026, 0, 10, 9, 0, 0);
const EXAM_B = Date.UTC(2026, 0, 12, 9, 0, 0);
const slot = (days: number, start: number, end: number): number => encodeClassTime({ days, startMinute: start, endMinute: end });

/** A fixture with staff 1 and the given students (ids 1.. by default: male 1-10, female 11-20). */
async function world(students: StudentRecord[] = defaultStudents()): Promise<Fixture> {
  const fx = await createFixture();
  await fx.engine.createStaff(makeStaff(1), meta('system'));
  for (const s of students) await fx.engine.createStudent(s, meta('system'));
  return fx;
}

function defaultStudents(): StudentRecord[] {
  const out: StudentRecord[] = [];
  for (let id = 1; id <= 20; id++) out.push(makeStudent(id, { gender: id <= 10 ? 'male' : 'female' }));
  return out;
}

async function addSection(
  engine: Engine,
  courseId: number,
  groupId: number,
  over: Parameters<typeof makeSection>[2] = {},
): Promise<void> {
  await engine.createSection(makeSection(courseId, groupId, over), meta());
}

const enroll = (e: Engine, s: number, c: number, g: number): Promise<string> => outcome(e.enroll(s, c, g, studentMeta(s)));
const drop = (e: Engine, s: number, c: number): Promise<string> => outcome(e.drop(s, c, studentMeta(s)));
const change = (e: Engine, s: number, c: number, g: number): Promise<string> => outcome(e.changeGroup(s, c, g, studentMeta(s)));
const force = (e: Engine, s: number, c: number, g: number): Promise<string> => outcome(e.forceEnroll(s, c, g, meta()));
const forceDrop = (e: Engine, s: number, c: number, g: number): Promise<string> => outcome(e.forceDrop(s, c, g, meta()));
const members = (e: Engine, c: number, g: number): { registered: number[]; queue: number[] } => e.sectionMembers(c, g);
const actionsOf = (e: Engine, s: number): number => e.getStudent(s)!.remainingActions;

/** Runs `fn`, asserting it changed nothing at all in the engine (the refused-request guarantee). */
async function assertNothingChanges(fx: Fixture, fn: () => Promise<void>): Promise<void> {
  const before = structuredClone(fx.engine.dumpState());
  const logLength = fx.persistence.log.length;
  await fn();
  assert.deepEqual(fx.engine.dumpState(), before, 'engine state changed');
  assert.equal(fx.persistence.log.length, logLength, 'something was written to the log');
}

// -----------------------------------------------------------------------------------------------

describe('enroll, rule 1: the enrollment window', () => {
  test('before start is refused, start is in, one ms before the end is in, the end is out', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 10 });
    fx.clock.now = T0 - 1;
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'ENROLLMENT_WINDOW_CLOSED');
    fx.clock.now = T0;
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    fx.clock.now = T0 + WINDOW_MS - 1;
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'registered');
    fx.clock.now = T0 + WINDOW_MS;
    assert.equal(await enroll(fx.engine, 3, 10, 1), 'ENROLLMENT_WINDOW_CLOSED');
    assert.deepEqual(members(fx.engine, 10, 1).registered, [1, 2]);
  });

  test('each student has their own window', async () => {
    const fx = await world([makeStudent(1), makeStudent(2, { enrollmentStart: T0 + WINDOW_MS })]);
    await addSection(fx.engine, 10, 1);
    fx.clock.now = T0 + WINDOW_MS + MINUTE;
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'ENROLLMENT_WINDOW_CLOSED');
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'registered');
  });

  test('the window is checked first: unknown, closed or locked sections still answer ENROLLMENT_WINDOW_CLOSED', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { closed: true, sexLock: 'female', capacity: 0, reserveCapacity: 0 });
    fx.clock.now = T0 - MINUTE;
    assert.equal(await enroll(fx.engine, 1, 99, 1), 'ENROLLMENT_WINDOW_CLOSED');
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'ENROLLMENT_WINDOW_CLOSED');
  });

  test('an unknown student is refused', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    assert.equal(await enroll(fx.engine, 999, 10, 1), 'STUDENT_NOT_FOUND');
  });
});

describe('enroll, rule 2: the section exists and is open', () => {
  test('unknown course, unknown group: SECTION_NOT_FOUND', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    assert.equal(await enroll(fx.engine, 1, 11, 1), 'SECTION_NOT_FOUND');
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'SECTION_NOT_FOUND');
  });

  test('closed answers SECTION_CLOSED before the sex lock, units, same course, conflicts and seats', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 3 })]);
    await addSection(fx.engine, 10, 1, { info: { examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    // Same course, exam and class clash, over the unit limit, female-only and no seat: closed wins.
    await addSection(fx.engine, 10, 2, {
      closed: true,
      sexLock: 'female',
      capacity: 0,
      reserveCapacity: 0,
      info: { units: 4, examTime: EXAM_A, classTime: slot(MON, 600, 700) },
    });
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'SECTION_CLOSED');
  });
});

describe('enroll, rule 3: the sex lock', () => {
  test('a locked section takes only its sex; an unlocked one takes both', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { sexLock: 'female', capacity: 5 });
    await addSection(fx.engine, 20, 1, { capacity: 5 });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'SEX_LOCK');
    assert.equal(await enroll(fx.engine, 11, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'registered');
    assert.equal(await enroll(fx.engine, 12, 20, 1), 'registered');
  });

  test('the sex lock is checked before units, same course, conflicts and seats', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 3 })]);
    await addSection(fx.engine, 10, 1, { info: { examTime: EXAM_A } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    await addSection(fx.engine, 10, 2, { sexLock: 'female', capacity: 0, reserveCapacity: 0, info: { units: 4, examTime: EXAM_A } });
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'SEX_LOCK');
  });
});

describe('enroll, rule 4: units', () => {
  test('registered and queued sections both count', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 6 }), makeStudent(2), makeStudent(3)]);
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1, info: { units: 3 } });
    await addSection(fx.engine, 20, 1, { info: { units: 3 } });
    await addSection(fx.engine, 30, 1, { info: { units: 3 } });
    await addSection(fx.engine, 40, 1, { info: { units: 1 } });
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'queued');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 40, 1), 'UNITS_EXCEEDED', '3 queued + 3 registered + 1 > 6');
    assert.equal(await drop(fx.engine, 1, 10), 'ok');
    assert.equal(await enroll(fx.engine, 1, 40, 1), 'registered', 'once the queued place is gone it fits');
  });

  test('the limit is inclusive', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 7 })]);
    await addSection(fx.engine, 10, 1, { info: { units: 3 } });
    await addSection(fx.engine, 20, 1, { info: { units: 4 } });
    await addSection(fx.engine, 30, 1, { info: { units: 1 } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 30, 1), 'UNITS_EXCEEDED');
  });

  test('units are checked before same course, conflicts and seats', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 5 })]);
    await addSection(fx.engine, 10, 1, { info: { units: 3, examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    await addSection(fx.engine, 10, 2, { capacity: 0, reserveCapacity: 0, info: { units: 3, examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'UNITS_EXCEEDED');
  });
});

describe('enroll, rule 5: one group per course', () => {
  test('a second group of a held course is refused, whether the first is registered or queued', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 2 });
    await addSection(fx.engine, 10, 2, { capacity: 5 });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'queued');
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'SAME_COURSE');
    assert.equal(await enroll(fx.engine, 2, 10, 2), 'SAME_COURSE');
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'SAME_COURSE', 'the same section again');
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'SAME_COURSE');
  });

  test('same course is checked before exam and class conflicts and seats', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { info: { examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    await addSection(fx.engine, 10, 2, { capacity: 0, reserveCapacity: 0, info: { examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'SAME_COURSE');
  });
});

describe('enroll, rule 6: exam and class conflicts', () => {
  test('the same non-null exam time clashes; null never does; a different time does not', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { info: { examTime: EXAM_A } });
    await addSection(fx.engine, 20, 1, { info: { examTime: EXAM_A } });
    await addSection(fx.engine, 30, 1, { info: { examTime: EXAM_B } });
    await addSection(fx.engine, 40, 1, { info: { examTime: null } });
    await addSection(fx.engine, 50, 1, { info: { examTime: null } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'EXAM_CONFLICT');
    assert.equal(await enroll(fx.engine, 1, 30, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 40, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 50, 1), 'registered', 'two null exam times do not clash');
  });

  test('a queued section counts for conflicts', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, info: { examTime: EXAM_A, classTime: slot(TUE, 0, 60) } });
    await addSection(fx.engine, 20, 1, { info: { examTime: EXAM_A } });
    await addSection(fx.engine, 30, 1, { info: { classTime: slot(TUE, 30, 90) } });
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'queued');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'EXAM_CONFLICT');
    assert.equal(await enroll(fx.engine, 1, 30, 1), 'CLASS_CONFLICT');
  });

  test('class times clash on a shared weekday with overlapping minutes only', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { info: { classTime: slot(MON, 600, 720) } });
    await addSection(fx.engine, 20, 1, { info: { classTime: slot(MON | TUE, 700, 800) } });
    await addSection(fx.engine, 30, 1, { info: { classTime: slot(MON, 720, 800) } });
    await addSection(fx.engine, 40, 1, { info: { classTime: slot(TUE, 600, 720) } });
    await addSection(fx.engine, 50, 1, { info: { classTime: null } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'CLASS_CONFLICT');
    assert.equal(await enroll(fx.engine, 1, 30, 1), 'registered', 'touching intervals do not clash');
    assert.equal(await enroll(fx.engine, 1, 40, 1), 'registered', 'different weekday');
    assert.equal(await enroll(fx.engine, 1, 50, 1), 'registered', 'no class time');
  });

  test('exam is checked before class, and both before the seat', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { info: { examTime: EXAM_A, classTime: slot(MON, 600, 720) } });
    await addSection(fx.engine, 20, 1, { capacity: 0, reserveCapacity: 0, info: { examTime: EXAM_A, classTime: slot(MON, 600, 720) } });
    await addSection(fx.engine, 30, 1, { capacity: 0, reserveCapacity: 0, info: { examTime: EXAM_B, classTime: slot(MON, 600, 720) } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'EXAM_CONFLICT');
    assert.equal(await enroll(fx.engine, 1, 30, 1), 'CLASS_CONFLICT');
  });
});

describe('enroll, rule 7: seat, reserve queue, full', () => {
  test('seats first, then the queue in arrival order, then SECTION_FULL', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 2, reserveCapacity: 3 });
    const got: string[] = [];
    for (const s of [1, 2, 3, 4, 5, 6, 7]) got.push(await enroll(fx.engine, s, 10, 1));
    assert.deepEqual(got, ['registered', 'registered', 'queued', 'queued', 'queued', 'SECTION_FULL', 'SECTION_FULL']);
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 2], queue: [3, 4, 5] });
    const held = fx.engine.studentSections(4);
    assert.equal(held.length, 1);
    assert.equal(held[0]!.status, 'queued');
    assert.equal(held[0]!.queuePosition, 2);
    assert.deepEqual(fx.engine.studentSections(6), [], 'a refused student holds nothing');
    const view = fx.engine.getSection(10, 1);
    assert.equal(view.state, 'open.full');
    assert.equal(view.registeredCount, 2);
    assert.equal(view.queueLength, 3);
  });

  test('the queue is first come, first served through drops', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 3 });
    for (const s of [1, 2, 3, 4]) await enroll(fx.engine, s, 10, 1);
    assert.equal(await drop(fx.engine, 1, 10), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [2], queue: [3, 4] });
    assert.equal(await drop(fx.engine, 2, 10), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [3], queue: [4] });
  });

  test('visible states follow the numbers', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1 });
    assert.equal(fx.engine.getSection(10, 1).state, 'open.seatsAvailable');
    await enroll(fx.engine, 1, 10, 1);
    assert.equal(fx.engine.getSection(10, 1).state, 'open.reserveOnly');
    await enroll(fx.engine, 2, 10, 1);
    assert.equal(fx.engine.getSection(10, 1).state, 'open.full');
    await fx.engine.setClosed(10, 1, true, meta());
    assert.equal(fx.engine.getSection(10, 1).state, 'closed');
    await fx.engine.setClosed(10, 1, false, meta());
    assert.equal(fx.engine.getSection(10, 1).state, 'open.full');
    await drop(fx.engine, 2, 10);
    assert.equal(fx.engine.getSection(10, 1).state, 'open.reserveOnly');
    await drop(fx.engine, 1, 10);
    assert.equal(fx.engine.getSection(10, 1).state, 'open.seatsAvailable');
  });
});

// -----------------------------------------------------------------------------------------------

describe('drop', () => {
  test('needs the window: before and after it, even for a held course', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    await enroll(fx.engine, 1, 10, 1);
    await assertNothingChanges(fx, async () => {
      fx.clock.now = T0 - 1;
      assert.equal(await drop(fx.engine, 1, 10), 'ENROLLMENT_WINDOW_CLOSED');
      fx.clock.now = T0 + WINDOW_MS;
      assert.equal(await drop(fx.engine, 1, 10), 'ENROLLMENT_WINDOW_CLOSED');
    });
  });

  test('needs a remaining action; the window is checked first', async () => {
    const fx = await world([makeStudent(1, { remainingActions: 1 })]);
    await addSection(fx.engine, 10, 1);
    await addSection(fx.engine, 20, 1);
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 1, 20, 1);
    assert.equal(await drop(fx.engine, 1, 10), 'ok');
    assert.equal(actionsOf(fx.engine, 1), 0);
    await assertNothingChanges(fx, async () => {
      assert.equal(await drop(fx.engine, 1, 20), 'NO_ACTIONS_LEFT');
      assert.equal(await drop(fx.engine, 1, 30), 'NO_ACTIONS_LEFT');
      fx.clock.now = T0 + WINDOW_MS;
      assert.equal(await drop(fx.engine, 1, 20), 'ENROLLMENT_WINDOW_CLOSED');
    });
  });

  test('a course not held is NOT_ENROLLED and uses no action', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await drop(fx.engine, 1, 10), 'NOT_ENROLLED');
      assert.equal(await drop(fx.engine, 1, 77), 'NOT_ENROLLED');
    });
  });

  test('uses exactly one action, durably', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    await enroll(fx.engine, 1, 10, 1);
    assert.equal(await drop(fx.engine, 1, 10), 'ok');
    assert.equal(actionsOf(fx.engine, 1), 4);
    assert.deepEqual(fx.engine.studentSections(1), []);
    const engine = await fx.restart();
    assert.equal(actionsOf(engine, 1), 4);
  });

  test('dropping a registered student promotes the queue head before the reply', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 2, reserveCapacity: 2 });
    for (const s of [1, 2, 3, 4]) await enroll(fx.engine, s, 10, 1);
    assert.equal(await drop(fx.engine, 2, 10), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 3], queue: [4] });
    assert.equal(fx.engine.studentSections(3)[0]!.status, 'registered');
    assert.equal(fx.engine.studentSections(4)[0]!.queuePosition, 1);
    const promoted = fx.persistence.log.filter((e) => e.type === 'studentPromoted');
    assert.equal(promoted.length, 1, 'the promotion is a durable transition');
    assert.equal(actionsOf(fx.engine, 3), 5, 'the promoted student used no action');
  });

  test('dropping a queued student promotes nobody and uses an action', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 3 });
    for (const s of [1, 2, 3, 4]) await enroll(fx.engine, s, 10, 1);
    assert.equal(await drop(fx.engine, 3, 10), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1], queue: [2, 4] });
    assert.equal(actionsOf(fx.engine, 3), 4);
    assert.equal(fx.persistence.log.filter((e) => e.type === 'studentPromoted').length, 0);
  });

  test('dropping from a closed section still frees the seat and promotes', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1 });
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    await fx.engine.setClosed(10, 1, true, meta());
    assert.equal(await drop(fx.engine, 1, 10), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [2], queue: [] });
  });
});

// -----------------------------------------------------------------------------------------------

describe('change group', () => {
  async function twoGroups(over2: Parameters<typeof makeSection>[2] = {}, students?: StudentRecord[]): Promise<Fixture> {
    const fx = await world(students);
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 2, info: { classTime: slot(MON, 600, 700), examTime: EXAM_A } });
    await addSection(fx.engine, 10, 2, { capacity: 1, reserveCapacity: 1, ...over2 });
    return fx;
  }

  test('moves the student, promotes the old queue, uses one action', async () => {
    const fx = await twoGroups();
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    await enroll(fx.engine, 3, 10, 1);
    assert.equal(await change(fx.engine, 1, 10, 2), 'registered');
    assert.deepEqual(members(fx.engine, 10, 2), { registered: [1], queue: [] });
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [2], queue: [3] });
    assert.equal(actionsOf(fx.engine, 1), 4);
    assert.equal(actionsOf(fx.engine, 2), 5);
    assert.deepEqual(fx.engine.studentSections(1).map((h) => [h.section.info.groupId, h.status]), [[2, 'registered']]);
    // The place in the target is taken first: the target's events precede the old group's in the log.
    const last = fx.persistence.log.slice(-4).map((e) => e.type);
    assert.deepEqual(last, ['studentEnrolled', 'studentDropped', 'studentPromoted', 'actionUsed']);
  });

  test('lands in the target queue when only a reserve place is left', async () => {
    const fx = await twoGroups();
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    await enroll(fx.engine, 3, 10, 2);
    assert.equal(await change(fx.engine, 1, 10, 2), 'queued');
    assert.deepEqual(members(fx.engine, 10, 2), { registered: [3], queue: [1] });
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [2], queue: [] });
    assert.equal(fx.engine.studentSections(1)[0]!.queuePosition, 1);
  });

  test('a queued student can move; the old group promotes nobody', async () => {
    const fx = await twoGroups();
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    await enroll(fx.engine, 3, 10, 1);
    assert.equal(await change(fx.engine, 2, 10, 2), 'registered');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1], queue: [3] });
    assert.deepEqual(members(fx.engine, 10, 2), { registered: [2], queue: [] });
  });

  for (const [name, over2, expected] of [
    ['full', { capacity: 0, reserveCapacity: 0 }, 'SECTION_FULL'],
    ['sex-locked', { sexLock: 'female' as Sex }, 'SEX_LOCK'],
    ['closed', { closed: true }, 'SECTION_CLOSED'],
    ['in exam conflict', { info: { examTime: EXAM_B } }, 'EXAM_CONFLICT'],
    ['in class conflict', { info: { classTime: slot(TUE, 0, 100) } }, 'CLASS_CONFLICT'],
    ['over the unit limit', { info: { units: 30 } }, 'UNITS_EXCEEDED'],
  ] as const) {
    test(`a target that is ${name} refuses and nothing changes, no action used`, async () => {
      const fx = await twoGroups(over2);
      await addSection(fx.engine, 20, 1, { info: { examTime: EXAM_B, classTime: slot(TUE, 50, 150) } });
      await enroll(fx.engine, 1, 10, 1);
      await enroll(fx.engine, 2, 10, 1);
      assert.equal(await enroll(fx.engine, 1, 20, 1), 'registered');
      await assertNothingChanges(fx, async () => {
        assert.equal(await change(fx.engine, 1, 10, 2), expected);
      });
      assert.equal(actionsOf(fx.engine, 1), 5);
      assert.deepEqual(members(fx.engine, 10, 1), { registered: [1], queue: [2] });
    });
  }

  test("the old group's own exam, class time and units do not count against the move", async () => {
    const fx = await twoGroups(
      { info: { classTime: slot(MON, 600, 700), examTime: EXAM_A } },
      [makeStudent(1, { maxUnits: 3 })],
    );
    await enroll(fx.engine, 1, 10, 1);
    assert.equal(await change(fx.engine, 1, 10, 2), 'registered');
  });

  test('SAME_GROUP, NOT_ENROLLED, unknown target, no actions, window: refused, nothing changes', async () => {
    const fx = await twoGroups({}, [makeStudent(1), makeStudent(2, { remainingActions: 0 }), makeStudent(3)]);
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await change(fx.engine, 1, 10, 1), 'SAME_GROUP');
      assert.equal(await change(fx.engine, 3, 10, 2), 'NOT_ENROLLED');
      assert.equal(await change(fx.engine, 1, 20, 1), 'NOT_ENROLLED');
      assert.equal(await change(fx.engine, 1, 10, 9), 'SECTION_NOT_FOUND');
      assert.equal(await change(fx.engine, 2, 10, 2), 'NO_ACTIONS_LEFT');
      fx.clock.now = T0 + WINDOW_MS;
      assert.equal(await change(fx.engine, 1, 10, 2), 'ENROLLMENT_WINDOW_CLOSED');
    });
  });
});

// -----------------------------------------------------------------------------------------------

describe('force enroll (staff)', () => {
  test('skips the student rules: window, closed, sex lock, units, conflicts', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 3, remainingActions: 0 })]);
    await addSection(fx.engine, 10, 1, { info: { examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    await addSection(fx.engine, 20, 1, { closed: true, sexLock: 'female', info: { examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    await enroll(fx.engine, 1, 10, 1);
    fx.clock.now = T0 + 10 * WINDOW_MS;
    assert.equal(await force(fx.engine, 1, 20, 1), 'ok');
    assert.deepEqual(members(fx.engine, 20, 1).registered, [1]);
    assert.equal(actionsOf(fx.engine, 1), 0, 'no action used');
  });

  test('a full section grows by exactly one seat; the queue keeps waiting', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1 });
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    assert.equal(await force(fx.engine, 3, 10, 1), 'ok');
    assert.equal(fx.engine.getSection(10, 1).capacity, 2);
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 3], queue: [2] });
  });

  test('a free seat is taken without growing the section', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 3 });
    assert.equal(await force(fx.engine, 3, 10, 1), 'ok');
    assert.equal(fx.engine.getSection(10, 1).capacity, 3);
  });

  test('a queued student is promoted', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 2 });
    for (const s of [1, 2, 3]) await enroll(fx.engine, s, 10, 1);
    assert.equal(await force(fx.engine, 3, 10, 1), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 3], queue: [2] });
    assert.equal(fx.engine.getSection(10, 1).capacity, 2);
  });

  test('refuses a second group of the same course and a student already registered', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1 });
    await addSection(fx.engine, 10, 2);
    await enroll(fx.engine, 1, 10, 1);
    await enroll(fx.engine, 2, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await force(fx.engine, 1, 10, 2), 'SAME_COURSE');
      assert.equal(await force(fx.engine, 2, 10, 2), 'SAME_COURSE');
      assert.equal(await force(fx.engine, 1, 10, 1), 'ALREADY_IN_SECTION');
      assert.equal(await force(fx.engine, 1, 99, 1), 'SECTION_NOT_FOUND');
      assert.equal(await force(fx.engine, 999, 10, 2), 'STUDENT_NOT_FOUND');
    });
  });
});

describe('force drop (staff)', () => {
  test('uses no action, works outside the window, promotes the queue head', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 2 });
    for (const s of [1, 2, 3]) await enroll(fx.engine, s, 10, 1);
    fx.clock.now = T0 + 5 * WINDOW_MS;
    assert.equal(await forceDrop(fx.engine, 1, 10, 1), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [2], queue: [3] });
    assert.equal(actionsOf(fx.engine, 1), 5);
    assert.deepEqual(fx.engine.studentSections(1), []);
    // The student may enroll elsewhere in the course afterwards (the index forgot the group).
    fx.clock.now = T0 + MINUTE;
    await addSection(fx.engine, 10, 2);
    assert.equal(await enroll(fx.engine, 1, 10, 2), 'registered');
  });

  test('a queued student is removed without promotion; others keep their order', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 3 });
    for (const s of [1, 2, 3, 4]) await enroll(fx.engine, s, 10, 1);
    assert.equal(await forceDrop(fx.engine, 3, 10, 1), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1], queue: [2, 4] });
  });

  test('refuses a student not in the section, and unknown sections', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    await addSection(fx.engine, 10, 2);
    await enroll(fx.engine, 1, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await forceDrop(fx.engine, 1, 10, 2), 'NOT_ENROLLED');
      assert.equal(await forceDrop(fx.engine, 2, 10, 1), 'NOT_ENROLLED');
      assert.equal(await forceDrop(fx.engine, 1, 11, 1), 'SECTION_NOT_FOUND');
    });
  });
});

// -----------------------------------------------------------------------------------------------

describe('section settings (staff)', () => {
  test('capacity cannot go below the registered count; it may go down to it', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 5 });
    for (const s of [1, 2, 3]) await enroll(fx.engine, s, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await outcome(fx.engine.changeCapacity(10, 1, 2, meta())), 'CAPACITY_BELOW_REGISTERED');
      assert.equal(await outcome(fx.engine.changeCapacity(10, 1, -1, meta())), 'BAD_REQUEST');
      assert.equal(await outcome(fx.engine.changeCapacity(10, 9, 9, meta())), 'SECTION_NOT_FOUND');
    });
    assert.equal(await outcome(fx.engine.changeCapacity(10, 1, 3, meta())), 'ok');
    assert.equal(fx.engine.getSection(10, 1).capacity, 3);
    assert.equal(await enroll(fx.engine, 4, 10, 1), 'queued');
  });

  test('growth promotes min(growth, queue length) students, in queue order', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 4 });
    for (const s of [1, 2, 3, 4, 5]) await enroll(fx.engine, s, 10, 1);
    await fx.engine.changeCapacity(10, 1, 3, meta());
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 2, 3], queue: [4, 5] });
    await fx.engine.changeCapacity(10, 1, 10, meta());
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 2, 3, 4, 5], queue: [] });
    assert.equal(fx.engine.getSection(10, 1).capacity, 10);
  });

  test('reserve capacity cannot go below the queue length', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 3 });
    for (const s of [1, 2, 3]) await enroll(fx.engine, s, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await outcome(fx.engine.updateSection(10, 1, { reserveCapacity: 1 }, meta())), 'RESERVE_BELOW_QUEUED');
    });
    assert.equal(await outcome(fx.engine.updateSection(10, 1, { reserveCapacity: 2 }, meta())), 'ok');
    assert.equal(await enroll(fx.engine, 4, 10, 1), 'SECTION_FULL');
    await fx.engine.updateSection(10, 1, { reserveCapacity: 3 }, meta());
    assert.equal(await enroll(fx.engine, 4, 10, 1), 'queued');
  });

  test('a reserve capacity below the queue is allowed when the same patch grows capacity enough to promote the rest', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 3 });
    for (const s of [1, 2, 3, 4]) await enroll(fx.engine, s, 10, 1);
    await assertNothingChanges(fx, async () => {
      // Growth by one promotes 2, leaving 3 and 4 queued: a reserve of 1 is still too small.
      assert.equal(await outcome(fx.engine.updateSection(10, 1, { capacity: 2, reserveCapacity: 1 }, meta())), 'RESERVE_BELOW_QUEUED');
    });
    const logLength = fx.persistence.log.length;
    assert.equal(await outcome(fx.engine.updateSection(10, 1, { capacity: 3, reserveCapacity: 1 }, meta())), 'ok');
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [1, 2, 3], queue: [4] });
    const s = fx.engine.getSection(10, 1);
    assert.deepEqual([s.capacity, s.reserveCapacity], [3, 1]);
    // In the log the promotions come before the smaller reserve: no event leaves the queue over it.
    const types = fx.persistence.log.slice(logLength).map((e) => e.type);
    assert.deepEqual(types, ['capacityChanged', 'studentPromoted', 'studentPromoted', 'reserveCapacityChanged']);
  });

  test('new units, exam or class time that would break a member\'s rules are refused unless forced', async () => {
    const fx = await world([makeStudent(1, { maxUnits: 6 }), makeStudent(2, { maxUnits: 20 })]);
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1, info: { units: 3, examTime: EXAM_A, classTime: slot(MON, 600, 700) } });
    await addSection(fx.engine, 20, 1, { info: { units: 3, examTime: EXAM_B, classTime: slot(TUE, 600, 700) } });
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await enroll(fx.engine, 1, 20, 1), 'registered');
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'queued'); // a queued member counts too
    assert.equal(await enroll(fx.engine, 2, 20, 1), 'registered');
    await assertNothingChanges(fx, async () => {
      const units = fx.engine.updateSection(20, 1, { info: { units: 4 }, capacity: 50 }, meta());
      await assert.rejects(units, (err: EngineError) => err.code === 'MEMBER_RULES_CONFLICT' && /student 1\b/.test(err.message) && /7 units/.test(err.message));
      assert.equal(await outcome(fx.engine.updateSection(20, 1, { info: { examTime: EXAM_A } }, meta())), 'MEMBER_RULES_CONFLICT');
      assert.equal(await outcome(fx.engine.updateSection(20, 1, { info: { classTime: slot(MON | TUE, 650, 750) } }, meta())), 'MEMBER_RULES_CONFLICT');
      // Student 2, queued in 10-1, has room for 4 units but not for the clash.
      assert.equal(await outcome(fx.engine.updateSection(10, 1, { info: { classTime: slot(TUE, 650, 750) } }, meta())), 'MEMBER_RULES_CONFLICT');
    });
    // What breaks nobody's rules is applied: touching times, another day, fewer units.
    assert.equal(await outcome(fx.engine.updateSection(20, 1, { info: { classTime: slot(TUE | MON, 700, 800), units: 2 } }, meta())), 'ok');
    // Staff force: applied as asked.
    assert.equal(await outcome(fx.engine.updateSection(20, 1, { info: { units: 5 }, force: true }, meta())), 'ok');
    assert.equal(fx.engine.getSection(20, 1).info.units, 5);
    // A member already over the limit (forced) does not block a change that does not make it worse for anyone else.
    assert.equal(await outcome(fx.engine.updateSection(20, 1, { info: { examTime: EXAM_B + 3_600_000 } }, meta())), 'ok');
  });

  test('a sex lock that would exclude a registered or queued member is refused, with the rest of the patch', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 1, reserveCapacity: 1 });
    await enroll(fx.engine, 11, 10, 1);
    await enroll(fx.engine, 1, 10, 1);
    await assertNothingChanges(fx, async () => {
      assert.equal(await outcome(fx.engine.updateSection(10, 1, { sexLock: 'female', reserveCapacity: 5 }, meta())), 'SEX_LOCK_CONFLICT');
      assert.equal(await outcome(fx.engine.updateSection(10, 1, { sexLock: 'male' }, meta())), 'SEX_LOCK_CONFLICT');
    });
    await forceDrop(fx.engine, 1, 10, 1);
    assert.equal(await outcome(fx.engine.updateSection(10, 1, { sexLock: 'female' }, meta())), 'ok');
    assert.equal(fx.engine.getSection(10, 1).sexLock, 'female');
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'SEX_LOCK');
    assert.equal(await enroll(fx.engine, 12, 10, 1), 'queued');
    await fx.engine.updateSection(10, 1, { sexLock: null }, meta());
    assert.equal(await enroll(fx.engine, 2, 10, 1), 'SECTION_FULL');
  });

  test('close refuses enrolls and moves into the section; reopen lets them in again', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    await addSection(fx.engine, 10, 2);
    await enroll(fx.engine, 2, 10, 2);
    await fx.engine.setClosed(10, 1, true, meta());
    assert.equal(fx.engine.getSection(10, 1).closed, true);
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'SECTION_CLOSED');
    assert.equal(await change(fx.engine, 2, 10, 1), 'SECTION_CLOSED');
    await fx.engine.setClosed(10, 1, true, meta());
    await fx.engine.setClosed(10, 1, false, meta());
    assert.equal(fx.engine.getSection(10, 1).closed, false);
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
    assert.equal(await change(fx.engine, 2, 10, 1), 'registered');
  });

  test('a section created closed refuses until reopened', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { closed: true });
    assert.equal(fx.engine.getSection(10, 1).state, 'closed');
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'SECTION_CLOSED');
    await fx.engine.setClosed(10, 1, false, meta());
    assert.equal(await enroll(fx.engine, 1, 10, 1), 'registered');
  });
});

describe('creating sections, students and staff', () => {
  test('duplicates answer ALREADY_EXISTS and change nothing', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1);
    await fx.engine.createDepartment({ id: 1, name: 'CS' }, meta());
    await assertNothingChanges(fx, async () => {
      assert.equal(await outcome(fx.engine.createSection(makeSection(10, 1, { capacity: 99 }), meta())), 'ALREADY_EXISTS');
      assert.equal(await outcome(fx.engine.createStudent(makeStudent(1, { maxUnits: 99 }), meta())), 'ALREADY_EXISTS');
      assert.equal(await outcome(fx.engine.createStaff(makeStaff(1), meta())), 'ALREADY_EXISTS');
      assert.equal(await outcome(fx.engine.createDepartment({ id: 1, name: 'Other' }, meta())), 'ALREADY_EXISTS');
    });
    assert.equal(await outcome(fx.engine.createSection(makeSection(10, 2), meta())), 'ok', 'another group of the course is new');
  });

  test('students, staff and sections added while running are usable at once', async () => {
    const fx = await world([]);
    await addSection(fx.engine, 10, 1);
    await fx.engine.createStudent(makeStudent(42), meta());
    assert.equal(await enroll(fx.engine, 42, 10, 1), 'registered');
    await fx.engine.createStaff(makeStaff(7), meta());
    assert.ok(fx.engine.getStaff(7));
    await addSection(fx.engine, 20, 1);
    assert.equal(await enroll(fx.engine, 42, 20, 1), 'registered');
  });
});

// -----------------------------------------------------------------------------------------------

describe('durability', () => {
  /** A busy little world: two sections with queues, actions used, a forced student. */
  async function busy(): Promise<Fixture> {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 2, reserveCapacity: 3, info: { examTime: EXAM_A } });
    await addSection(fx.engine, 10, 2, { capacity: 1, reserveCapacity: 3 });
    await addSection(fx.engine, 20, 1, { capacity: 1, reserveCapacity: 2, info: { classTime: slot(MON, 600, 700) } });
    await addSection(fx.engine, 40, 1, { capacity: 5 });
    for (const s of [5, 3, 1, 4, 2]) await enroll(fx.engine, s, 10, 1);
    for (const s of [6, 7, 8]) await enroll(fx.engine, s, 10, 2);
    for (const s of [9, 3, 11]) await enroll(fx.engine, s, 20, 1);
    await drop(fx.engine, 9, 20);
    await change(fx.engine, 4, 10, 2);
    await force(fx.engine, 12, 10, 2);
    await fx.engine.changeCapacity(10, 1, 3, meta());
    return fx;
  }

  const requests: [string, (fx: Fixture) => Promise<unknown>, string][] = [
    ['enroll (seat)', (fx) => fx.engine.enroll(14, 40, 1, studentMeta(14)), 'registered'],
    ['enroll (queue)', (fx) => fx.engine.enroll(13, 20, 1, studentMeta(13)), 'queued'],
    ['drop with promotion', (fx) => fx.engine.drop(5, 10, studentMeta(5)), 'ok'],
    ['change group with promotion', (fx) => fx.engine.changeGroup(6, 10, 1, studentMeta(6)), 'queued'],
    ['force enroll', (fx) => fx.engine.forceEnroll(15, 10, 2, meta()), 'ok'],
    ['force drop', (fx) => fx.engine.forceDrop(6, 10, 2, meta()), 'ok'],
    ['change capacity', (fx) => fx.engine.changeCapacity(10, 2, 5, meta()), 'ok'],
    ['update section', (fx) => fx.engine.updateSection(10, 1, { reserveCapacity: 9, info: { lecturer: 'New' } }, meta()), 'ok'],
    ['close', (fx) => fx.engine.setClosed(20, 1, true, meta()), 'ok'],
    ['create section', (fx) => fx.engine.createSection(makeSection(30, 1), meta()), 'ok'],
    ['create student', (fx) => fx.engine.createStudent(makeStudent(50), meta()), 'ok'],
    ['create staff', (fx) => fx.engine.createStaff(makeStaff(50), meta()), 'ok'],
  ];

  test('the busy scenario is what the failure tests assume', async () => {
    const fx = await busy();
    assert.deepEqual(members(fx.engine, 10, 1), { registered: [5, 3, 1], queue: [2] });
    assert.deepEqual(members(fx.engine, 10, 2), { registered: [6, 12], queue: [7, 8, 4] });
    assert.deepEqual(members(fx.engine, 20, 1), { registered: [3], queue: [11] });
  });

  for (const [name, run, success] of requests) {
    test(`a failed append of "${name}" answers UNAVAILABLE and leaves the state as it was`, async () => {
      const fx = await busy();
      const before = structuredClone(fx.engine.dumpState());
      const logLength = fx.persistence.log.length;
      fx.persistence.failNext = 1;
      assert.equal(await outcome(run(fx)), 'UNAVAILABLE');
      assert.deepEqual(fx.engine.dumpState(), before, 'state right after the failed reply');
      assert.equal(fx.persistence.log.length, logLength);
      // Storage is back: the same request now succeeds, and the state survives a restart.
      assert.equal(await outcome(run(fx)), success);
      assertStateInvariants(fx.engine.dumpState(), new Set([12, 15]));
      const after = structuredClone(fx.engine.dumpState());
      const engine = await fx.restart();
      assert.deepEqual(engine.dumpState(), after);
    });
  }

  test('requests in flight behind a failed append fail too, and nothing undurable survives', async () => {
    const fx = await busy();
    const before = structuredClone(fx.engine.dumpState());
    fx.persistence.failNext = 1;
    const results = await Promise.all([
      outcome(fx.engine.enroll(13, 20, 1, studentMeta(13))),
      outcome(fx.engine.enroll(14, 20, 1, studentMeta(14))),
      outcome(fx.engine.drop(5, 10, studentMeta(5))),
    ]);
    assert.equal(results[0], 'UNAVAILABLE');
    const state = fx.engine.dumpState();
    // Whatever was acknowledged is in the log and the state is exactly the log's.
    const fresh = await createFixture({ persistence: fx.persistence });
    assert.deepEqual(fresh.engine.dumpState(), state);
    if (results.every((r) => r === 'UNAVAILABLE')) assert.deepEqual(state, before);
  });

  test('"already so" is not acknowledged while the change it rests on is still in flight and then fails', async () => {
    const fx = await busy();
    const before = structuredClone(fx.engine.dumpState());
    fx.persistence.failNext = 1;
    // The second request finds capacity 4 / closed already in memory: a no-op, but only if the
    // first one's write succeeds. It fails, so "ok" would acknowledge a change that never happened.
    const replies = await Promise.all([
      outcome(fx.engine.changeCapacity(40, 1, 7, meta())),
      outcome(fx.engine.changeCapacity(40, 1, 7, meta())),
      outcome(fx.engine.setClosed(20, 1, true, meta())),
      outcome(fx.engine.setClosed(20, 1, true, meta())),
    ]);
    assert.deepEqual(replies, ['UNAVAILABLE', 'UNAVAILABLE', 'UNAVAILABLE', 'UNAVAILABLE']);
    assert.deepEqual(fx.engine.dumpState(), before);
    assert.equal(fx.engine.getSection(40, 1).capacity, 5);
    // When the write succeeds the no-op is fine.
    assert.deepEqual(
      await Promise.all([outcome(fx.engine.changeCapacity(40, 1, 7, meta())), outcome(fx.engine.changeCapacity(40, 1, 7, meta()))]),
      ['ok', 'ok'],
    );
    assert.equal(fx.engine.getSection(40, 1).capacity, 7);
  });

  test('a restart rebuilds exactly the same state, queue order included, and carries on identically', async () => {
    const fx = await busy();
    const before = structuredClone(fx.engine.dumpState());
    assertStateInvariants(before, new Set([12]));
    assert.ok(sectionOf(before, 10, 2).queue.length >= 2, 'the scenario has a real queue');
    const engine = await fx.restart();
    assert.deepEqual(engine.dumpState(), before);
    // Indexes rebuilt too: the same rules answer the same way after the restart.
    assert.equal(await enroll(engine, 4, 10, 1), 'SAME_COURSE');
    const queueHead = sectionOf(before, 10, 2).queue[0];
    const registered = sectionOf(before, 10, 2).registered[0]!;
    assert.equal(await forceDrop(engine, registered, 10, 2), 'ok');
    assert.equal(engine.sectionMembers(10, 2).registered.at(-1), queueHead);
    const again = structuredClone(engine.dumpState());
    assert.deepEqual((await fx.restart()).dumpState(), again);
  });
});

// -----------------------------------------------------------------------------------------------

describe('concurrency', () => {
  test('a rush of concurrent enrolls never overbooks; counts match the replies', async () => {
    const students = Array.from({ length: 40 }, (_v, i) => makeStudent(i + 1, { gender: i % 2 ? 'female' : 'male' }));
    const fx = await world(students);
    await addSection(fx.engine, 10, 1, { capacity: 3, reserveCapacity: 4 });
    const replies = await Promise.all(students.map((s) => enroll(fx.engine, s.id, 10, 1)));
    const count = (r: string): number => replies.filter((x) => x === r).length;
    assert.equal(count('registered'), 3);
    assert.equal(count('queued'), 4);
    assert.equal(count('SECTION_FULL'), 33);
    const m = members(fx.engine, 10, 1);
    assert.deepEqual([...m.registered].sort((a, b) => a - b), students.filter((_s, i) => replies[i] === 'registered').map((s) => s.id));
    assert.deepEqual([...m.queue].sort((a, b) => a - b), students.filter((_s, i) => replies[i] === 'queued').map((s) => s.id));
    // The queue order is the order the log made durable.
    const queuedInLog = fx.persistence.log.flatMap((e) => (e.type === 'studentQueued' ? [e.studentId] : []));
    assert.deepEqual(m.queue, queuedInLog);
    assertStateInvariants(fx.engine.dumpState());
  });

  test('concurrent enrolls, drops, moves and staff changes keep every invariant', async () => {
    const students = Array.from({ length: 30 }, (_v, i) => makeStudent(i + 1, { gender: i % 3 ? 'male' : 'female' }));
    const fx = await world(students);
    await addSection(fx.engine, 10, 1, { capacity: 2, reserveCapacity: 2 });
    await addSection(fx.engine, 10, 2, { capacity: 2, reserveCapacity: 2 });
    await addSection(fx.engine, 20, 1, { capacity: 3, reserveCapacity: 1 });
    for (const s of [1, 2, 3, 4]) await enroll(fx.engine, s, 10, 1);
    const work: Promise<string>[] = [];
    for (const s of students) {
      const [course, group] = s.id % 3 === 0 ? [10, 1] : s.id % 3 === 1 ? [10, 2] : [20, 1];
      work.push(enroll(fx.engine, s.id, course, group));
      if (s.id % 5 === 0) work.push(drop(fx.engine, s.id, 10));
      if (s.id % 3 === 0) work.push(change(fx.engine, s.id, 10, 2));
      if (s.id % 7 === 0) work.push(outcome(fx.engine.changeCapacity(10, 1, 3, meta())));
    }
    work.push(drop(fx.engine, 1, 10), drop(fx.engine, 3, 10), force(fx.engine, 29, 10, 2));
    await Promise.all(work);
    const state = fx.engine.dumpState();
    assertStateInvariants(state, new Set([29]));
    assert.deepEqual((await fx.restart()).dumpState(), state);
  });

  test('one student sending the same enroll many times at once gets one place', async () => {
    const fx = await world();
    await addSection(fx.engine, 10, 1, { capacity: 5 });
    const replies = await Promise.all(Array.from({ length: 8 }, () => enroll(fx.engine, 1, 10, 1)));
    assert.equal(replies.filter((r) => r === 'registered').length, 1);
    assert.equal(replies.filter((r) => r === 'SAME_COURSE').length, 7);
    assert.deepEqual(members(fx.engine, 10, 1).registered, [1]);
  });
});

describe('students queued beside free seats (data written by the Go service)', () => {
  test('are promoted in queue order, durably, before newcomers; a consistent section is left alone', async () => {
    const fx = await world();
    await addSection(fx.engine, 300, 1, { capacity: 1, reserveCapacity: 5 });
    await addSection(fx.engine, 301, 1, { capacity: 1, reserveCapacity: 5 });
    const got: string[] = [];
    for (const s of [1, 2, 3, 4]) got.push(await outcome(fx.engine.enroll(s, 300, 1, studentMeta(s))));
    for (const s of [5, 6]) got.push(await outcome(fx.engine.enroll(s, 301, 1, studentMeta(s))));
    assert.deepEqual(got, ['registered', 'queued', 'queued', 'queued', 'registered', 'queued']);
    // What the Go service could leave: capacity 3 with a queue (its promotion never reached the
    // database). Written into the log as a bare capacity change, so a load restores it as it is.
    const last = fx.persistence.log.filter((e) => 'courseId' in e && e.courseId === 300).at(-1) as { seq: number };
    fx.persistence.log.push({ type: 'capacityChanged', courseId: 300, groupId: 1, capacity: 3, seq: last.seq + 1, cause: { requestId: 'go', actor: 'system', at: T0 } } as never);
    const engine = await fx.restart();
    const before = sectionOf(engine.dumpState(), 300, 1);
    assert.deepEqual([before.registered, before.queue], [[1], [2, 3, 4]], 'the stranded state is loaded as it was');

    assert.deepEqual(await engine.promoteStrandedQueues(meta('system')), { sections: 1, promoted: 2, failed: 0 });
    const after = sectionOf(engine.dumpState(), 300, 1);
    assert.deepEqual(after.registered, [1, 2, 3], 'the queue head first, in queue order');
    assert.deepEqual(after.queue, [4]);
    const other = sectionOf(engine.dumpState(), 301, 1);
    assert.deepEqual([other.registered, other.queue], [[5], [6]], 'a full section keeps its queue');
    // Durable: a restart shows the promotions.
    const again = await fx.restart();
    assert.deepEqual(sectionOf(again.dumpState(), 300, 1).registered, [1, 2, 3]);
    assertStateInvariants(again.dumpState());
    assert.deepEqual(await again.promoteStrandedQueues(meta('system')), { sections: 0, promoted: 0, failed: 0 });
  });
});
