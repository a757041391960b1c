import type { Department, RegistryEvent, StaffRecord, StudentRecord } from '../actors/student-rules.js';
import type { Cause, SectionContext, SectionEvent, SectionInfo } from '../actors/types.js';
import { EngineError } from '../errors.js';
import { createStudentMailboxes, type StudentMailboxes } from './student-mailbox.js';

/**
 * The student directory: who the students, staff and departments are, which sections each student
 * holds (course -> group, kept in step with the section actors' events), and each student's mailbox.
 * It holds no section state: a student's schedule is read from the sections themselves when a rule
 * needs it.
 */

export interface StudentState {
  record: StudentRecord;
  /** Sequence number of the student's last registry event. */
  seq: number;
  /** course_id -> group_id for every section held (registered or queued). */
  holdings: Map<number, number>;
}

export class StudentDirectory {
  students = new Map<number, StudentState>();
  staff = new Map<number, StaffRecord>();
  /** Sequence number of each staff member's last registry event (absent: 1, created and unchanged). */
  staffSeq = new Map<number, number>();
  departments = new Map<number, Department>();
  readonly mailboxes: StudentMailboxes;

  constructor(mailboxLimit: number) {
    this.mailboxes = createStudentMailboxes(mailboxLimit);
  }

  get(id: number): StudentState | undefined {
    return this.students.get(id);
  }

  require(id: number): StudentState {
    const st = this.students.get(id);
    if (!st) throw new EngineError('STUDENT_NOT_FOUND', `student ${id} does not exist`);
    return st;
  }

  addStudent(record: StudentRecord, seq = 1): StudentState {
    const st: StudentState = { record: { ...record }, seq, holdings: new Map() };
    this.students.set(record.id, st);
    return st;
  }

  /**
   * Uses one of the student's actions and returns the event that records it; it names the course of
   * the command it was used for, so it is published with that section's events under one lease.
   */
  useAction(st: StudentState, cause: Cause, courseId: number): RegistryEvent {
    st.record = { ...st.record, remainingActions: st.record.remainingActions - 1 };
    st.seq += 1;
    return { type: 'actionUsed', seq: st.seq, studentId: st.record.id, remainingActions: st.record.remainingActions, forCourse: courseId, cause };
  }

  /** The infos of the sections a student holds (but `exceptCourse`), read through `infoOf`. */
  heldInfos(st: StudentState, infoOf: (courseId: number, groupId: number) => SectionInfo | undefined, exceptCourse?: number): SectionInfo[] {
    const out: SectionInfo[] = [];
    for (const [courseId, groupId] of st.holdings) {
      if (courseId === exceptCourse) continue;
      const info = infoOf(courseId, groupId);
      if (info) out.push(info);
    }
    return out;
  }

  /** Keeps the holdings in step with what the section actors recorded. */
  index(e: SectionEvent): void {
    if (e.type !== 'studentEnrolled' && e.type !== 'studentQueued' && e.type !== 'studentDropped') return;
    const st = this.students.get(e.studentId);
    if (!st) return;
    if (e.type === 'studentDropped') {
      if (st.holdings.get(e.courseId) === e.groupId) st.holdings.delete(e.courseId);
    } else {
      st.holdings.set(e.courseId, e.groupId);
    }
  }

  /** Records a section's members as holdings (after a load or a rollback). */
  indexMembers(ctx: SectionContext): void {
    const { courseId, groupId } = ctx.info;
    for (const id of ctx.registered) this.students.get(id)?.holdings.set(courseId, groupId);
    for (const id of ctx.queue) this.students.get(id)?.holdings.set(courseId, groupId);
  }

  clearHoldings(): void {
    for (const st of this.students.values()) st.holdings = new Map();
  }
}
