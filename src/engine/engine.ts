import type { Logger } from 'pino';
import { getInitialSnapshot } from 'xstate';
import { createSectionActor, sectionMachine, sectionStateName, type SectionActor } from '../actors/section-machine.js';
import { initialSectionContext, membershipOf, sectionKey } from '../actors/section-logic.js';
import {
  checkActionsLeft,
  checkWindow,
  type Department,
  type RegistryEvent,
  type RuleViolation,
  type StaffRecord,
  type StudentRecord,
} from '../actors/student-rules.js';
import type {
  Cause,
  Membership,
  SectionCommand,
  SectionContext,
  SectionEmitted,
  SectionEvent,
  SectionInfo,
  SectionRefusal,
  SettingsChange,
  Sex,
} from '../actors/types.js';
import { EngineError, isEngineError } from '../errors.js';
import type { DomainEvent, LoadedState, Persistence, TransitionRecord } from '../persistence/types.js';
import { createKeyedMailbox } from './keyed-mailbox.js';

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

export interface SectionPatch {
  /** Applied last, in the same step and append as the rest, so a patch is all or nothing. */
  capacity?: number;
  reserveCapacity?: number;
  sexLock?: Sex | null;
  info?: Partial<Omit<SectionInfo, 'courseId' | 'groupId'>>;
}

export type TransitionListener = (events: DomainEvent[]) => void;

export interface EngineDeps {
  persistence: Persistence;
  logger: Logger;
  enrollmentWindowMs: number;
  /** Injected clock, so tests can move through enrollment windows. */
  now?: () => number;
  /** Stop section actors idle for this long (ms); their context stays in memory. Default 60 s. */
  passivateAfterMs?: number;
}

/**
 * A hosted section. Its context is always current and serves every read; the XState actor exists
 * only while the section is busy: it is started on the first command and stopped after an idle
 * period (passivation), so 100,000 quiet sections cost their JSON context, not 100,000 actors.
 */
interface SectionEntry {
  ctx: SectionContext;
  actor: SectionActor | null;
  /** Machine state name for `ctx`, computed lazily and cached until the next change. */
  stateName: string | null;
  /** Engine tick of the last command, for passivation. */
  lastUsed: number;
  /** Collects what the actor emits while one command is being processed. */
  sink: SectionEmitted[] | null;
  /** Last context known durable (null: the section's creation is not durable yet). */
  durable: SectionContext | null;
  /** Contexts after each dispatch whose events are not durable yet, oldest first. */
  pending: { seq: number; ctx: SectionContext }[];
}

interface StudentState {
  record: StudentRecord;
  seq: number;
  /** The record as last made durable (null: the student's creation is not durable yet). */
  durable: { record: StudentRecord; seq: number } | null;
  /** course_id -> group_id for every section held (registered or queued). */
  holdings: Map<number, number>;
}

function violation(v: RuleViolation | SectionRefusal): EngineError {
  return new EngineError(v.code, v.reason);
}

/**
 * The enrollment engine: hosts one actor per section, serializes each student's requests through a
 * mailbox, checks the student rules, and answers only once the resulting transitions are durable.
 * It is the only place that knows both the actors and the persistence interface; it knows nothing
 * of HTTP. Sections are addressed by (course_id, group_id) alone, so they can later be hosted by
 * whichever process owns their shard.
 */
export class Engine {
  private readonly persistence: Persistence;
  private readonly log: Logger;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly mailbox = createKeyedMailbox<number>();
  private readonly listeners = new Set<TransitionListener>();

  private sections = new Map<string, SectionEntry>();
  private students = new Map<number, StudentState>();
  private staff = new Map<number, StaffRecord>();
  private departments = new Map<number, Department>();

  /** Set when an append failed: the in-memory state may hold undurable changes until reloaded. */
  private needsReload = false;
  private readonly passivateAfterMs: number;
  private passivationTimer: NodeJS.Timeout | null = null;
  /** Monotonic clock for passivation (not the injectable business clock). */
  private readonly tick = () => performance.now();
  private reloading: Promise<void> | null = null;
  /** Staff and departments whose creation is not durable yet (rolled back on a failed write). */
  private readonly undurableStaff = new Set<number>();
  private readonly undurableDepartments = new Set<number>();
  /** Appends not yet settled; a reload waits for them so it never reads the log while one races in. */
  private readonly inflight = new Set<Promise<void>>();

  constructor(deps: EngineDeps) {
    this.persistence = deps.persistence;
    this.log = deps.logger.child({ module: 'engine' });
    this.windowMs = deps.enrollmentWindowMs;
    this.now = deps.now ?? Date.now;
    this.passivateAfterMs = deps.passivateAfterMs ?? 60_000;
  }

  /** Loads the acknowledged state; call once before serving. */
  async start(): Promise<void> {
    const t0 = performance.now();
    this.rebuild(await this.persistence.load());
    this.passivationTimer = setInterval(() => this.passivateIdle(), Math.max(1000, this.passivateAfterMs / 2));
    this.passivationTimer.unref();
    this.log.info(
      {
        sections: this.sections.size,
        students: this.students.size,
        staff: this.staff.size,
        ms: Math.round(performance.now() - t0),
      },
      'state loaded',
    );
  }

  stop(): void {
    if (this.passivationTimer) clearInterval(this.passivationTimer);
    for (const e of this.sections.values()) e.actor?.stop();
    this.listeners.clear();
  }

  isEmpty(): boolean {
    return this.sections.size === 0 && this.students.size === 0 && this.staff.size === 0;
  }

  onTransitions(listener: TransitionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // -------------------------------------------------------------------------------------------
  // Student commands

  /** Rule order of SPEC section 4; resolves with where the student landed once it is durable. */
  enroll(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<Membership> {
    return this.withStudent(studentId, async (st) => {
      const now = this.now();
      const w = checkWindow(st.record, now, this.windowMs);
      if (w) throw violation(w);
      const entry = this.sectionEntry(courseId, groupId);
      // The section applies SPEC rules 2-7 itself, in order; it needs the student's schedule for 4-6.
      const events = this.dispatch(entry, {
        type: 'enroll',
        studentId,
        gender: st.record.gender,
        schedule: { maxUnits: st.record.maxUnits, held: this.heldInfos(st), checkSameCourse: true },
        cause: this.cause(meta, now),
      });
      await this.persist(events);
      return events[0]?.type === 'studentQueued' ? 'queued' : 'registered';
    });
  }

  /** Needs the window and a remaining action; dropping a registered student promotes the queue head. */
  drop(studentId: number, courseId: number, meta: RequestMeta): Promise<void> {
    return this.withStudent(studentId, async (st) => {
      const now = this.now();
      const w = checkWindow(st.record, now, this.windowMs) ?? checkActionsLeft(st.record);
      if (w) throw violation(w);
      const groupId = st.holdings.get(courseId);
      if (groupId === undefined) throw new EngineError('NOT_ENROLLED', `you hold no group of course ${courseId}`);
      const cause = this.cause(meta, now);
      const events: DomainEvent[] = this.dispatch(this.sectionEntry(courseId, groupId), {
        type: 'drop',
        studentId,
        reason: 'dropped',
        cause,
      });
      events.push(this.useAction(st, cause));
      await this.persist(events);
    });
  }

  /**
   * Moves the student to another group of the same course atomically: the target's rules are
   * checked and a place taken first, then the old group is left. If the target refuses, nothing
   * has changed.
   */
  changeGroup(studentId: number, courseId: number, newGroupId: number, meta: RequestMeta): Promise<Membership> {
    return this.withStudent(studentId, async (st) => {
      const now = this.now();
      const w = checkWindow(st.record, now, this.windowMs) ?? checkActionsLeft(st.record);
      if (w) throw violation(w);
      const oldGroupId = st.holdings.get(courseId);
      if (oldGroupId === undefined) throw new EngineError('NOT_ENROLLED', `you hold no group of course ${courseId}`);
      if (oldGroupId === newGroupId) {
        throw new EngineError('SAME_GROUP', `you already hold group ${newGroupId} of course ${courseId}`);
      }
      const target = this.sectionEntry(courseId, newGroupId);
      const source = this.sectionEntry(courseId, oldGroupId);
      const cause = this.cause(meta, now);
      const taken = this.dispatch(target, {
        type: 'enroll',
        studentId,
        gender: st.record.gender,
        schedule: { maxUnits: st.record.maxUnits, held: this.heldInfos(st, courseId), checkSameCourse: false },
        movedIn: true,
        cause,
      });
      let left: SectionEvent[];
      try {
        left = this.dispatch(source, { type: 'drop', studentId, reason: 'movedOut', cause });
      } catch (err) {
        // The index said the student holds the source; if the actor disagrees, memory is suspect
        // (and the target place just taken is not durable): roll back before answering.
        this.needsReload = true;
        await this.ready().catch(() => undefined);
        throw err;
      }
      const events: DomainEvent[] = [...taken, ...left, this.useAction(st, cause)];
      await this.persist(events);
      return taken[0]?.type === 'studentQueued' ? 'queued' : 'registered';
    });
  }

  // -------------------------------------------------------------------------------------------
  // Staff commands

  /** Skips the student rules; a full section grows by one seat. One group per course still holds. */
  forceEnroll(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<void> {
    return this.withStudent(studentId, async (st) => {
      const entry = this.sectionEntry(courseId, groupId);
      const held = st.holdings.get(courseId);
      if (held !== undefined && held !== groupId) {
        throw new EngineError('SAME_COURSE', `student ${studentId} already holds group ${held} of course ${courseId}`);
      }
      const events = this.dispatch(entry, { type: 'forceEnroll', studentId, cause: this.cause(meta) });
      await this.persist(events);
    });
  }

  /** Uses no action of the student's; promotes from the queue. */
  forceDrop(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<void> {
    return this.withStudent(studentId, async () => {
      const entry = this.sectionEntry(courseId, groupId);
      const events = this.dispatch(entry, { type: 'drop', studentId, reason: 'forceDropped', cause: this.cause(meta) });
      await this.persist(events);
    });
  }

  /** Cannot go below the registered count; growth promotes from the queue in order. */
  async changeCapacity(courseId: number, groupId: number, capacity: number, meta: RequestMeta): Promise<void> {
    await this.ready();
    const entry = this.sectionEntry(courseId, groupId);
    await this.persist(this.dispatch(entry, { type: 'changeSettings', change: { capacity }, cause: this.cause(meta) }));
  }

  async setClosed(courseId: number, groupId: number, closed: boolean, meta: RequestMeta): Promise<void> {
    await this.ready();
    const entry = this.sectionEntry(courseId, groupId);
    const cause = this.cause(meta);
    await this.persist(this.dispatch(entry, closed ? { type: 'close', cause } : { type: 'reopen', cause }));
  }

  async createSection(input: NewSection, meta: RequestMeta): Promise<SectionView> {
    await this.ready();
    const { courseId, groupId } = input.info;
    const key = sectionKey(courseId, groupId);
    if (this.sections.has(key)) {
      throw new EngineError('ALREADY_EXISTS', `course ${courseId} group ${groupId} already exists`);
    }
    const ctx: SectionContext = { ...initialSectionContext(input.info, input), seq: 1 };
    const event: SectionEvent = {
      type: 'sectionCreated',
      courseId,
      groupId,
      seq: 1,
      cause: this.cause(meta),
      info: input.info,
      capacity: input.capacity,
      reserveCapacity: input.reserveCapacity,
      sexLock: input.sexLock,
      closed: ctx.closed,
    };
    const entry = this.addSection(ctx, false);
    await this.persist([event]);
    return this.view(entry);
  }

  /**
   * Changes capacity, reserve capacity, sex lock and descriptive fields in one step and one append:
   * a refused patch changes nothing, and no other request sees (or slips between) half of it.
   */
  async updateSection(courseId: number, groupId: number, patch: SectionPatch, meta: RequestMeta): Promise<SectionView> {
    await this.ready();
    const entry = this.sectionEntry(courseId, groupId);
    const cause = this.cause(meta);
    // One command, so the section checks every field before it changes any: all or nothing.
    const change: SettingsChange = {};
    if (patch.capacity !== undefined) change.capacity = patch.capacity;
    if (patch.reserveCapacity !== undefined) change.reserveCapacity = patch.reserveCapacity;
    if (patch.sexLock !== undefined) change.sexLock = patch.sexLock;
    if (patch.info && Object.keys(patch.info).length > 0) change.info = patch.info;
    const memberSexes: Record<number, Sex> = {};
    if (patch.sexLock !== undefined && patch.sexLock !== null) {
      for (const id of [...entry.ctx.registered, ...entry.ctx.queue]) {
        const g = this.students.get(id)?.record.gender;
        if (g !== undefined) memberSexes[id] = g;
      }
    }
    const events = this.dispatch(entry, { type: 'changeSettings', change, memberSexes, cause });
    await this.persist(events);
    return this.view(entry);
  }

  async createStudent(student: StudentRecord, meta: RequestMeta): Promise<void> {
    await this.ready();
    if (this.students.has(student.id)) throw new EngineError('ALREADY_EXISTS', `student ${student.id} already exists`);
    const st: StudentState = { record: { ...student }, seq: 1, holdings: new Map(), durable: null };
    this.students.set(student.id, st);
    await this.persist([{ type: 'studentCreated', seq: 1, student, cause: this.cause(meta) }]);
  }

  async createStaff(staff: StaffRecord, meta: RequestMeta): Promise<void> {
    await this.ready();
    if (this.staff.has(staff.id)) throw new EngineError('ALREADY_EXISTS', `staff ${staff.id} already exists`);
    this.staff.set(staff.id, { ...staff });
    this.undurableStaff.add(staff.id);
    await this.persist([{ type: 'staffCreated', seq: 1, staff, cause: this.cause(meta) }]);
  }

  async createDepartment(department: Department, meta: RequestMeta): Promise<void> {
    await this.ready();
    if (this.departments.has(department.id)) {
      throw new EngineError('ALREADY_EXISTS', `department ${department.id} already exists`);
    }
    this.departments.set(department.id, { ...department });
    this.undurableDepartments.add(department.id);
    await this.persist([{ type: 'departmentCreated', seq: 1, department, cause: this.cause(meta) }]);
  }

  /**
   * Appends many registry and section-creation events at once (demo data, imports), in one
   * durable batch instead of thousands of round trips.
   */
  async importBatch(
    input: { departments: Department[]; staff: StaffRecord[]; students: StudentRecord[]; sections: NewSection[] },
    meta: RequestMeta,
  ): Promise<void> {
    await this.ready();
    const cause = this.cause(meta);
    const events: DomainEvent[] = [];
    for (const d of input.departments) {
      if (this.departments.has(d.id)) continue;
      this.departments.set(d.id, d);
      this.undurableDepartments.add(d.id);
      events.push({ type: 'departmentCreated', seq: 1, department: d, cause });
    }
    for (const s of input.staff) {
      if (this.staff.has(s.id)) continue;
      this.staff.set(s.id, s);
      this.undurableStaff.add(s.id);
      events.push({ type: 'staffCreated', seq: 1, staff: s, cause });
    }
    for (const s of input.students) {
      if (this.students.has(s.id)) continue;
      this.students.set(s.id, { record: { ...s }, seq: 1, holdings: new Map(), durable: null });
      events.push({ type: 'studentCreated', seq: 1, student: s, cause });
    }
    for (const s of input.sections) {
      const { courseId, groupId } = s.info;
      if (this.sections.has(sectionKey(courseId, groupId))) continue;
      const ctx: SectionContext = { ...initialSectionContext(s.info, s), seq: 1 };
      this.addSection(ctx, false);
      events.push({
        type: 'sectionCreated',
        courseId,
        groupId,
        seq: 1,
        cause,
        info: s.info,
        capacity: s.capacity,
        reserveCapacity: s.reserveCapacity,
        sexLock: s.sexLock,
        closed: ctx.closed,
      });
    }
    await this.persist(events);
  }

  // -------------------------------------------------------------------------------------------
  // Reads (served from memory; they never touch storage, so they keep working while it is away)

  getStudent(id: number): StudentRecord | undefined {
    return this.students.get(id)?.record;
  }

  getStaff(id: number): StaffRecord | undefined {
    return this.staff.get(id);
  }

  listDepartments(): Department[] {
    return [...this.departments.values()];
  }

  studentSections(studentId: number): HeldSection[] {
    const st = this.students.get(studentId);
    if (!st) throw new EngineError('STUDENT_NOT_FOUND', `student ${studentId} does not exist`);
    const out: HeldSection[] = [];
    for (const [courseId, groupId] of st.holdings) {
      const entry = this.sections.get(sectionKey(courseId, groupId));
      if (!entry) continue;
      const ctx = entry.ctx;
      const status = membershipOf(ctx, studentId);
      if (status === undefined) continue;
      const held: HeldSection = { section: this.view(entry), status };
      if (status === 'queued') held.queuePosition = ctx.queue.indexOf(studentId) + 1;
      out.push(held);
    }
    return out;
  }

  listSections(filter: { department?: number } = {}): SectionView[] {
    const out: SectionView[] = [];
    for (const entry of this.sections.values()) {
      const info = entry.ctx.info;
      if (filter.department !== undefined && info.forDepartment !== filter.department) continue;
      out.push(this.view(entry));
    }
    return out;
  }

  getSection(courseId: number, groupId: number): SectionView {
    return this.view(this.sectionEntry(courseId, groupId));
  }

  sectionMembers(courseId: number, groupId: number): { registered: number[]; queue: number[] } {
    const ctx = this.sectionEntry(courseId, groupId).ctx;
    return { registered: [...ctx.registered], queue: [...ctx.queue] };
  }

  recentTransitions(courseId: number, groupId: number, limit: number): Promise<TransitionRecord[]> {
    this.sectionEntry(courseId, groupId);
    return this.persistence.recentTransitions(courseId, groupId, limit);
  }

  /** Whole in-memory state as plain data: for tests comparing the actors with the database. */
  dumpState(): LoadedState {
    return {
      departments: [...this.departments.values()],
      staff: [...this.staff.values()],
      students: [...this.students.values()].map((s) => ({ ...s.record, seq: s.seq })),
      sections: [...this.sections.values()].map((e) => e.ctx),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private cause(meta: RequestMeta, at: number = this.now()): Cause {
    return { requestId: meta.requestId, actor: meta.actor, at };
  }

  /** Stops actors that have been idle; their (current) context stays. */
  passivateIdle(now: number = this.tick()): number {
    let n = 0;
    for (const e of this.sections.values()) {
      if (e.actor && now - e.lastUsed >= this.passivateAfterMs) {
        e.actor.stop();
        e.actor = null;
        n += 1;
      }
    }
    return n;
  }

  /** Number of section actors currently started (the rest are passivated contexts). */
  get activeActors(): number {
    let n = 0;
    for (const e of this.sections.values()) if (e.actor) n += 1;
    return n;
  }

  private view(entry: SectionEntry): SectionView {
    const c = entry.ctx;
    entry.stateName ??= sectionStateName(getInitialSnapshot(sectionMachine, c));
    return {
      info: c.info,
      capacity: c.capacity,
      reserveCapacity: c.reserveCapacity,
      sexLock: c.sexLock,
      closed: c.closed,
      state: entry.stateName,
      registeredCount: c.registered.length,
      queueLength: c.queue.length,
      seq: c.seq,
    };
  }

  private sectionEntry(courseId: number, groupId: number): SectionEntry {
    const entry = this.sections.get(sectionKey(courseId, groupId));
    if (!entry) throw new EngineError('SECTION_NOT_FOUND', `course ${courseId} group ${groupId} does not exist`);
    return entry;
  }

  private heldInfos(st: StudentState, exceptCourse?: number): SectionInfo[] {
    const out: SectionInfo[] = [];
    for (const [courseId, groupId] of st.holdings) {
      if (courseId === exceptCourse) continue;
      const entry = this.sections.get(sectionKey(courseId, groupId));
      if (entry) out.push(entry.ctx.info);
    }
    return out;
  }

  private useAction(st: StudentState, cause: Cause): RegistryEvent {
    st.record = { ...st.record, remainingActions: st.record.remainingActions - 1 };
    st.seq += 1;
    return { type: 'actionUsed', seq: st.seq, studentId: st.record.id, remainingActions: st.record.remainingActions, cause };
  }

  private addSection(ctx: SectionContext, durable: boolean): SectionEntry {
    const entry: SectionEntry = {
      ctx,
      actor: null,
      stateName: null,
      lastUsed: 0,
      sink: null,
      durable: durable ? ctx : null,
      pending: durable ? [] : [{ seq: ctx.seq, ctx }],
    };
    this.sections.set(sectionKey(ctx.info.courseId, ctx.info.groupId), entry);
    return entry;
  }

  /** Starts the section's actor from its current context if it is passivated. */
  private activate(entry: SectionEntry): SectionActor {
    entry.lastUsed = this.tick();
    if (entry.actor) return entry.actor;
    const actor = createSectionActor({ context: entry.ctx });
    actor.on('*', (e) => entry.sink?.push(e));
    // An error listener keeps XState from rethrowing; dispatch() restores the actor itself.
    actor.subscribe({ error: () => undefined });
    entry.actor = actor;
    return actor;
  }

  /**
   * Sends one command and returns the transition events it caused, or throws its rejection. The
   * actor processes the command synchronously, so the decision and the student-index update happen
   * in one step. An actor that fails is restored from the snapshot it had before the command.
   */
  private dispatch(entry: SectionEntry, cmd: SectionCommand): SectionEvent[] {
    const actor = this.activate(entry);
    const before = entry.ctx;
    const sink: SectionEmitted[] = [];
    entry.sink = sink;
    try {
      actor.send(cmd);
    } finally {
      entry.sink = null;
    }
    const after = actor.getSnapshot();
    if (after.status === 'error') {
      this.log.error({ err: after.error, command: cmd.type, section: sectionKey(before.info.courseId, before.info.groupId) }, 'section actor failed; restored');
      actor.stop();
      entry.actor = null; // the next command starts a fresh actor from the last good context
      throw new EngineError('INTERNAL', 'the section could not process the request; nothing was changed');
    }
    if (after.context !== before) {
      entry.ctx = after.context;
      entry.stateName = sectionStateName(after);
      entry.pending.push({ seq: after.context.seq, ctx: after.context });
    }
    const events: SectionEvent[] = [];
    for (const e of sink) {
      if (e.type === 'commandRefused') throw violation(e);
      events.push(e);
      this.index(e);
    }
    return events;
  }

  /** Keeps the student -> held sections index in step with the section actors. */
  private index(e: SectionEvent): void {
    if (e.type !== 'studentEnrolled' && e.type !== 'studentQueued' && e.type !== 'studentDropped') return;
    const st = this.students.get(e.studentId);
    if (!st) return;
    if (e.type === 'studentDropped') {
      if (st.holdings.get(e.courseId) === e.groupId) st.holdings.delete(e.courseId);
    } else {
      st.holdings.set(e.courseId, e.groupId);
    }
  }

  private withStudent<T>(studentId: number, task: (st: StudentState) => Promise<T>): Promise<T> {
    return this.mailbox.run(studentId, async () => {
      // The hot path: skip the extra await (a microtask per request) when no reload is pending.
      if (this.needsReload || this.reloading) await this.ready();
      const st = this.students.get(studentId);
      if (!st) throw new EngineError('STUDENT_NOT_FOUND', `student ${studentId} does not exist`);
      return task(st);
    });
  }

  /** Waits for (or starts) a reload after a failed append, so no decision is made on undurable state. */
  private async ready(): Promise<void> {
    if (!this.needsReload && !this.reloading) return;
    if (!this.reloading) {
      this.reloading = (async () => {
        try {
          // Appends already on their way settle first (behind a failed one they fail too), so the
          // state loaded is final and no in-flight decision on the old memory is acknowledged.
          await Promise.allSettled([...this.inflight]);
          const state = await this.persistence.load();
          this.rebuild(state);
          this.needsReload = false;
          this.log.warn('state reloaded from storage after a failed write');
        } finally {
          this.reloading = null;
        }
      })();
    }
    try {
      await this.reloading;
    } catch (err) {
      throw new EngineError('UNAVAILABLE', 'storage is unavailable; try again shortly', {
        cause: err instanceof Error ? err.message : String(err),
      });
    }
  }

  private async persist(events: DomainEvent[]): Promise<void> {
    if (events.length === 0) {
      // Nothing to write, but "already so" rests on memory that may hold changes still on their way
      // to storage (a concurrent request's): the answer stands only once those are durable.
      const earlier = this.inflight.size > 0 ? await Promise.allSettled([...this.inflight]) : [];
      if (earlier.some((r) => r.status === 'rejected') || this.needsReload || this.reloading) {
        await this.ready().catch(() => undefined);
        throw new EngineError('UNAVAILABLE', 'storage is unavailable; try again shortly');
      }
      return;
    }
    if (this.needsReload || this.reloading) {
      // A write failed after this request passed ready(): its decision may rest on that undurable
      // change, so it is not written; the reload below discards it with the rest.
      await this.ready().catch(() => undefined);
      throw new EngineError('UNAVAILABLE', 'storage is unavailable; try again shortly');
    }
    const appended = this.persistence.append(events);
    this.inflight.add(appended);
    try {
      await appended;
    } catch (err) {
      if (!isEngineError(err)) this.log.error({ err }, 'append failed');
      // Roll memory back to the last durable state at once, without storage, so reads keep being
      // served (and never show a refused change) while storage is away. The next write reloads
      // from storage first, which also brings in anything whose outcome was in doubt.
      this.rollbackToDurable();
      if (isEngineError(err)) throw err;
      throw new EngineError('UNAVAILABLE', 'the change could not be made durable; nothing was changed');
    } finally {
      this.inflight.delete(appended);
    }
    this.markDurable(events);
    for (const l of this.listeners) {
      try {
        l(events);
      } catch (err) {
        this.log.error({ err }, 'transition listener failed');
      }
    }
  }

  /** Records which in-memory states are now durable (appends resolve in log order). */
  private markDurable(events: DomainEvent[]): void {
    const last = new Map<SectionEntry, number>();
    for (const e of events) {
      switch (e.type) {
        case 'studentCreated': {
          const st = this.students.get(e.student.id);
          if (st && !st.durable) st.durable = { record: { ...e.student }, seq: e.seq };
          break;
        }
        case 'actionUsed': {
          const st = this.students.get(e.studentId);
          if (st?.durable && e.seq > st.durable.seq) {
            st.durable = { record: { ...st.durable.record, remainingActions: e.remainingActions }, seq: e.seq };
          }
          break;
        }
        case 'staffCreated':
          this.undurableStaff.delete(e.staff.id);
          break;
        case 'departmentCreated':
          this.undurableDepartments.delete(e.department.id);
          break;
        default: {
          const entry = this.sections.get(sectionKey(e.courseId, e.groupId));
          if (entry) last.set(entry, Math.max(last.get(entry) ?? 0, e.seq));
        }
      }
    }
    for (const [entry, seq] of last) {
      const i = entry.pending.findIndex((p) => p.seq === seq);
      if (i < 0) continue;
      entry.durable = (entry.pending[i] as { ctx: SectionContext }).ctx;
      entry.pending.splice(0, i + 1);
    }
  }

  /**
   * After a failed append (which fails every later one too, until a reload), memory goes back to
   * the last durable state: sections, students, staff and departments alike. Writes stay refused
   * until a reload from storage succeeds (`needsReload`); reads go on.
   */
  private rollbackToDurable(): void {
    this.needsReload = true;
    let touched = false;
    for (const [key, e] of this.sections) {
      if (e.pending.length === 0) continue;
      touched = true;
      e.pending = [];
      e.actor?.stop();
      e.actor = null;
      if (e.durable === null) {
        this.sections.delete(key);
        continue;
      }
      e.ctx = e.durable;
      e.stateName = null;
    }
    for (const [id, st] of this.students) {
      if (!st.durable) {
        this.students.delete(id);
        continue;
      }
      if (st.seq !== st.durable.seq) {
        st.record = st.durable.record;
        st.seq = st.durable.seq;
      }
    }
    for (const id of this.undurableStaff) this.staff.delete(id);
    for (const id of this.undurableDepartments) this.departments.delete(id);
    this.undurableStaff.clear();
    this.undurableDepartments.clear();
    if (touched) {
      for (const st of this.students.values()) st.holdings = new Map();
      for (const e of this.sections.values()) {
        this.indexMembers(e.ctx);
      }
    }
    this.log.warn('a write failed: memory rolled back to the last durable state');
  }

  private rebuild(state: LoadedState): void {
    for (const e of this.sections.values()) e.actor?.stop();
    this.sections = new Map();
    this.students = new Map();
    this.staff = new Map(state.staff.map((s) => [s.id, s]));
    this.departments = new Map(state.departments.map((d) => [d.id, d]));
    this.undurableStaff.clear();
    this.undurableDepartments.clear();
    for (const s of state.students) {
      const { seq, ...record } = s;
      this.students.set(s.id, { record, seq, holdings: new Map(), durable: { record, seq } });
    }
    for (const ctx of state.sections) {
      this.addSection(ctx, true);
      this.indexMembers(ctx);
    }
  }

  private indexMembers(ctx: SectionContext): void {
    const { courseId, groupId } = ctx.info;
    for (const id of ctx.registered) this.students.get(id)?.holdings.set(courseId, groupId);
    for (const id of ctx.queue) this.students.get(id)?.holdings.set(courseId, groupId);
  }
}

export function createEngine(deps: EngineDeps): Engine {
  return new Engine(deps);
}
