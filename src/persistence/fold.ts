import { evolveSection, initialSectionContext, sectionKey } from '../actors/section-logic.js';
import type { SectionContext } from '../actors/types.js';
import { assertKnownEvent, type DomainEvent, type LoadedState, type LoadedStudent } from './types.js';

/**
 * Folds ordered log events into a loaded state, skipping what the state already contains (per
 * stream sequence numbers). Full mode uses it at start to add the broker's not-yet-applied tail to
 * the database snapshot, event by event as the stream delivers them; it is also the reference the
 * SQL writer is tested against.
 */
/** Folds events into a state one at a time, so a replay never holds the log's tail in memory. */
export interface StateFolder {
  add(e: DomainEvent): void;
  /** The folded state; call once, after the last event. */
  result(): LoadedState;
}

export function createStateFolder(base: LoadedState): StateFolder {
  const departments = new Map(base.departments.map((d) => [d.id, d]));
  const staff = new Map(base.staff.map((s) => [s.id, s]));
  const students = new Map<number, LoadedStudent>(base.students.map((s) => [s.id, s]));
  const sections = new Map<string, SectionContext>(base.sections.map((c) => [sectionKey(c.info.courseId, c.info.groupId), c]));
  return {
    add(e) {
      assertKnownEvent(e);
      switch (e.type) {
        case 'departmentCreated':
          if (!departments.has(e.department.id)) departments.set(e.department.id, e.department);
          break;
        case 'staffCreated':
          if (!staff.has(e.staff.id)) staff.set(e.staff.id, { ...e.staff, seq: e.seq });
          break;
        case 'staffUpdated': {
          const s = staff.get(e.staffId);
          if (s && e.seq > s.seq) staff.set(e.staffId, { ...s, ...e.changes, seq: e.seq });
          break;
        }
        case 'studentCreated':
          if (!students.has(e.student.id)) students.set(e.student.id, { ...e.student, seq: e.seq });
          break;
        case 'actionUsed': {
          const s = students.get(e.studentId);
          if (s && e.seq > s.seq) students.set(e.studentId, { ...s, remainingActions: e.remainingActions, seq: e.seq });
          break;
        }
        case 'studentUpdated': {
          const s = students.get(e.studentId);
          if (s && e.seq > s.seq) students.set(e.studentId, { ...s, ...e.changes, seq: e.seq });
          break;
        }
        default: {
          const key = sectionKey(e.courseId, e.groupId);
          const prev = sections.get(key);
          if (e.type === 'sectionCreated') {
            if (!prev) sections.set(key, evolveSection(initialSectionContext(e.info, e), e));
          } else if (prev) {
            sections.set(key, evolveSection(prev, e));
          }
        }
      }
    },
    result() {
      return {
        departments: [...departments.values()],
        staff: [...staff.values()],
        students: [...students.values()],
        sections: [...sections.values()],
        // What the load read differently from the rows (told at start) goes along.
        ...(base.infinities ? { infinities: base.infinities } : {}),
      };
    },
  };
}

/** Folds a whole list of events (tests and small tails); see {@link createStateFolder}. */
export function foldEvents(base: LoadedState, events: Iterable<DomainEvent>): LoadedState {
  const folder = createStateFolder(base);
  for (const e of events) folder.add(e);
  return folder.result();
}

export const EMPTY_STATE: LoadedState = Object.freeze({ departments: [], staff: [], students: [], sections: [] }) as LoadedState;
