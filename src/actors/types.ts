/**
 * Types shared by the actors. Everything here is JSON-safe on purpose: snapshots and events are
 * written to the transition log and replayed after a restart, so they must round-trip unchanged.
 */

export type Sex = 'male' | 'female';

/** Rule-relevant, rarely changing facts about a section (one group of a course). */
export interface SectionInfo {
  courseId: number;
  groupId: number;
  forDepartment: number | null;
  name: string;
  lecturer: string;
  units: number;
  /** Exam start as unix milliseconds, or null when the course has no exam. */
  examTime: number | null;
  /** Packed weekly slot (see class-time.ts), or null when the course has no class time. */
  classTime: number | null;
  notes: string;
}

export type Membership = 'registered' | 'queued';

export interface SectionContext {
  info: SectionInfo;
  capacity: number;
  reserveCapacity: number;
  sexLock: Sex | null;
  closed: boolean;
  /** Registered students in the order they got their seat. */
  registered: number[];
  /** Reserve queue, head first (FIFO). */
  queue: number[];
  /** Sequence number of the last transition event of this section. */
  seq: number;
}

/** Why a command caused a transition: carried on every event for the log and the admin view. */
export interface Cause {
  requestId: string;
  /** Who asked: `student:<id>`, `staff:<id>` or `system`. */
  actor: string;
  /** Wall-clock time of the decision, unix milliseconds. */
  at: number;
}

/**
 * What a section needs to know of the student's own schedule to apply SPEC section 4's rules 4 to 6
 * (units, same course, exam and class conflicts) in their place, between its own rules 2-3 (open,
 * sex lock) and 7 (seat). The student directory supplies it; the rules themselves live in
 * student-rules.ts.
 */
export interface StudentSchedule {
  maxUnits: number;
  /** The sections the student holds (registered or queued), except one being left (change of group). */
  held: SectionInfo[];
  /** False for a change of group, where holding the same course is the point. */
  checkSameCourse: boolean;
}

/** A staff change of a section's settings: every field optional, applied all together or not at all. */
export interface SettingsChange {
  capacity?: number;
  reserveCapacity?: number;
  sexLock?: Sex | null;
  info?: Partial<Omit<SectionInfo, 'courseId' | 'groupId'>>;
}

// ---------------------------------------------------------------------------------------------
// Commands (imperative) accepted by a section actor: its one event union.

export type SectionCommand =
  | {
      type: 'enroll';
      studentId: number;
      gender: Sex;
      schedule: StudentSchedule;
      movedIn?: boolean;
      /** Take a seat or nothing: a reserve-queue place is refused with NO_SEAT (a swap that asked for a seat). */
      seatOnly?: boolean;
      cause: Cause;
    }
  | { type: 'drop'; studentId: number; reason: DropReason; cause: Cause }
  | { type: 'forceEnroll'; studentId: number; cause: Cause }
  | {
      type: 'changeSettings';
      change: SettingsChange;
      /** The sex of every member, for a new sex lock (a lock may not exclude a member). */
      memberSexes?: Record<number, Sex>;
      /**
       * Each member's schedule without this section, for a change of units, exam or class time:
       * the change may not break a member's rules 4-6 that held before it. Absent: not checked
       * (staff forced the change, or it touches none of these).
       */
      memberSchedules?: Record<number, StudentSchedule>;
      cause: Cause;
    }
  | { type: 'close'; cause: Cause }
  | { type: 'reopen'; cause: Cause };

export type DropReason = 'dropped' | 'forceDropped' | 'movedOut';

// ---------------------------------------------------------------------------------------------
// Emitted transition events (past tense). Each carries the section's sequence number.

interface EventBase {
  courseId: number;
  groupId: number;
  seq: number;
  cause: Cause;
}

export type SectionEvent =
  | (EventBase & { type: 'sectionCreated'; info: SectionInfo; capacity: number; reserveCapacity: number; sexLock: Sex | null; closed: boolean })
  | (EventBase & { type: 'studentEnrolled'; studentId: number; forced: boolean; movedIn: boolean })
  | (EventBase & { type: 'studentQueued'; studentId: number; movedIn: boolean })
  | (EventBase & { type: 'studentPromoted'; studentId: number })
  | (EventBase & { type: 'studentDropped'; studentId: number; from: Membership; reason: DropReason })
  | (EventBase & { type: 'capacityChanged'; capacity: number })
  | (EventBase & { type: 'reserveCapacityChanged'; reserveCapacity: number })
  | (EventBase & { type: 'sexLockChanged'; sexLock: Sex | null })
  | (EventBase & { type: 'infoUpdated'; info: Partial<Omit<SectionInfo, 'courseId' | 'groupId'>> })
  | (EventBase & { type: 'sectionClosed' })
  | (EventBase & { type: 'sectionReopened' });

export type SectionEventType = SectionEvent['type'];

/** Why a section refused a command. Codes match errors.ts. */
export type SectionRefusalCode =
  | 'SECTION_CLOSED'
  | 'SEX_LOCK'
  | 'UNITS_EXCEEDED'
  | 'SAME_COURSE'
  | 'EXAM_CONFLICT'
  | 'CLASS_CONFLICT'
  | 'SECTION_FULL'
  | 'NO_SEAT'
  | 'ALREADY_IN_SECTION'
  | 'NOT_ENROLLED'
  | 'CAPACITY_BELOW_REGISTERED'
  | 'RESERVE_BELOW_QUEUED'
  | 'SEX_LOCK_CONFLICT'
  | 'MEMBER_RULES_CONFLICT'
  | 'BAD_REQUEST';

/**
 * A section's answer "no" to a command, emitted by the machine itself (XState `emit`), never a
 * transition: the state and the context are unchanged.
 */
export interface SectionRefusal {
  type: 'commandRefused';
  command: SectionCommand['type'];
  code: SectionRefusalCode;
  reason: string;
}

/** What a section emits: transition events (past tense), or the refusal of the command it was sent. */
export type SectionEmitted = SectionEvent | SectionRefusal;
