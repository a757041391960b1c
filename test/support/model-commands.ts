import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeClassTime } from '../../src/actors/class-time.js';
import type { Engine } from '../../src/engine/engine.js';
import type { LoadedState } from '../../src/persistence/types.js';
import { createFixture, type Fixture, makeSection, makeStaff, makeStudent, meta, MINUTE, outcome, studentMeta, T0, WINDOW_MS } from './engine-fixture.js';
import { MemoryPersistence } from './memory-persistence.js';
import { type Gender, ReferenceModel, type RefSection, type RefStudent } from './reference-model.js';

/**
 * The little world the property and concurrency tests run in, the commands they draw, and how a
 * command is applied to the Engine and to the reference model.
 */

const MON = 1 << 1;
const TUE = 1 << 2;
const WED = 1 << 3;
const EXAM_A = Date.UTC(2026, 0, 10, 9, 0, 0);
const EXAM_B = Date.UTC(2026, 0, 11, 9, 0, 0);
const EXAM_C = Date.UTC(2026, 0, 12, 9, 0, 0);
const slot = (days: number, start: number, end: number): number => encodeClassTime({ days, startMinute: start, endMinute: end });

/** Two courses, four sections. 10:2 and 20:1 share an exam; 10:1 and 20:2 clash on Monday. */
export const WORLD_SECTIONS: readonly RefSection[] = [
  { courseId: 10, groupId: 1, units: 3, examTime: EXAM_A, classTime: slot(MON, 600, 720), capacity: 2, reserveCapacity: 2, sexLock: null, closed: false, registered: [], queue: [] },
  { courseId: 10, groupId: 2, units: 3, examTime: EXAM_B, classTime: slot(TUE, 600, 720), capacity: 1, reserveCapacity: 3, sexLock: null, closed: false, registered: [], queue: [] },
  { courseId: 20, groupId: 1, units: 4, examTime: EXAM_B, classTime: slot(WED, 600, 720), capacity: 1, reserveCapacity: 2, sexLock: null, closed: false, registered: [], queue: [] },
  { courseId: 20, groupId: 2, units: 4, examTime: EXAM_C, classTime: slot(MON, 700, 800), capacity: 2, reserveCapacity: 0, sexLock: null, closed: false, registered: [], queue: [] },
];

/** Five students; student 3 cannot hold both courses (6 < 3 + 4); few actions, so they run out. */
export const WORLD_STUDENTS: readonly RefStudent[] = [
  { id: 1, gender: 'male', enrollmentStart: T0, maxUnits: 7, remainingActions: 3 },
  { id: 2, gender: 'female', enrollmentStart: T0, maxUnits: 7, remainingActions: 3 },
  { id: 3, gender: 'male', enrollmentStart: T0, maxUnits: 6, remainingActions: 3 },
  { id: 4, gender: 'female', enrollmentStart: T0 + 10 * MINUTE, maxUnits: 10, remainingActions: 1 },
  { id: 5, gender: 'male', enrollmentStart: T0 - 20 * MINUTE, maxUnits: 7, remainingActions: 3 },
];

/** Inside every student's window. */
export const WORLD_NOW = T0 + 30 * MINUTE;

export type Command =
  | { kind: 'enroll'; s: number; c: number; g: number }
  | { kind: 'drop'; s: number; c: number }
  | { kind: 'change'; s: number; c: number; g: number }
  | { kind: 'force'; s: number; c: number; g: number }
  | { kind: 'forceDrop'; s: number; c: number; g: number }
  | { kind: 'capacity'; c: number; g: number; n: number }
  | { kind: 'reserve'; c: number; g: number; n: number }
  | { kind: 'lock'; c: number; g: number; lock: Gender | null }
  | { kind: 'close'; c: number; g: number }
  | { kind: 'reopen'; c: number; g: number };

/** The four sections, and now and then one that does not exist. */
const sectionArb = fc.oneof(
  { arbitrary: fc.constantFrom(...WORLD_SECTIONS.map((s) => [s.courseId, s.groupId] as const)), weight: 12 },
  { arbitrary: fc.constant([10, 3] as const), weight: 1 },
);
const courseArb = fc.oneof({ arbitrary: fc.constantFrom(10, 20), weight: 8 }, { arbitrary: fc.constant(30), weight: 1 });

/** A crowd for concurrency bursts: the five above and seven more, mixed sexes, limits and windows. */
export const CROWD_STUDENTS: readonly RefStudent[] = [
  ...WORLD_STUDENTS,
  ...[6, 7, 8, 9, 10, 11, 12].map((id) => ({
    id,
    gender: (id % 2 ? 'male' : 'female') as Gender,
    enrollmentStart: T0 + (id % 3) * MINUTE,
    maxUnits: id % 4 === 0 ? 4 : 7,
    remainingActions: id % 3,
  })),
];

export function commandArbitrary(students: readonly RefStudent[]): fc.Arbitrary<Command> {
  const studentArb = fc.constantFrom(...students.map((s) => s.id));
  return fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('enroll' as const), s: studentArb, cg: sectionArb }).map(({ kind, s, cg }) => ({ kind, s, c: cg[0], g: cg[1] })), weight: 10 },
    { arbitrary: fc.record({ kind: fc.constant('drop' as const), s: studentArb, c: courseArb }), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant('change' as const), s: studentArb, cg: sectionArb }).map(({ kind, s, cg }) => ({ kind, s, c: cg[0], g: cg[1] })), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant('force' as const), s: studentArb, cg: sectionArb }).map(({ kind, s, cg }) => ({ kind, s, c: cg[0], g: cg[1] })), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('forceDrop' as const), s: studentArb, cg: sectionArb }).map(({ kind, s, cg }) => ({ kind, s, c: cg[0], g: cg[1] })), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('capacity' as const), cg: sectionArb, n: fc.integer({ min: 0, max: 4 }) }).map(({ kind, cg, n }) => ({ kind, c: cg[0], g: cg[1], n })), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('reserve' as const), cg: sectionArb, n: fc.integer({ min: 0, max: 3 }) }).map(({ kind, cg, n }) => ({ kind, c: cg[0], g: cg[1], n })), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('lock' as const), cg: sectionArb, lock: fc.constantFrom<Gender | null>(null, 'male', 'female') }).map(({ kind, cg, lock }) => ({ kind, c: cg[0], g: cg[1], lock })), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('close' as const), cg: sectionArb }).map(({ kind, cg }) => ({ kind, c: cg[0], g: cg[1] })), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('reopen' as const), cg: sectionArb }).map(({ kind, cg }) => ({ kind, c: cg[0], g: cg[1] })), weight: 1 },
  );
}

export const commandArb: fc.Arbitrary<Command> = commandArbitrary(WORLD_STUDENTS);

export function newModel(students: readonly RefStudent[] = WORLD_STUDENTS): ReferenceModel {
  return new ReferenceModel([...students], [...WORLD_SECTIONS], WORLD_NOW, WINDOW_MS);
}

export async function newWorldEngine(students: readonly RefStudent[] = WORLD_STUDENTS, persistence?: MemoryPersistence): Promise<Fixture> {
  const fx = await createFixture(persistence ? { now: WORLD_NOW, persistence } : { now: WORLD_NOW });
  await fx.engine.importBatch(
    {
      departments: [{ id: 1, name: 'Engineering' }],
      staff: [makeStaff(1)],
      students: students.map((s) =>
        makeStudent(s.id, { gender: s.gender, enrollmentStart: s.enrollmentStart, maxUnits: s.maxUnits, remainingActions: s.remainingActions }),
      ),
      sections: WORLD_SECTIONS.map((s) =>
        makeSection(s.courseId, s.groupId, {
          capacity: s.capacity,
          reserveCapacity: s.reserveCapacity,
          sexLock: s.sexLock,
          closed: s.closed,
          info: { units: s.units, examTime: s.examTime, classTime: s.classTime },
        }),
      ),
    },
    meta('system'),
  );
  return fx;
}

export function applyToModel(m: ReferenceModel, cmd: Command): string {
  switch (cmd.kind) {
    case 'enroll':
      return m.enroll(cmd.s, cmd.c, cmd.g);
    case 'drop':
      return m.drop(cmd.s, cmd.c);
    case 'change':
      return m.changeGroup(cmd.s, cmd.c, cmd.g);
    case 'force':
      return m.forceEnroll(cmd.s, cmd.c, cmd.g);
    case 'forceDrop':
      return m.forceDrop(cmd.s, cmd.c, cmd.g);
    case 'capacity':
      return m.changeCapacity(cmd.c, cmd.g, cmd.n);
    case 'reserve':
      return m.changeReserveCapacity(cmd.c, cmd.g, cmd.n);
    case 'lock':
      return m.changeSexLock(cmd.c, cmd.g, cmd.lock);
    case 'close':
      return m.setClosed(cmd.c, cmd.g, true);
    case 'reopen':
      return m.setClosed(cmd.c, cmd.g, false);
  }
}

/** Sends the command to the engine under the given request id; resolves with the outcome code. */
export function applyToEngine(engine: Engine, cmd: Command, requestId?: string): Promise<string> {
  const withId = (m: { requestId: string; actor: string }): { requestId: string; actor: string } =>
    requestId === undefined ? m : { ...m, requestId };
  switch (cmd.kind) {
    case 'enroll':
      return outcome(engine.enroll(cmd.s, cmd.c, cmd.g, withId(studentMeta(cmd.s))));
    case 'drop':
      return outcome(engine.drop(cmd.s, cmd.c, withId(studentMeta(cmd.s))));
    case 'change':
      return outcome(engine.changeGroup(cmd.s, cmd.c, cmd.g, withId(studentMeta(cmd.s))));
    case 'force':
      return outcome(engine.forceEnroll(cmd.s, cmd.c, cmd.g, withId(meta())));
    case 'forceDrop':
      return outcome(engine.forceDrop(cmd.s, cmd.c, cmd.g, withId(meta())));
    case 'capacity':
      return outcome(engine.changeCapacity(cmd.c, cmd.g, cmd.n, withId(meta())));
    case 'reserve':
      return outcome(engine.updateSection(cmd.c, cmd.g, { reserveCapacity: cmd.n }, withId(meta())));
    case 'lock':
      return outcome(engine.updateSection(cmd.c, cmd.g, { sexLock: cmd.lock }, withId(meta())));
    case 'close':
      return outcome(engine.setClosed(cmd.c, cmd.g, true, withId(meta())));
    case 'reopen':
      return outcome(engine.setClosed(cmd.c, cmd.g, false, withId(meta())));
  }
}

/** What the model and the engine must agree on: every section's numbers and lists, every student's actions. */
export interface Comparable {
  sections: { key: string; capacity: number; reserveCapacity: number; sexLock: Gender | null; closed: boolean; registered: number[]; queue: number[] }[];
  students: { id: number; remainingActions: number }[];
}

export function comparableFromEngine(state: LoadedState): Comparable {
  return {
    sections: state.sections
      .map((s) => ({
        key: `${s.info.courseId}:${s.info.groupId}`,
        capacity: s.capacity,
        reserveCapacity: s.reserveCapacity,
        sexLock: s.sexLock,
        closed: s.closed,
        registered: [...s.registered],
        queue: [...s.queue],
      }))
      .sort((a, b) => a.key.localeCompare(b.key)),
    students: state.students.map((s) => ({ id: s.id, remainingActions: s.remainingActions })).sort((a, b) => a.id - b.id),
  };
}

export function comparableFromModel(m: ReferenceModel): Comparable {
  return {
    sections: m.sections
      .map((s) => ({
        key: `${s.courseId}:${s.groupId}`,
        capacity: s.capacity,
        reserveCapacity: s.reserveCapacity,
        sexLock: s.sexLock,
        closed: s.closed,
        registered: [...s.registered],
        queue: [...s.queue],
      }))
      .sort((a, b) => a.key.localeCompare(b.key)),
    students: m.students.map((s) => ({ id: s.id, remainingActions: s.remainingActions })).sort((a, b) => a.id - b.id),
  };
}

export function assertSameState(engine: Engine, model: ReferenceModel, where: string): void {
  assert.deepEqual(comparableFromEngine(engine.dumpState()), comparableFromModel(model), where);
}

export function describeCommand(c: Command): string {
  return JSON.stringify(c);
}

/**
 * A MemoryPersistence whose appends take a random number of event-loop turns to be confirmed, as
 * a real broker's would. The log order stays the call order and confirmations stay in that order
 * (a later append is never durable before an earlier one); only the timing moves, which lets the
 * requests of a burst interleave in many more ways.
 */
export class JitteryPersistence extends MemoryPersistence {
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly random: () => number) {
    super();
  }

  override append(events: Parameters<MemoryPersistence['append']>[0]): Promise<void> {
    const written = super.append(events);
    const previous = this.tail;
    const turns = Math.floor(this.random() * 4);
    const confirmed = (async () => {
      try {
        await written;
      } finally {
        await previous;
        for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    })();
    this.tail = confirmed.then(
      () => undefined,
      () => undefined,
    );
    return confirmed;
  }
}

