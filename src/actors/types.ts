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

// ---------------------------------------------------------------------------------------------
// Commands (imperative) accepted by a section actor.

export type SectionCommand =
  | { type: 'enroll'; studentId: number; gender: Sex; movedIn?: boolean; cause: Cause }
  | { type: 'drop'; studentId: number; reason: DropReason; cause: Cause }
  | { type: 'forceEnroll'; studentId: number; cause: Cause }
  | { type: 'changeCapacity'; capacity: number; cause: Cause }
  | { type: 'changeReserveCapacity'; reserveCapacity: number; cause: Cause }
  | { type: 'changeSexLock'; sexLock: Sex | null; cause: Cause }
  | { type: 'updateInfo'; info: Partial<Omit<SectionInfo, 'courseId' | 'groupId'>>; cause: Cause }
  | { type: 'close'; cause: Cause }
  | { type: 'reopen'; cause: Cause }
  /** Re-applies an already durable event (restart recovery); never decides anything. */
  | { type: 'replay'; event: SectionEvent };

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
export type SectionRejectionCode =
  | 'SECTION_CLOSED'
  | 'SEX_LOCK'
  | 'SECTION_FULL'
  | 'ALREADY_IN_SECTION'
  | 'NOT_ENROLLED'
  | 'CAPACITY_BELOW_REGISTERED'
  | 'RESERVE_BELOW_QUEUED'
  | 'SEX_LOCK_CONFLICT'
  | 'BAD_REQUEST';

export interface SectionRejection {
  type: 'rejected';
  code: SectionRejectionCode;
  reason: string;
}

/** What a section emits: transition events, or a rejection of the command it was sent. */
export type SectionEmitted = SectionEvent | SectionRejection;
