import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { StudentRecord, StaffRecord } from '../../src/actors/student-rules.js';
import type { SectionContext, SectionInfo, Sex } from '../../src/actors/types.js';
import { Engine, type NewSection, type RequestMeta } from '../../src/engine/engine.js';
import { isEngineError } from '../../src/errors.js';
import type { LoadedState } from '../../src/persistence/types.js';
import { MemoryPersistence } from './memory-persistence.js';

/**
 * Shared set-up for engine tests: an Engine over MemoryPersistence with a clock the test moves,
 * small builders for students and sections, and helpers that turn a promise into its outcome code.
 */

export const MINUTE = 60_000;
export const WINDOW_MS = 60 * MINUTE;
/** A fixed "registration day" instant; every student's window starts here unless told otherwise. */
export const T0 = Date.UTC(2025, 8, 1, 8, 0, 0);

export const silentLogger = pino({ level: 'silent' });

export interface Clock {
  now: number;
}

export interface Fixture {
  engine: Engine;
  persistence: MemoryPersistence;
  clock: Clock;
  /** Stops the engine and starts a new one over the same log, as a process restart would. */
  restart(): Promise<Engine>;
}

export async function createFixture(opts: { persistence?: MemoryPersistence; now?: number } = {}): Promise<Fixture> {
  const persistence = opts.persistence ?? new MemoryPersistence();
  const clock: Clock = { now: opts.now ?? T0 + 5 * MINUTE };
  const make = async (): Promise<Engine> => {
    const engine = new Engine({ persistence, logger: silentLogger, enrollmentWindowMs: WINDOW_MS, now: () => clock.now });
    await engine.start();
    return engine;
  };
  const fx: Fixture = {
    engine: await make(),
    persistence,
    clock,
    async restart() {
      fx.engine.stop();
      fx.engine = await make();
      return fx.engine;
    },
  };
  return fx;
}

let requestCounter = 0;

export function meta(actor = 'staff:1'): RequestMeta {
  requestCounter += 1;
  return { requestId: `req-${requestCounter}`, actor };
}

export function studentMeta(id: number): RequestMeta {
  return meta(`student:${id}`);
}

export function makeStudent(id: number, over: Partial<StudentRecord> = {}): StudentRecord {
  return {
    id,
    passwordHash: '$2b$10$notarealhashnotarealhashnotarealhashnotarealhashnotar',
    enrollmentStart: T0,
    maxUnits: 20,
    remainingActions: 5,
    departmentId: 1,
    entryYear: 2024,
    gender: 'male',
    ...over,
  };
}

export function makeStaff(id: number): StaffRecord {
  return { id, passwordHash: '$2b$10$staffhashstaffhashstaffhashstaffhashstaffhashstaffhash', departmentId: 1 };
}

export function makeInfo(courseId: number, groupId: number, over: Partial<SectionInfo> = {}): SectionInfo {
  return {
    courseId,
    groupId,
    forDepartment: 1,
    name: `Course ${courseId}`,
    lecturer: `Lecturer ${courseId}-${groupId}`,
    units: 3,
    examTime: null,
    classTime: null,
    notes: '',
    ...over,
  };
}

export function makeSection(
  courseId: number,
  groupId: number,
  over: { capacity?: number; reserveCapacity?: number; sexLock?: Sex | null; closed?: boolean; info?: Partial<SectionInfo> } = {},
): NewSection {
  const s: NewSection = {
    info: makeInfo(courseId, groupId, over.info),
    capacity: over.capacity ?? 2,
    reserveCapacity: over.reserveCapacity ?? 1,
    sexLock: over.sexLock ?? null,
  };
  if (over.closed !== undefined) s.closed = over.closed;
  return s;
}

/** The outcome of a call: `ok` (or the membership it resolved with) or the EngineError code. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    const v = await p;
    return typeof v === 'string' ? v : 'ok';
  } catch (err) {
    if (isEngineError(err)) return err.code;
    throw err;
  }
}

export async function expectCode(p: Promise<unknown>, code: string, message?: string): Promise<void> {
  assert.equal(await outcome(p), code, message);
}

export function sectionOf(state: LoadedState, courseId: number, groupId: number): SectionContext {
  const s = state.sections.find((c) => c.info.courseId === courseId && c.info.groupId === groupId);
  assert.ok(s, `section ${courseId}:${groupId} in the state`);
  return s;
}

/**
 * The SPEC section 4 invariants over a whole dumped state. `forced` lists students who were ever
 * force-enrolled (their units may exceed the limit).
 */
export function assertStateInvariants(state: LoadedState, forced: ReadonlySet<number> = new Set()): void {
  const unitsHeld = new Map<number, number>();
  const coursesHeld = new Map<number, Set<number>>();
  for (const s of state.sections) {
    const where = `section ${s.info.courseId}:${s.info.groupId}`;
    assert.ok(s.registered.length <= s.capacity, `${where}: registered ${s.registered.length} > capacity ${s.capacity}`);
    assert.ok(s.queue.length <= s.reserveCapacity, `${where}: queue ${s.queue.length} > reserve ${s.reserveCapacity}`);
    if (s.queue.length > 0) {
      assert.equal(s.registered.length, s.capacity, `${where}: a seat is free while students wait in the queue`);
    }
    assert.equal(new Set(s.registered).size, s.registered.length, `${where}: duplicate registered student`);
    assert.equal(new Set(s.queue).size, s.queue.length, `${where}: duplicate queued student`);
    for (const id of s.registered) assert.ok(!s.queue.includes(id), `${where}: student ${id} both registered and queued`);
    for (const id of [...s.registered, ...s.queue]) {
      unitsHeld.set(id, (unitsHeld.get(id) ?? 0) + s.info.units);
      const courses = coursesHeld.get(id) ?? new Set<number>();
      assert.ok(!courses.has(s.info.courseId), `student ${id} holds two groups of course ${s.info.courseId}`);
      courses.add(s.info.courseId);
      coursesHeld.set(id, courses);
    }
  }
  for (const st of state.students) {
    assert.ok(st.remainingActions >= 0, `student ${st.id}: remaining actions ${st.remainingActions} < 0`);
    if (!forced.has(st.id)) {
      const units = unitsHeld.get(st.id) ?? 0;
      assert.ok(units <= st.maxUnits, `student ${st.id}: ${units} units held > max ${st.maxUnits}`);
    }
  }
}
