import type { Logger } from 'pino';
import { isUndecodableClassTime } from '../actors/class-time.js';
import { evolveSection, initialSectionContext, membershipOf, sectionKey } from '../actors/section-logic.js';
import type { Department, StaffChanges, StaffRecord, StudentChanges, StudentRecord } from '../actors/student-rules.js';
import type { Membership, SectionContext } from '../actors/types.js';
import { isKnownEvent, shardOfCourse, type ClusterMembership, type DomainEvent, type FillPoint, type LoadedState, type Persistence, type StoredInfinity, type StudentTransitionRecord, type TransitionRecord } from '../persistence/types.js';
import { DurabilityTracker } from './durability-tracker.js';
import { EnrollmentUseCases } from './enrollment.js';
import { SectionHost } from './section-host.js';
import { StudentDirectory } from './student-directory.js';
import { sectionView, type HeldSection, type ImportBatch, type NewSection, type RequestMeta, type SectionPatch, type SectionView, type SwapRequest } from './views.js';

export type { HeldSection, ImportBatch, NewSection, RequestMeta, SectionPatch, SectionView, SwapRequest } from './views.js';

/** What the admin page's totals show; see {@link Engine.registrarSummary}. */
export interface RegistrarSummary {
  sections: number;
  students: number;
  /** Students registered (holding a seat) in at least one section. */
  studentsHolding: number;
  /** Students waiting in at least one reserve queue. */
  studentsQueued: number;
  /** Open sections with no free seat. */
  sectionsFull: number;
  sectionsClosed: number;
  /** Sections with at least one student in their reserve queue. */
  sectionsWaitlisted: number;
}

export type TransitionListener = (events: DomainEvent[]) => void;
/** Told after a reload from storage, with every section's state then (all of it durable). */
export type ReloadListener = (sections: readonly SectionContext[]) => void;

export interface EngineDeps {
  persistence: Persistence;
  logger: Logger;
  enrollmentWindowMs: number;
  /** Injected clock, so tests can move through enrollment windows. */
  now?: () => number;
  /** Stop section actors idle for this long (ms); each keeps its persisted snapshot. Default 60 s. */
  passivateAfterMs?: number;
  /** Requests one student may have waiting or running at once; one more gets 503 OVERLOADED. Default 16. */
  studentMailboxLimit?: number;
  /** Several instances (full mode): the read copy's events and changes of shard ownership. */
  cluster?: ClusterMembership;
}

/** Default of {@link EngineDeps.studentMailboxLimit}: a student's own client never needs more. */
export const DEFAULT_STUDENT_MAILBOX_LIMIT = 16;

/**
 * The enrollment engine: the one object the HTTP layer and main.ts talk to. It composes four roles
 * (see README.md): the section host (one XState actor per section), the student directory
 * (students, holdings, mailboxes), the durability tracker (what is durable, rollback) and the
 * enrollment use cases. It knows the actors and the persistence interface, nothing of HTTP.
 * Sections are addressed by (course_id, group_id) alone, so they can later be hosted by whichever
 * process owns their shard.
 */
export class Engine {
  private readonly persistence: Persistence;
  private readonly log: Logger;
  private readonly listeners = new Set<TransitionListener>();
  private readonly reloadListeners = new Set<ReloadListener>();
  private readonly host: SectionHost;
  private readonly directory: StudentDirectory;
  private readonly tracker: DurabilityTracker;
  private readonly useCases: EnrollmentUseCases;
  private readonly passivateAfterMs: number;
  /**
   * Each section's view, by the context it was made from. A context is replaced, never changed,
   * on every event, and the machine's resting state follows from it, so an unchanged section's
   * view is made once: listing 1,500 sections, as every student's catalog page does on
   * registration day, then reads no snapshot (and the HTTP layer can keep each view's JSON).
   */
  private readonly views = new WeakMap<SectionContext, SectionView>();
  private passivationTimer: NodeJS.Timeout | null = null;
  private started = false;

  constructor(deps: EngineDeps) {
    this.persistence = deps.persistence;
    this.log = deps.logger.child({ module: 'engine' });
    this.passivateAfterMs = deps.passivateAfterMs ?? 60_000;
    this.host = new SectionHost(this.log, this.passivateAfterMs);
    this.directory = new StudentDirectory(deps.studentMailboxLimit ?? DEFAULT_STUDENT_MAILBOX_LIMIT);
    this.tracker = new DurabilityTracker(this.persistence, this.host, this.directory, this.log, {
      rebuild: (state) => this.rebuild(state),
      durable: (events) => this.notify(events),
      reloaded: () => this.notifyReloaded(),
    });
    this.useCases = new EnrollmentUseCases({
      host: this.host,
      directory: this.directory,
      tracker: this.tracker,
      now: deps.now ?? Date.now,
      enrollmentWindowMs: deps.enrollmentWindowMs,
      ...(deps.cluster ? { owns: ownsVia(deps.cluster) } : {}),
    });
    if (deps.cluster) {
      deps.cluster.follow((events) => this.applyFollowed(events));
      // A lease won or lost: reload (replaying up to the fence) before deciding anything more.
      deps.cluster.onGained(() => {
        if (this.started) this.tracker.requestReload();
      });
    }
  }

  /** Loads the acknowledged state; call once before serving. */
  async start(): Promise<void> {
    const t0 = performance.now();
    const loaded = await this.persistence.load();
    this.rebuild(loaded);
    this.tracker.reset();
    this.started = true;
    this.passivationTimer = setInterval(() => this.passivateIdle(), Math.max(1000, this.passivateAfterMs / 2));
    this.passivationTimer.unref();
    this.log.info(
      {
        sections: this.host.size,
        students: this.directory.students.size,
        staff: this.directory.staff.size,
        ms: Math.round(performance.now() - t0),
      },
      'state loaded',
    );
    this.warnOverfull();
    this.warnUndecodableClassTimes();
    this.warnStoredInfinities(loaded.infinities ?? []);
  }

  /**
   * `infinity` / `-infinity` timestamps come only from rows written straight into the database (no
   * API takes them). They are read as instants the rules can use (an enrollment start of infinity
   * as 9999-12-31, whose window never opens; -infinity as 0001-01-01, whose window closed; an exam
   * time of either as none); the stored value is kept until the row is next written, so the
   * registrar is told, once, at start, which rows these are.
   */
  private warnStoredInfinities(infinities: readonly StoredInfinity[]): void {
    if (infinities.length === 0) return;
    this.log.warn(
      { storedInfinities: infinities.length, rows: infinities.slice(0, 20) },
      'rows loaded with an infinity or -infinity timestamp: an enrollment_start_time of infinity is read as 9999-12-31T23:59:59Z (the window never opens), -infinity as 0001-01-01T00:00:00Z (the window closed), an exam_time of either as no exam time (no clash); a change to the row through the API writes the value read; set the real value (PATCH /students/{id} or /sections/{course}/{group}) to settle them',
    );
  }

  /**
   * A stored class_time that does not decode to a valid slot (the API refuses it, so it came from
   * rows written straight into the database: an operator, the Go service's data) is served and
   * checked as no class time (class-time.ts, classSlot): no slots listed, no clash. The stored value
   * is kept as it is, so the registrar is told, once, at start, which sections these are.
   */
  private warnUndecodableClassTimes(): void {
    const bad: { courseId: number; groupId: number; classTime: number }[] = [];
    for (const key of this.host.keys()) {
      const { info } = this.host.context(key);
      if (info.classTime !== null && isUndecodableClassTime(info.classTime)) bad.push({ courseId: info.courseId, groupId: info.groupId, classTime: info.classTime });
    }
    if (bad.length === 0) return;
    this.log.warn(
      { undecodableClassTime: bad.length, sections: bad.slice(0, 20) },
      'sections loaded with a class_time that does not decode to a valid slot (needs a weekday bit and start_minute < end_minute <= 1440): they are served and checked as having no class time (no slots, no clash); the stored value is left as it is; set class_time or class_slot (PATCH /sections/{course}/{group}) to give them one',
    );
  }

  /**
   * Sections holding more students than their numbers allow can only come from the data the engine
   * was started on (the Go service, which several instances could overbook, or rows written by
   * hand): the engine never makes one. Each student keeps their place (nobody is dropped by a
   * start-up), and the section takes nobody into a seat until drops bring it under its capacity;
   * the registrar is told which sections these are, once, at start.
   */
  private warnOverfull(): void {
    const overfull: { courseId: number; groupId: number; registered: number; capacity: number; queued: number; reserveCapacity: number }[] = [];
    for (const key of this.host.keys()) {
      const c = this.host.context(key);
      if (c.registered.length <= c.capacity && c.queue.length <= c.reserveCapacity) continue;
      overfull.push({
        courseId: c.info.courseId,
        groupId: c.info.groupId,
        registered: c.registered.length,
        capacity: c.capacity,
        queued: c.queue.length,
        reserveCapacity: c.reserveCapacity,
      });
    }
    if (overfull.length === 0) return;
    this.log.warn(
      { overfull: overfull.length, sections: overfull.slice(0, 20) },
      'sections loaded with more students than their capacity or reserve capacity (as the data was given): every student keeps their place; no seat is given in them until drops bring them under capacity; raise the capacity or drop students to settle them',
    );
  }

  stop(): void {
    this.started = false;
    this.tracker.stop();
    if (this.passivationTimer) clearInterval(this.passivationTimer);
    this.host.clear();
    this.listeners.clear();
    this.reloadListeners.clear();
  }

  isEmpty(): boolean {
    return this.host.size === 0 && this.directory.students.size === 0 && this.directory.staff.size === 0;
  }

  onTransitions(listener: TransitionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * After each reload from storage (a change of shard ownership, a failed write), once the events
   * it brought in were reported through {@link onTransitions}. A listener that keeps its own copy
   * of the sections can check it against the reloaded state: a change it still lacks then was
   * never reported (e.g. a write answered 503 whose events did reach the log).
   */
  onReloaded(listener: ReloadListener): () => void {
    this.reloadListeners.add(listener);
    return () => this.reloadListeners.delete(listener);
  }

  // -------------------------------------------------------------------------------------------
  // Commands (see enrollment.ts)

  enroll(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<Membership> {
    return this.useCases.enroll(studentId, courseId, groupId, meta);
  }

  drop(studentId: number, courseId: number, meta: RequestMeta): Promise<void> {
    return this.useCases.drop(studentId, courseId, meta);
  }

  changeGroup(studentId: number, courseId: number, newGroupId: number, meta: RequestMeta): Promise<Membership> {
    return this.useCases.changeGroup(studentId, courseId, newGroupId, meta);
  }

  swap(studentId: number, req: SwapRequest, meta: RequestMeta): Promise<Membership> {
    return this.useCases.swap(studentId, req, meta);
  }

  forceEnroll(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<void> {
    return this.useCases.forceEnroll(studentId, courseId, groupId, meta);
  }

  forceDrop(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<void> {
    return this.useCases.forceDrop(studentId, courseId, groupId, meta);
  }

  changeCapacity(courseId: number, groupId: number, capacity: number, meta: RequestMeta): Promise<void> {
    return this.useCases.changeCapacity(courseId, groupId, capacity, meta);
  }

  setClosed(courseId: number, groupId: number, closed: boolean, meta: RequestMeta): Promise<void> {
    return this.useCases.setClosed(courseId, groupId, closed, meta);
  }

  createSection(input: NewSection, meta: RequestMeta): Promise<SectionView> {
    return this.useCases.createSection(input, meta);
  }

  updateSection(courseId: number, groupId: number, patch: SectionPatch, meta: RequestMeta): Promise<SectionView> {
    return this.useCases.updateSection(courseId, groupId, patch, meta);
  }

  /**
   * Promotes students queued in a section that has free seats: the engine never leaves a section
   * so (a free seat promotes the queue head at once), but data the Go service wrote can (SPEC: its
   * promotion never reached the database correctly), and newcomers would then take those seats
   * ahead of the queue. Each such section is sent an empty settings change, whose promotion of the
   * queue into free seats is the section's own rule and durable like any other change. A section
   * this instance may not write (another owner in a cluster) is counted as failed and left to its owner.
   */
  async promoteStrandedQueues(meta: RequestMeta): Promise<{ sections: number; promoted: number; failed: number }> {
    let sections = 0;
    let promoted = 0;
    let failed = 0;
    // The stored contexts, not snapshots: reading every section this way allocates nothing.
    const stranded: SectionContext[] = [];
    for (const key of this.host.keys()) {
      const c = this.host.context(key);
      if (c.queue.length > 0 && c.registered.length < c.capacity) stranded.push(c);
    }
    for (const c of stranded) {
      sections += 1;
      try {
        const after = await this.useCases.updateSection(c.info.courseId, c.info.groupId, {}, meta);
        promoted += after.registeredCount - c.registered.length;
      } catch {
        failed += 1;
      }
    }
    return { sections, promoted, failed };
  }

  createStudent(student: StudentRecord, meta: RequestMeta): Promise<void> {
    return this.useCases.createStudent(student, meta);
  }

  /** A registrar's correction of a student's record; resolves with the record once durable (see EnrollmentUseCases.updateStudent). */
  updateStudent(studentId: number, changes: StudentChanges, meta: RequestMeta, precondition?: (record: StudentRecord) => void): Promise<StudentRecord> {
    return this.useCases.updateStudent(studentId, changes, meta, precondition);
  }

  /** A staff member's new password (their own change or an admin's reset); resolves once durable. */
  updateStaff(staffId: number, changes: StaffChanges, meta: RequestMeta, precondition?: (record: StaffRecord) => void): Promise<void> {
    return this.useCases.updateStaff(staffId, changes, meta, precondition);
  }

  createStaff(staff: StaffRecord, meta: RequestMeta): Promise<void> {
    return this.useCases.createStaff(staff, meta);
  }

  createDepartment(department: Department, meta: RequestMeta): Promise<void> {
    return this.useCases.createDepartment(department, meta);
  }

  importBatch(input: ImportBatch, meta: RequestMeta): Promise<void> {
    return this.useCases.importBatch(input, meta);
  }

  // -------------------------------------------------------------------------------------------
  // Reads: from the section actors' snapshots (and the directory); they never touch storage, so
  // they keep working while it is away.

  getStudent(id: number): StudentRecord | undefined {
    return this.directory.get(id)?.record;
  }

  getStaff(id: number): StaffRecord | undefined {
    return this.directory.staff.get(id);
  }

  listDepartments(): Department[] {
    return [...this.directory.departments.values()];
  }

  studentSections(studentId: number): HeldSection[] {
    const st = this.directory.require(studentId);
    const out: HeldSection[] = [];
    for (const [courseId, groupId] of st.holdings) {
      const key = sectionKey(courseId, groupId);
      if (!this.host.has(key)) continue;
      const read = this.host.read(key);
      const status = membershipOf(read.context, studentId);
      if (status === undefined) continue;
      const held: HeldSection = { section: sectionView(read), status };
      if (status === 'queued') held.queuePosition = read.context.queue.indexOf(studentId) + 1;
      out.push(held);
    }
    return out;
  }

  /**
   * Every section's view (frozen: shared by every caller until the section changes), in the host's
   * order; the same object for a section as long as it has not changed.
   */
  listSections(filter: { department?: number } = {}): SectionView[] {
    const out: SectionView[] = [];
    for (const key of this.host.keys()) {
      const context = this.host.context(key);
      if (filter.department !== undefined && context.info.forDepartment !== filter.department) continue;
      let view = this.views.get(context);
      if (view === undefined) {
        view = Object.freeze(sectionView(this.host.read(key)));
        this.views.set(context, view);
      }
      out.push(view);
    }
    return out;
  }

  getSection(courseId: number, groupId: number): SectionView {
    return sectionView(this.host.read(this.host.require(courseId, groupId)));
  }

  sectionMembers(courseId: number, groupId: number): { registered: number[]; queue: number[] } {
    const ctx = this.host.context(this.host.require(courseId, groupId));
    return { registered: [...ctx.registered], queue: [...ctx.queue] };
  }

  recentTransitions(courseId: number, groupId: number, limit: number, beforeSeq?: number): Promise<TransitionRecord[]> {
    this.host.require(courseId, groupId);
    return this.persistence.recentTransitions(courseId, groupId, limit, beforeSeq);
  }

  /** A student's transitions across sections, newest first (404 for an unknown student). */
  studentTransitions(studentId: number, limit: number): Promise<StudentTransitionRecord[]> {
    this.directory.require(studentId);
    return this.persistence.studentTransitions(studentId, limit);
  }

  /** Seats and queue places over time, for one section or (without one) the whole term. */
  fillHistory(buckets: number, section?: { courseId: number; groupId: number }): Promise<FillPoint[]> {
    if (section) this.host.require(section.courseId, section.groupId);
    return this.persistence.fillHistory(section ? { buckets, section } : { buckets });
  }

  /**
   * The registrar's totals, counted from the section actors' snapshots at the moment of the read.
   * A section is full when it is open and has no free seat (its reserve queue may still have room).
   */
  registrarSummary(): RegistrarSummary {
    const holding = new Set<number>();
    const queued = new Set<number>();
    let full = 0;
    let closed = 0;
    let waitlisted = 0;
    for (const key of this.host.keys()) {
      const ctx = this.host.context(key);
      for (const id of ctx.registered) holding.add(id);
      for (const id of ctx.queue) queued.add(id);
      if (ctx.closed) closed += 1;
      else if (ctx.registered.length >= ctx.capacity) full += 1;
      if (ctx.queue.length > 0) waitlisted += 1;
    }
    return {
      sections: this.host.size,
      students: this.directory.students.size,
      studentsHolding: holding.size,
      studentsQueued: queued.size,
      sectionsFull: full,
      sectionsClosed: closed,
      sectionsWaitlisted: waitlisted,
    };
  }

  /** Whole in-memory state as plain data: for tests comparing the actors with the database. */
  dumpState(): LoadedState {
    return {
      departments: [...this.directory.departments.values()],
      staff: [...this.directory.staff.values()].map((s) => ({ ...s, seq: this.directory.staffSeq.get(s.id) ?? 1 })),
      students: [...this.directory.students.values()].map((s) => ({ ...s.record, seq: s.seq })),
      sections: [...this.host.keys()].map((key) => this.host.context(key)),
    };
  }

  /** Passivates section actors idle for the passivation period (also run by a timer). */
  passivateIdle(now?: number): number {
    return this.host.passivateIdle(now);
  }

  /** Number of section actors currently started (the rest are passivated snapshots). */
  get activeActors(): number {
    return this.host.activeActors;
  }

  /** Students with a mailbox right now (requests queued or running). */
  get activeMailboxes(): number {
    return this.directory.mailboxes.active;
  }

  /** Requests waiting or running in every student mailbox together (for metrics). */
  get queuedRequests(): number {
    return this.directory.mailboxes.queued;
  }

  /** Sections known, running or passivated (for metrics). */
  get sectionCount(): number {
    return this.host.size;
  }

  // -------------------------------------------------------------------------------------------

  private notifyReloaded(): void {
    if (this.reloadListeners.size === 0) return;
    const sections = [...this.host.keys()].map((key) => this.host.context(key));
    for (const l of this.reloadListeners) {
      try {
        l(sections);
      } catch (err) {
        this.log.error({ err }, 'reload listener failed');
      }
    }
  }

  private notify(events: DomainEvent[]): void {
    for (const l of this.listeners) {
      try {
        l(events);
      } catch (err) {
        this.log.error({ err }, 'transition listener failed');
      }
    }
  }

  /**
   * The read copy: events another instance published (or this one, when memory was rolled back
   * after they reached the log), applied where this copy does not have them yet, by sequence
   * number, exactly as the replay folds them. Live feeds see them as they see local changes.
   */
  private applyFollowed(events: DomainEvent[]): void {
    if (!this.started) return;
    const applied: DomainEvent[] = [];
    const changed = new Map<string, SectionContext>();
    for (const e of events) {
      if (!isKnownEvent(e)) {
        // A newer version's event type (a rolling upgrade): not folded here (the batcher and a
        // reload stop at it instead), said for each such event.
        this.log.warn({ type: (e as { type: string }).type }, 'the read copy skipped an event type this version does not know: upgrade this instance');
        continue;
      }
      switch (e.type) {
        case 'departmentCreated':
          if (this.directory.departments.has(e.department.id)) continue;
          this.directory.departments.set(e.department.id, e.department);
          break;
        case 'staffCreated':
          if (this.directory.staff.has(e.staff.id)) continue;
          this.directory.staff.set(e.staff.id, e.staff);
          break;
        case 'staffUpdated': {
          const s = this.directory.staff.get(e.staffId);
          if (!s || e.seq <= (this.directory.staffSeq.get(e.staffId) ?? 1)) continue;
          this.directory.staff.set(e.staffId, { ...s, ...e.changes });
          this.directory.staffSeq.set(e.staffId, e.seq);
          break;
        }
        case 'studentCreated':
          if (this.directory.get(e.student.id)) continue;
          this.directory.addStudent(e.student, e.seq);
          break;
        case 'actionUsed': {
          const st = this.directory.get(e.studentId);
          if (!st || e.seq <= st.seq) continue;
          st.record = { ...st.record, remainingActions: e.remainingActions };
          st.seq = e.seq;
          break;
        }
        case 'studentUpdated': {
          const st = this.directory.get(e.studentId);
          if (!st || e.seq <= st.seq) continue;
          st.record = { ...st.record, ...e.changes };
          st.seq = e.seq;
          break;
        }
        default: {
          const key = sectionKey(e.courseId, e.groupId);
          const prev = changed.get(key) ?? (this.host.has(key) ? this.host.context(key) : undefined);
          if (e.type === 'sectionCreated') {
            if (prev) continue;
            changed.set(key, evolveSection(initialSectionContext(e.info, e), e));
          } else {
            if (!prev || e.seq <= prev.seq) continue;
            changed.set(key, evolveSection(prev, e));
            this.directory.index(e);
          }
        }
      }
      applied.push(e);
    }
    for (const ctx of changed.values()) this.host.replace(ctx);
    if (applied.length > 0) this.notify(applied);
  }

  /** Replaces the whole in-memory state with one loaded from storage. */
  private rebuild(state: LoadedState): void {
    this.host.clear();
    this.directory.students = new Map();
    this.directory.staff = new Map();
    this.directory.staffSeq = new Map();
    for (const { seq, ...record } of state.staff) {
      this.directory.staff.set(record.id, record);
      if (seq > 1) this.directory.staffSeq.set(record.id, seq);
    }
    this.directory.departments = new Map(state.departments.map((d) => [d.id, d]));
    for (const s of state.students) {
      const { seq, ...record } = s;
      this.directory.addStudent(record, seq);
    }
    for (const ctx of state.sections) {
      this.host.add(ctx);
      this.directory.indexMembers(ctx);
    }
  }
}

function ownsVia(cluster: ClusterMembership): (courseId: number | null) => boolean {
  return (courseId) => cluster.decides(courseId === null ? 0 : shardOfCourse(courseId, cluster.shards));
}

export function createEngine(deps: EngineDeps): Engine {
  return new Engine(deps);
}
