import { classTimesOverlap } from './class-time.js';
import type { Cause, SectionInfo, Sex } from './types.js';

/**
 * Student-level rules need the student's whole schedule, so they live beside the section actors
 * rather than inside one. They are pure: the caller passes the schedule and the clock.
 */

export interface StudentRecord {
  id: number;
  /** bcrypt hash; never logged, never sent to clients. */
  passwordHash: string;
  /** Start of the student's enrollment window, unix milliseconds. */
  enrollmentStart: number;
  maxUnits: number;
  remainingActions: number;
  departmentId: number | null;
  entryYear: number | null;
  gender: Sex;
}

export interface StaffRecord {
  id: number;
  passwordHash: string;
  departmentId: number | null;
}

export interface Department {
  id: number;
  name: string;
}

/** Events about students, staff and departments; they share the ordered log with section events. */
export type RegistryEvent =
  | { type: 'studentCreated'; seq: number; student: StudentRecord; cause: Cause }
  | { type: 'actionUsed'; seq: number; studentId: number; remainingActions: number; cause: Cause }
  | { type: 'staffCreated'; seq: number; staff: StaffRecord; cause: Cause }
  | { type: 'departmentCreated'; seq: number; department: Department; cause: Cause };

export type StudentRuleCode =
  | 'ENROLLMENT_WINDOW_CLOSED'
  | 'SECTION_CLOSED'
  | 'SEX_LOCK'
  | 'UNITS_EXCEEDED'
  | 'SAME_COURSE'
  | 'EXAM_CONFLICT'
  | 'CLASS_CONFLICT'
  | 'NO_ACTIONS_LEFT';

export interface RuleViolation {
  code: StudentRuleCode;
  reason: string;
}

export function checkWindow(student: StudentRecord, now: number, windowMs: number): RuleViolation | null {
  if (now < student.enrollmentStart) {
    return {
      code: 'ENROLLMENT_WINDOW_CLOSED',
      reason: `your enrollment window opens at ${new Date(student.enrollmentStart).toISOString()}`,
    };
  }
  if (now >= student.enrollmentStart + windowMs) {
    return {
      code: 'ENROLLMENT_WINDOW_CLOSED',
      reason: `your enrollment window closed at ${new Date(student.enrollmentStart + windowMs).toISOString()}`,
    };
  }
  return null;
}

export function checkActionsLeft(student: StudentRecord): RuleViolation | null {
  if (student.remainingActions > 0) return null;
  return { code: 'NO_ACTIONS_LEFT', reason: 'you have no remaining drop or change actions' };
}

export interface EnrollCheck {
  student: StudentRecord;
  target: SectionInfo;
  targetClosed: boolean;
  targetSexLock: Sex | null;
  /** The sections the student holds (registered or queued), excluding one being left (change group). */
  held: SectionInfo[];
  /** False for change group, where holding the same course is the point. */
  checkSameCourse: boolean;
}

/** Rules 2 (open) to 6 of SPEC section 4, in order; the window (1) and the seat (7) are checked elsewhere. */
export function checkEnrollRules(c: EnrollCheck): RuleViolation | null {
  if (c.targetClosed) return { code: 'SECTION_CLOSED', reason: 'the section is closed for enrollment' };
  if (c.targetSexLock !== null && c.targetSexLock !== c.student.gender) {
    return { code: 'SEX_LOCK', reason: `the section is only open to ${c.targetSexLock} students` };
  }
  let units = 0;
  for (const s of c.held) units += s.units;
  if (units + c.target.units > c.student.maxUnits) {
    return {
      code: 'UNITS_EXCEEDED',
      reason: `${units} units held + ${c.target.units} would exceed your limit of ${c.student.maxUnits}`,
    };
  }
  if (c.checkSameCourse) {
    const same = c.held.find((s) => s.courseId === c.target.courseId);
    if (same) {
      return { code: 'SAME_COURSE', reason: `you already hold group ${same.groupId} of course ${same.courseId}` };
    }
  }
  for (const s of c.held) {
    if (c.target.examTime !== null && s.examTime === c.target.examTime) {
      return { code: 'EXAM_CONFLICT', reason: `the exam clashes with course ${s.courseId} group ${s.groupId}` };
    }
  }
  for (const s of c.held) {
    if (classTimesOverlap(s.classTime, c.target.classTime)) {
      return { code: 'CLASS_CONFLICT', reason: `the class time clashes with course ${s.courseId} group ${s.groupId}` };
    }
  }
  return null;
}
