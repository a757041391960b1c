import type { Engine } from '../../src/engine/engine.js';
import type { LoadedState } from '../../src/persistence/types.js';
import { makeSection, makeStaff, makeStudent, meta, WINDOW_MS } from './engine-fixture.js';
import { type Command, type Comparable, comparableFromEngine, WORLD_NOW, WORLD_SECTIONS, WORLD_STUDENTS } from './model-commands.js';
import { ReferenceModel, type RefSection, type RefStudent } from './reference-model.js';

/**
 * The little world of support/model-commands.ts, many times over in one store: world `k` shifts
 * every course id and student id by `k * STRIDE`, so a real store (whose PGlite takes seconds to
 * start) serves a fresh world to every property run or burst, and the worlds never meet (no shared
 * student, no shared course; the generator's "missing" section 10:3 and course 30 stay missing).
 * Commands are drawn in world-0 ids and shifted with {@link NamespacedWorld.shift}.
 */

export const STRIDE = 1000;

export interface NamespacedWorld {
  readonly k: number;
  readonly students: RefStudent[];
  readonly sections: RefSection[];
  /** The command with this world's ids. */
  shift(cmd: Command): Command;
  /** A fresh reference model of this world, at WORLD_NOW. */
  model(): ReferenceModel;
  /** Creates this world's staff, students and sections in the engine. */
  importInto(engine: Engine): Promise<void>;
  /** The part of an engine state (or a database state) that belongs to this world. */
  slice(state: LoadedState): LoadedState;
  /** {@link comparableFromEngine} of this world's slice. */
  comparable(state: LoadedState): Comparable;
}

export function namespacedWorld(k: number, baseStudents: readonly RefStudent[] = WORLD_STUDENTS): NamespacedWorld {
  const off = k * STRIDE;
  const students = baseStudents.map((s) => ({ ...s, id: s.id + off }));
  const sections = WORLD_SECTIONS.map((s) => ({ ...s, courseId: s.courseId + off, registered: [], queue: [] }));
  const inWorld = (id: number): boolean => id > off && id < off + STRIDE;
  const slice = (state: LoadedState): LoadedState => ({
    ...state,
    students: state.students.filter((s) => inWorld(s.id)),
    sections: state.sections.filter((s) => inWorld(s.info.courseId)),
  });
  return {
    k,
    students,
    sections,
    shift: (cmd) => ({ ...cmd, c: cmd.c + off, ...('s' in cmd ? { s: cmd.s + off } : {}) }) as Command,
    model: () => new ReferenceModel(students, sections, WORLD_NOW, WINDOW_MS),
    async importInto(engine) {
      await engine.importBatch(
        {
          departments: [{ id: 1, name: 'Engineering' }],
          staff: [makeStaff(1)],
          students: students.map((s) =>
            makeStudent(s.id, { gender: s.gender, enrollmentStart: s.enrollmentStart, maxUnits: s.maxUnits, remainingActions: s.remainingActions }),
          ),
          sections: sections.map((s) =>
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
    },
    slice,
    comparable: (state) => comparableFromEngine(slice(state)),
  };
}
