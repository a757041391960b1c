import type { SectionContext, SectionEvent } from '../actors/types.js';
import type { Department, RegistryEvent, StaffRecord, StudentRecord } from '../actors/student-rules.js';
import type { NoticeStore } from './notice-types.js';

/**
 * Everything the engine needs from storage, with no driver types in it, so the same engine runs
 * on the embedded store (PGlite + in-process ordered log) and on PostgreSQL + RabbitMQ.
 */

/** One entry of the ordered log: a section transition or a registry change. */
export type DomainEvent = SectionEvent | RegistryEvent;

/**
 * The stream an event belongs to; sequence numbers are per stream, which is what makes applying
 * a redelivered event a no-op.
 */
export function streamOf(e: DomainEvent): string {
  switch (e.type) {
    case 'studentCreated':
      return `student:${e.student.id}`;
    case 'actionUsed':
      return `student:${e.studentId}`;
    case 'staffCreated':
      return `staff:${e.staff.id}`;
    case 'departmentCreated':
      return `department:${e.department.id}`;
    default:
      return `section:${e.courseId}:${e.groupId}`;
  }
}

export interface LoadedStudent extends StudentRecord {
  /** Sequence number of the student's last registry event (0 if none). */
  seq: number;
}

/** The whole durable state, as the engine rebuilds it at start or after a failure. */
export interface LoadedState {
  departments: Department[];
  staff: StaffRecord[];
  students: LoadedStudent[];
  sections: SectionContext[];
}

/** A transition as the admin view shows it: who, what, when. */
export interface TransitionRecord {
  seq: number;
  type: string;
  studentId: number | null;
  requestId: string;
  actor: string;
  at: string;
  payload: Record<string, unknown>;
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

export interface Persistence {
  readonly mode: 'embedded' | 'full';
  /** Creates or upgrades the schema (idempotent). */
  migrate(): Promise<void>;
  /** Reads the acknowledged state: everything whose append ever resolved, nothing else. */
  load(): Promise<LoadedState>;
  /**
   * Appends events to the ordered log, in call order. Resolves once they are durable; rejects with
   * an EngineError('UNAVAILABLE') otherwise. Calls are batched inside; callers never wait for each
   * other's round trips.
   */
  append(events: DomainEvent[]): Promise<void>;
  /** Most recent transitions of one section, newest first. */
  recentTransitions(courseId: number, groupId: number, limit: number): Promise<TransitionRecord[]>;
  readiness(): Promise<ReadinessReport>;
  close(): Promise<void>;
  /** Seat watches, webhooks and the transitions read back for resumed notice streams (issue 16). */
  readonly notices?: NoticeStore;
}
