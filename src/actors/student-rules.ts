import { classTimesOverlap } from './class-time.js';
import type { Cause, SectionInfo, Sex, StudentSchedule } from './types.js';

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

/** The fields of a student's record that staff may change after it was created (not the id, not the sex). */
export type StudentChanges = Partial<
  Pick<StudentRecord, 'passwordHash' | 'enrollmentStart' | 'maxUnits' | 'remainingActions' | 'departmentId' | 'entryYear'>
>;

/** What may change of a staff member's record after it was created. */
export type StaffChanges = Partial<Pick<StaffRecord, 'passwordHash'>>;

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
  /**
   * `forCourse`: the course of the section command the action was used for. The event travels in
   * that command's message, under the lease of that course's shard (docs/scale-out.md, section 4);
   * absent in older logs (then it belongs to shard 0). Not `courseId`: that names section events.
   */
  | { type: 'actionUsed'; seq: number; studentId: number; remainingActions: number; forCourse?: number; cause: Cause }
  /**
   * Staff changed a student's record (a registrar's correction: window, unit limit, actions left,
   * department, entry year, password). `changes` holds only the fields changed, each with its new
   * value; like `actionUsed` it is a step of the student's stream (`seq`). Published under shard 0's
   * lease (the registry's), decided through the student's home like the student's own writes, so it
   * never races an `actionUsed` of the same student (docs/scale-out.md, section 4).
   */
  | { type: 'studentUpdated'; seq: number; studentId: number; changes: StudentChanges; cause: Cause }
  | { type: 'staffCreated'; seq: number; staff: StaffRecord; cause: Cause }
  /** A staff member's new password (their own change, or an admin's reset); a step of the staff member's stream, shard 0's. */
  | { type: 'staffUpdated'; seq: number; staffId: number; changes: StaffChanges; cause: Cause }
  | { type: 'departmentCreated'; seq: number; department: Department; cause: Cause };

export type StudentRuleCode =
  | 'ENROLLMENT_WINDOW_CLOSED'
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

/** A broken schedule rule (4 to 6). */
export interface ScheduleViolation {
  code: 'UNITS_EXCEEDED' | 'SAME_COURSE' | 'EXAM_CONFLICT' | 'CLASS_CONFLICT';
  reason: string;
}

/**
 * SPEC section 4's rules 4 (units), 5 (same course) and 6 (exam and class conflicts), in order, for
 * a place in `target`. Rules 2 (open), 3 (sex lock) and 7 (seat) are the section's own and live in
 * its machine, which consults this function between them so the first failure is still the answer.
 */
export function checkScheduleRules(target: SectionInfo, schedule: StudentSchedule): ScheduleViolation | null {
  const held = schedule.held;
  let units = 0;
  for (const s of held) units += s.units;
  if (units + target.units > schedule.maxUnits) {
    return {
      code: 'UNITS_EXCEEDED',
      reason: `${units} units held + ${target.units} would exceed your limit of ${schedule.maxUnits}`,
    };
  }
  if (schedule.checkSameCourse) {
    const same = held.find((s) => s.courseId === target.courseId);
    if (same) {
      return { code: 'SAME_COURSE', reason: `you already hold group ${same.groupId} of course ${same.courseId}` };
    }
  }
  for (const s of held) {
    if (target.examTime !== null && s.examTime === target.examTime) {
      return { code: 'EXAM_CONFLICT', reason: `the exam clashes with course ${s.courseId} group ${s.groupId}` };
    }
  }
  for (const s of held) {
    if (classTimesOverlap(s.classTime, target.classTime)) {
      return { code: 'CLASS_CONFLICT', reason: `the class time clashes with course ${s.courseId} group ${s.groupId}` };
    }
  }
  return null;
}
