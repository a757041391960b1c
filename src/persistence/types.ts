import type { SectionContext, SectionEvent } from '../actors/types.js';
import type { Department, RegistryEvent, StaffRecord, StudentRecord } from '../actors/student-rules.js';
import type { NoticeStore } from './notice-types.js';

/**
 * Everything the engine needs from storage, with no driver types in it, so the same engine runs
 * on the embedded store (PGlite + in-process ordered log) and on PostgreSQL + RabbitMQ.
 */

/** One entry of the ordered log: a section transition or a registry change. */
export type DomainEvent = SectionEvent | RegistryEvent;

/** Every event type this version writes and reads (the compiler keeps the list complete). */
const EVENT_TYPES: Record<DomainEvent['type'], true> = {
  sectionCreated: true,
  studentEnrolled: true,
  studentQueued: true,
  studentPromoted: true,
  studentDropped: true,
  capacityChanged: true,
  reserveCapacityChanged: true,
  sexLockChanged: true,
  sectionClosed: true,
  sectionReopened: true,
  infoUpdated: true,
  studentCreated: true,
  actionUsed: true,
  studentUpdated: true,
  staffCreated: true,
  staffUpdated: true,
  departmentCreated: true,
};

/** Whether this version knows the event's type (see {@link assertKnownEvent}). */
export function isKnownEvent(e: { type: string }): e is DomainEvent {
  return Object.hasOwn(EVENT_TYPES, e.type);
}

/**
 * Refuses an event of a type this version does not know (written by a newer one during a rolling
 * upgrade): folded as a section event it would be dropped or filed under a wrong stream, and the
 * change would be missing from the tables and from what a restart loads. Readers stop at it
 * instead (the batcher's stall, a failed load) until they run the version that wrote it.
 */
export function assertKnownEvent(e: { type: string }): void {
  if (!isKnownEvent(e)) {
    throw Object.assign(new Error(`event type "${String(e.type).slice(0, 60)}" is unknown to this version (written by a newer one?): upgrade this process`), {
      code: 'UNKNOWN_EVENT_TYPE',
    });
  }
}

/**
 * The stream an event belongs to; sequence numbers are per stream, which is what makes applying
 * a redelivered event a no-op.
 */
export function streamOf(e: DomainEvent): string {
  switch (e.type) {
    case 'studentCreated':
      return `student:${e.student.id}`;
    case 'actionUsed':
    case 'studentUpdated':
      return `student:${e.studentId}`;
    case 'staffCreated':
      return `staff:${e.staff.id}`;
    case 'staffUpdated':
      return `staff:${e.staffId}`;
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

export interface LoadedStaff extends StaffRecord {
  /** Sequence number of the staff member's last registry event (1: created, unchanged since). */
  seq: number;
}

/** The whole durable state, as the engine rebuilds it at start or after a failure. */
export interface LoadedState {
  departments: Department[];
  staff: LoadedStaff[];
  students: LoadedStudent[];
  sections: SectionContext[];
  /**
   * Stored values the engine could only read as something else: PostgreSQL's `infinity` and
   * `-infinity` timestamps, which rows written straight into the database (the Go service's data,
   * an operator) may hold and no API accepts. The engine tells the registrar at start.
   */
  infinities?: StoredInfinity[];
}

/** One `infinity` / `-infinity` timestamp in a row, and how the engine reads it. */
export type StoredInfinity =
  | { column: 'students.enrollment_start_time'; studentId: number; stored: 'infinity' | '-infinity'; readAs: string }
  | { column: 'courses.exam_time'; courseId: number; groupId: number; stored: 'infinity' | '-infinity'; readAs: null };

/**
 * A reload of a running engine (several instances): which of the events the load folds in from
 * the log its memory does not hold yet. A reload stops the read copy and replaces the whole state
 * with the database snapshot and the log's tail; the events it brings in that the engine never
 * applied (published by other owners while the copy was stopped, or before it had caught up with
 * the database) are handed back in {@link Loaded.newEvents}, so the engine tells its listeners of
 * them (notices, the admin feed) as it does of every change it applies.
 */
export interface LoadOptions {
  /** Called, in log order, for each event the load folds in; true when the engine's memory lacks it. */
  isNew(e: DomainEvent): boolean;
}

/** What `load` returns: the state and, for a reload ({@link LoadOptions}), the events new to the engine, in log order. */
export type Loaded = LoadedState & { newEvents?: DomainEvent[] };

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

/** A transition about one student, with the section it happened in (null for registry events). */
export interface StudentTransitionRecord extends TransitionRecord {
  courseId: number | null;
  groupId: number | null;
}

/** Running totals after one span of the transition log (see `fillHistory`). */
export interface FillPoint {
  /** The last transition of the span, ISO 8601. */
  at: string;
  registered: number;
  queued: number;
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

/**
 * Fields the database insists on (NOT NULL) that the API leaves optional: the Go service's own
 * database.sql declares them NOT NULL, the engine's schema does not. On such a database a record
 * without them could never be written, and the batcher would stop at its event for good after the
 * change had been acknowledged; so the API refuses it up front (400) instead.
 */
export interface StorageRequirements {
  sectionDepartment: boolean;
  studentDepartment: boolean;
  studentEntryYear: boolean;
  staffDepartment: boolean;
}

export const NO_STORAGE_REQUIREMENTS: StorageRequirements = Object.freeze({
  sectionDepartment: false,
  studentDepartment: false,
  studentEntryYear: false,
  staffDepartment: false,
});

export interface Persistence {
  readonly mode: 'embedded' | 'full';
  /** What the database's schema requires beyond the API's own rules (read after `migrate`). */
  requirements?(): Promise<StorageRequirements>;
  /** Creates or upgrades the schema (idempotent). */
  migrate(): Promise<void>;
  /**
   * Reads the acknowledged state: everything whose append ever resolved, nothing else. With
   * `opts` (a reload), also the events folded in that the engine's memory lacks (full mode; the
   * embedded store has one writer and no read copy, and returns none).
   */
  load(opts?: LoadOptions): Promise<Loaded>;
  /**
   * Appends events to the ordered log, in call order. Resolves once they are durable; rejects with
   * an EngineError('UNAVAILABLE') otherwise. Calls are batched inside; callers never wait for each
   * other's round trips.
   */
  append(events: DomainEvent[]): Promise<void>;
  /**
   * Most recent transitions of one section, newest first; with `beforeSeq`, those before that
   * sequence number (the next page back: a busy section has far more than one page holds).
   */
  recentTransitions(courseId: number, groupId: number, limit: number, beforeSeq?: number): Promise<TransitionRecord[]>;
  /** Most recent transitions about one student, across sections, newest first (the admin's history). */
  studentTransitions(studentId: number, limit: number): Promise<StudentTransitionRecord[]>;
  /**
   * Seats taken and queue places held over time (one section, or the whole term), in at most
   * `buckets` points, oldest first. In full mode this is what the batcher has written so far.
   */
  fillHistory(opts: { buckets: number; section?: { courseId: number; groupId: number } }): Promise<FillPoint[]>;
  readiness(): Promise<ReadinessReport>;
  close(): Promise<void>;
  /** Seat watches, webhooks and the transitions read back for resumed notice streams (issue 16). */
  readonly notices?: NoticeStore;
}

/**
 * The shard of a course (docs/scale-out.md, section 1): FNV-1a of its decimal id, modulo the
 * number of shards. Every group of a course shares its shard, so a change of group, and the
 * one-group-per-course rule, are always decided by one owner.
 */
export function shardOfCourse(courseId: number, shards: number): number {
  if (shards <= 1) return 0;
  const s = String(courseId);
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}

/**
 * The shard of a student's home (docs/scale-out.md, section 4): the owner of this shard serialises
 * the student's writes when several instances own shards. Same hash as the courses'.
 */
export function homeShardOf(studentId: number, shards: number): number {
  return shardOfCourse(studentId, shards);
}

/** The shard an event belongs to: its section's (an action used goes with its section command), or shard 0 for the registry (a student's record changed by staff too). */
export function shardOfEvent(e: DomainEvent, shards: number): number {
  switch (e.type) {
    case 'actionUsed':
      return e.forCourse === undefined ? 0 : shardOfCourse(e.forCourse, shards);
    case 'studentCreated':
    case 'studentUpdated':
    case 'staffCreated':
    case 'staffUpdated':
    case 'departmentCreated':
      return 0;
    default:
      return shardOfCourse(e.courseId, shards);
  }
}

/** Where a write for a shard goes: this instance, or the owner's address (null while nobody owns it). */
export type WriteRoute = { self: true } | { self: false; address: string | null };

/**
 * What several instances need from storage besides {@link Persistence} (full mode only): whose
 * write it is, a read copy that follows the log, and a way to wait until that copy is current.
 */
export interface ClusterMembership {
  readonly shards: number;
  readonly instanceId: string;
  /** Live instances other than this one (heartbeats in the lease table), as of the last lease round. */
  readonly peers: number;
  /** Who takes writes for a shard, from the lease table (cached, refreshed every few hundred ms). */
  routeWrite(shard: number): WriteRoute;
  /**
   * Lets a write for a shard this instance serves through, counted until the returned function is
   * called (when it is answered); null when the write must go elsewhere. A shard is given up (to a
   * newer instance, or at a hand-over) only once its admitted writes are answered.
   * `forDrainingHome`: a student's write its home holds while the home's own shard drains; taken
   * while this shard drains too, as long as that drain still waits for an admitted write, so two
   * drains never wait on each other's writes (nor a home's drain on a write for its own shard).
   */
  admitWrite(shard: number, opts?: { forDrainingHome?: boolean }): (() => void) | null;
  /**
   * Whether this instance may decide a write for the shard now: it holds the lease and its memory
   * was loaded under it (true also while an admitted write drains before a release).
   */
  decides(shard: number): boolean;
  /** Re-reads the lease table now (after a forward was refused). */
  refreshRoutes(): Promise<void>;
  /**
   * The lease table cannot be reached (the database is away): a shard with no owner now gets none
   * until it is back, so a write for it is refused at once instead of waiting for a takeover.
   */
  readonly storageUnreachable: boolean;
  /** Resolves once this instance's read copy has consumed the log up to now (read-your-writes). */
  syncReads(timeoutMs: number): Promise<boolean>;
  /** Events of other instances (and of this one after a rollback), as the read copy receives them. */
  follow(listener: (events: DomainEvent[]) => void): void;
  /** Called after this instance gained a shard (and published its fence): reload, then serve. */
  onGained(listener: () => void): void;
  /** Graceful shutdown: stop taking writes, drain, release every lease. */
  handOver(): Promise<void>;
  /**
   * The server listens now: an instance that found live peers at its start took no lease so far
   * (none may route a write to it before it accepts connections); from now on it takes its fair
   * share, each shard fenced and reloaded before it is served. A no-op otherwise.
   */
  join(): void;
}
