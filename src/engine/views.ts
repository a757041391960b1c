import type { Department, StaffRecord, StudentRecord } from '../actors/student-rules.js';
import type { Membership, SectionInfo, Sex } from '../actors/types.js';
import type { SectionRead } from './section-host.js';

/**
 * What the engine answers with: plain views built from a section actor's snapshot at the moment of
 * the read, and the shapes of the requests it takes. Re-exported by engine.ts, the module other
 * layers import.
 */

/** Who asked, and under which request id: stamped on every transition the request causes. */
export interface RequestMeta {
  requestId: string;
  /** `student:<id>`, `staff:<id>` or `system`. */
  actor: string;
}

export interface SectionView {
  info: SectionInfo;
  capacity: number;
  reserveCapacity: number;
  sexLock: Sex | null;
  closed: boolean;
  /** Machine state, e.g. `open.reserveOnly`. */
  state: string;
  registeredCount: number;
  queueLength: number;
  seq: number;
}

export interface HeldSection {
  section: SectionView;
  status: Membership;
  /** 1-based place in the reserve queue, when queued. */
  queuePosition?: number;
}

export interface NewSection {
  info: SectionInfo;
  capacity: number;
  reserveCapacity: number;
  sexLock: Sex | null;
  closed?: boolean;
}

/** A conditional swap: `enroll` is decided first; `drop` is left only if it gave a place. */
export interface SwapRequest {
  drop: { courseId: number; groupId: number };
  enroll: { courseId: number; groupId: number };
  /** Accept a reserve-queue place in `enroll` (default: a seat or nothing). */
  queueOk?: boolean;
}

/**
 * Many registry and section-creation events at once (demo data, imports), and optionally the
 * activity that followed: enrollments and closures, each at its own time.
 */
export interface ImportBatch {
  departments: Department[];
  staff: StaffRecord[];
  students: StudentRecord[];
  sections: NewSection[];
  /**
   * Enrollments decided by the sections' own rules (window at `at`, sex lock, units, conflicts,
   * seat or queue place) in this order; a refused one is skipped, as the request would have been.
   */
  enrollments?: { studentId: number; courseId: number; groupId: number; at: number }[];
  /** Sections closed by staff at `at`, after the enrollments. */
  closures?: { courseId: number; groupId: number; at: number }[];
}

export interface SectionPatch {
  capacity?: number;
  reserveCapacity?: number;
  sexLock?: Sex | null;
  info?: Partial<Omit<SectionInfo, 'courseId' | 'groupId'>>;
  /**
   * Staff force: apply a change of units, exam or class time even where it puts a member over
   * their units limit or into a clash (SPEC section 4: "unless forced by staff"). Without it such a
   * change is refused (MEMBER_RULES_CONFLICT).
   */
  force?: boolean;
}

export function sectionView(r: SectionRead): SectionView {
  const c = r.context;
  return {
    info: c.info,
    capacity: c.capacity,
    reserveCapacity: c.reserveCapacity,
    sexLock: c.sexLock,
    closed: c.closed,
    state: r.state,
    registeredCount: c.registered.length,
    queueLength: c.queue.length,
    seq: c.seq,
  };
}
