import { evolveSection, initialSectionContext, sectionKey } from '../actors/section-logic.js';
import type { SectionContext } from '../actors/types.js';
import type { DomainEvent, LoadedState, LoadedStudent } from './types.js';

/**
 * Folds ordered log events into a loaded state, skipping what the state already contains (per
 * stream sequence numbers). Full mode uses it at start to add the broker's not-yet-applied tail to
 * the database snapshot; it is also the reference the SQL writer is tested against.
 */
export function foldEvents(base: LoadedState, events: Iterable<DomainEvent>): LoadedState {
  const departments = new Map(base.departments.map((d) => [d.id, d]));
  const staff = new Map(base.staff.map((s) => [s.id, s]));
  const students = new Map<number, LoadedStudent>(base.students.map((s) => [s.id, s]));
  const sections = new Map<string, SectionContext>(base.sections.map((c) => [sectionKey(c.info.courseId, c.info.groupId), c]));
  for (const e of events) {
    switch (e.type) {
      case 'departmentCreated':
        if (!departments.has(e.department.id)) departments.set(e.department.id, e.department);
        break;
      case 'staffCreated':
        if (!staff.has(e.staff.id)) staff.set(e.staff.id, e.staff);
        break;
      case 'studentCreated':
        if (!students.has(e.student.id)) students.set(e.student.id, { ...e.student, seq: e.seq });
        break;
      case 'actionUsed': {
        const s = students.get(e.studentId);
        if (s && e.seq > s.seq) students.set(e.studentId, { ...s, remainingActions: e.remainingActions, seq: e.seq });
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
  }
  return {
    departments: [...departments.values()],
    staff: [...staff.values()],
    students: [...students.values()],
    sections: [...sections.values()],
  };
}

export const EMPTY_STATE: LoadedState = Object.freeze({ departments: [], staff: [], students: [], sections: [] }) as LoadedState;
