import { initialSectionContext, sectionKey } from '../actors/section-logic.js';
import { checkActionsLeft, checkWindow, type Department, type RuleViolation, type StaffChanges, type StaffRecord, type StudentChanges, type StudentRecord } from '../actors/student-rules.js';
import type { Cause, Membership, SectionCommand, SectionContext, SectionEvent, SectionInfo, SettingsChange, Sex, StudentSchedule } from '../actors/types.js';
import { EngineError, isEngineError } from '../errors.js';
import type { DomainEvent } from '../persistence/types.js';
import type { DurabilityTracker } from './durability-tracker.js';
import type { SectionHost } from './section-host.js';
import type { StudentDirectory, StudentState } from './student-directory.js';
import { sectionView, type ImportBatch, type NewSection, type RequestMeta, type SectionPatch, type SectionView, type SwapRequest } from './views.js';

/**
 * The enrollment use cases (SPEC section 4): each request is checked against the student-level
 * rules that need no section (window, remaining actions), sent to the section actors it concerns,
 * and answered once the events they recorded are durable. Section rules are the actors' own: a
 * use case never looks at a section's numbers to decide anything.
 */

export interface UseCaseDeps {
  host: SectionHost;
  directory: StudentDirectory;
  tracker: DurabilityTracker;
  now: () => number;
  enrollmentWindowMs: number;
  /**
   * Several instances: whether this instance owns the shard of a course (null: the registry's
   * shard). A non-owner refuses before deciding anything (503 NOT_OWNER: nothing was changed), so
   * no decision is ever made on a read copy. Absent: one instance owns everything.
   */
  owns?: (courseId: number | null) => boolean;
}

function violation(v: RuleViolation): EngineError {
  return new EngineError(v.code, v.reason);
}

export class EnrollmentUseCases {
  private readonly host: SectionHost;
  private readonly directory: StudentDirectory;
  private readonly tracker: DurabilityTracker;
  private readonly now: () => number;
  private readonly windowMs: number;
  private readonly owns: ((courseId: number | null) => boolean) | undefined;

  constructor(d: UseCaseDeps) {
    this.owns = d.owns;
    this.host = d.host;
    this.directory = d.directory;
    this.tracker = d.tracker;
    this.now = d.now;
    this.windowMs = d.enrollmentWindowMs;
  }

  // -------------------------------------------------------------------------------------------
  // Student requests, each through the student's mailbox

  /** Rule order of SPEC section 4; resolves with where the student landed once it is durable. */
  enroll(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<Membership> {
    return this.withStudent(studentId, async (st) => {
      const now = this.now();
      const w = checkWindow(st.record, now, this.windowMs);
      if (w) throw violation(w);
      const key = this.host.require(courseId, groupId);
      // The section applies rules 2-7 itself, in order; it needs the student's schedule for 4-6.
      const events = this.route(key, {
        type: 'enroll',
        studentId,
        gender: st.record.gender,
        schedule: { maxUnits: st.record.maxUnits, held: this.directory.heldInfos(st, this.infoOf), checkSameCourse: true },
        cause: this.cause(meta, now),
      });
      await this.tracker.persist(events);
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
      const events: DomainEvent[] = this.route(this.host.require(courseId, groupId), { type: 'drop', studentId, reason: 'dropped', cause });
      events.push(this.directory.useAction(st, cause, courseId));
      await this.tracker.persist(events);
    });
  }

  /**
   * Moves the student to another group of the same course atomically: a place in the target is
   * taken first (the target applies its own rules), then the old group is left. If the target
   * refuses, nothing has changed.
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
      const target = this.host.require(courseId, newGroupId);
      const source = this.host.require(courseId, oldGroupId);
      const cause = this.cause(meta, now);
      const taken = this.route(target, {
        type: 'enroll',
        studentId,
        gender: st.record.gender,
        schedule: { maxUnits: st.record.maxUnits, held: this.directory.heldInfos(st, this.infoOf, courseId), checkSameCourse: false },
        movedIn: true,
        cause,
      });
      let left: SectionEvent[];
      try {
        left = this.route(source, { type: 'drop', studentId, reason: 'movedOut', cause });
      } catch (err) {
        // The directory said the student holds the source; if the actor disagrees, memory is
        // suspect (and the target place just taken is not durable): roll back before answering.
        await this.tracker.discardUndurable();
        throw err;
      }
      const events: DomainEvent[] = [...taken, ...left, this.directory.useAction(st, cause, courseId)];
      await this.tracker.persist(events);
      return taken[0]?.type === 'studentQueued' ? 'queued' : 'registered';
    });
  }

  /**
   * Conditional drop/add across courses ("drop A only if B succeeds"), the cross-course
   * generalisation of {@link changeGroup}: the enroll is decided first with every rule while the
   * dropped section's units and times count as free; only if it gives a seat (or, with `queueOk`,
   * a reserve-queue place) is the other section left and its queue promoted. A refusal changes
   * nothing. Both halves, and the action used, are one append: durable together or not at all.
   * docs/swap.md says how this stays correct once the two sections live with different owners.
   */
  swap(studentId: number, req: SwapRequest, meta: RequestMeta): Promise<Membership> {
    return this.withStudent(studentId, async (st) => {
      const now = this.now();
      const w = checkWindow(st.record, now, this.windowMs) ?? checkActionsLeft(st.record);
      if (w) throw violation(w);
      const { drop, enroll } = req;
      if (drop.courseId === enroll.courseId && drop.groupId === enroll.groupId) {
        throw new EngineError('SAME_SECTION', 'drop and enroll name the same section');
      }
      const source = this.host.require(drop.courseId, drop.groupId);
      const target = this.host.require(enroll.courseId, enroll.groupId);
      if (st.holdings.get(drop.courseId) !== drop.groupId) {
        throw new EngineError('NOT_ENROLLED', `you hold no place in course ${drop.courseId} group ${drop.groupId}`);
      }
      if (this.owns && this.owns(enroll.courseId) && !this.owns(drop.courseId)) {
        // One append must hold both halves; with another owner for the dropped section it cannot.
        throw new EngineError('SWAP_ACROSS_OWNERS', `course ${drop.courseId} and course ${enroll.courseId} are decided by different engine instances; a swap between them is not supported yet, nothing was changed`);
      }
      const cause = this.cause(meta, now);
      // The target applies rules 2-7 with the dropped course left out of the schedule. The same
      // course check stays on: the dropped course is not in the list, any other held group of the
      // target's course is.
      const taken = this.route(target, {
        type: 'enroll',
        studentId,
        gender: st.record.gender,
        schedule: { maxUnits: st.record.maxUnits, held: this.directory.heldInfos(st, this.infoOf, drop.courseId), checkSameCourse: true },
        movedIn: true,
        seatOnly: !req.queueOk,
        cause,
      });
      let left: SectionEvent[];
      try {
        left = this.route(source, { type: 'drop', studentId, reason: 'movedOut', cause });
      } catch (err) {
        // The directory said the student holds the source; if the actor disagrees, memory is
        // suspect (and the target place just taken is not durable): roll back before answering.
        await this.tracker.discardUndurable();
        throw err;
      }
      const events: DomainEvent[] = [...taken, ...left, this.directory.useAction(st, cause, enroll.courseId)];
      await this.tracker.persist(events);
      return taken[0]?.type === 'studentQueued' ? 'queued' : 'registered';
    });
  }

  // -------------------------------------------------------------------------------------------
  // Staff requests

  /** Skips the student rules; a full section grows by one seat. One group per course still holds. */
  forceEnroll(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<void> {
    return this.withStudent(studentId, async (st) => {
      const key = this.host.require(courseId, groupId);
      const held = st.holdings.get(courseId);
      if (held !== undefined && held !== groupId) {
        throw new EngineError('SAME_COURSE', `student ${studentId} already holds group ${held} of course ${courseId}`);
      }
      await this.tracker.persist(this.route(key, { type: 'forceEnroll', studentId, cause: this.cause(meta) }));
    });
  }

  /** Uses no action of the student's; promotes from the queue. */
  forceDrop(studentId: number, courseId: number, groupId: number, meta: RequestMeta): Promise<void> {
    return this.withStudent(studentId, async () => {
      const key = this.host.require(courseId, groupId);
      await this.tracker.persist(this.route(key, { type: 'drop', studentId, reason: 'forceDropped', cause: this.cause(meta) }));
    });
  }

  /** Cannot go below the registered count; growth promotes from the queue in order (the section's rules). */
  async changeCapacity(courseId: number, groupId: number, capacity: number, meta: RequestMeta): Promise<void> {
    await this.tracker.ready();
    const key = this.host.require(courseId, groupId);
    await this.tracker.persist(this.route(key, { type: 'changeSettings', change: { capacity }, cause: this.cause(meta) }));
  }

  async setClosed(courseId: number, groupId: number, closed: boolean, meta: RequestMeta): Promise<void> {
    await this.tracker.ready();
    const key = this.host.require(courseId, groupId);
    const cause = this.cause(meta);
    await this.tracker.persist(this.route(key, closed ? { type: 'close', cause } : { type: 'reopen', cause }));
  }

  /**
   * Changes capacity, reserve capacity, sex lock and descriptive fields as one command, so the
   * section checks every field before it changes any: a refused patch changes nothing, and no other
   * request sees (or slips between) half of it.
   */
  async updateSection(courseId: number, groupId: number, patch: SectionPatch, meta: RequestMeta): Promise<SectionView> {
    await this.tracker.ready();
    const key = this.host.require(courseId, groupId);
    const change: SettingsChange = {};
    if (patch.capacity !== undefined) change.capacity = patch.capacity;
    if (patch.reserveCapacity !== undefined) change.reserveCapacity = patch.reserveCapacity;
    if (patch.sexLock !== undefined) change.sexLock = patch.sexLock;
    if (patch.info && Object.keys(patch.info).length > 0) change.info = patch.info;
    // A lock may not exclude a member: the section checks it against the members' sexes.
    const memberSexes: Record<number, Sex> = {};
    if (patch.sexLock !== undefined && patch.sexLock !== null) {
      const ctx = this.host.context(key);
      for (const id of [...ctx.registered, ...ctx.queue]) {
        const sex = this.directory.get(id)?.record.gender;
        if (sex !== undefined) memberSexes[id] = sex;
      }
    }
    // A new units value, exam or class time may not break a member's rules 4-6 unless staff force it:
    // the section checks it against each member's schedule without this section.
    let memberSchedules: Record<number, StudentSchedule> | undefined;
    const info = patch.info;
    if (!patch.force && info && (info.units !== undefined || info.examTime !== undefined || info.classTime !== undefined)) {
      memberSchedules = {};
      const ctx = this.host.context(key);
      for (const id of [...ctx.registered, ...ctx.queue]) {
        const st = this.directory.get(id);
        if (st !== undefined) memberSchedules[id] = { maxUnits: st.record.maxUnits, held: this.directory.heldInfos(st, this.infoOf, courseId), checkSameCourse: false };
      }
    }
    await this.tracker.persist(this.route(key, { type: 'changeSettings', change, memberSexes, memberSchedules, cause: this.cause(meta) }));
    return sectionView(this.host.read(key));
  }

  async createSection(input: NewSection, meta: RequestMeta): Promise<SectionView> {
    await this.tracker.ready();
    const { courseId, groupId } = input.info;
    this.requireOwner(courseId);
    if (this.host.has(sectionKey(courseId, groupId))) {
      throw new EngineError('ALREADY_EXISTS', `course ${courseId} group ${groupId} already exists`);
    }
    const event = this.addSection(input, this.cause(meta));
    await this.tracker.persist([event]);
    return sectionView(this.host.read(sectionKey(courseId, groupId)));
  }

  async createStudent(student: StudentRecord, meta: RequestMeta): Promise<void> {
    await this.tracker.ready();
    this.requireOwner(null);
    if (this.directory.get(student.id)) throw new EngineError('ALREADY_EXISTS', `student ${student.id} already exists`);
    this.directory.addStudent(student);
    this.tracker.studentCreated(student.id);
    await this.tracker.persist([{ type: 'studentCreated', seq: 1, student, cause: this.cause(meta) }]);
  }

  /**
   * A registrar's correction of a student's record. It runs in the student's mailbox, so it is
   * decided between the student's own requests, never beside one (an action used and a new count
   * of actions left cannot both be read from the same old count); its event is a step of the
   * student's stream like `actionUsed`. Held places stay as they are: a lower unit limit or a later
   * window applies to the student's next request. Resolves with the record once it is durable.
   */
  updateStudent(studentId: number, changes: StudentChanges, meta: RequestMeta, precondition?: (record: StudentRecord) => void): Promise<StudentRecord> {
    return this.withStudent(studentId, async (st) => {
      this.requireOwner(null);
      // Checked in turn with the student's other changes, on the record as it is now (e.g. the
      // password the caller proved is still the current one): throws to refuse, nothing changed.
      precondition?.(st.record);
      const changed: StudentChanges = {};
      for (const [k, v] of Object.entries(changes) as [keyof StudentChanges, unknown][]) {
        if (v !== undefined && st.record[k] !== v) (changed as Record<string, unknown>)[k] = v;
      }
      if (Object.keys(changed).length === 0) {
        // Nothing to change, but the answer rests on memory: it stands once earlier changes are durable.
        await this.tracker.persist([]);
        return { ...st.record };
      }
      st.record = { ...st.record, ...changed };
      st.seq += 1;
      await this.tracker.persist([{ type: 'studentUpdated', seq: st.seq, studentId, changes: changed, cause: this.cause(meta) }]);
      return { ...st.record };
    });
  }

  /**
   * A staff member's new password. Staff have no mailbox (they hold no places): the change is
   * decided by shard 0's owner and numbered in the staff member's stream at once, so two changes
   * of one member are two steps, the later one wins everywhere.
   */
  async updateStaff(staffId: number, changes: StaffChanges, meta: RequestMeta, precondition?: (record: StaffRecord) => void): Promise<void> {
    await this.tracker.ready();
    this.requireOwner(null);
    const s = this.directory.staff.get(staffId);
    if (!s) throw new EngineError('STAFF_NOT_FOUND', `staff ${staffId} does not exist`);
    // No await between this check and the change below: nothing else can change the record in between.
    precondition?.(s);
    const seq = (this.directory.staffSeq.get(staffId) ?? 1) + 1;
    this.tracker.staffChanging(staffId, s);
    this.directory.staff.set(staffId, { ...s, ...changes });
    this.directory.staffSeq.set(staffId, seq);
    await this.tracker.persist([{ type: 'staffUpdated', seq, staffId, changes, cause: this.cause(meta) }]);
  }

  async createStaff(staff: StaffRecord, meta: RequestMeta): Promise<void> {
    await this.tracker.ready();
    this.requireOwner(null);
    if (this.directory.staff.has(staff.id)) throw new EngineError('ALREADY_EXISTS', `staff ${staff.id} already exists`);
    this.directory.staff.set(staff.id, { ...staff });
    this.tracker.staffCreated(staff.id);
    await this.tracker.persist([{ type: 'staffCreated', seq: 1, staff, cause: this.cause(meta) }]);
  }

  async createDepartment(department: Department, meta: RequestMeta): Promise<void> {
    await this.tracker.ready();
    this.requireOwner(null);
    if (this.directory.departments.has(department.id)) {
      throw new EngineError('ALREADY_EXISTS', `department ${department.id} already exists`);
    }
    this.directory.departments.set(department.id, { ...department });
    this.tracker.departmentCreated(department.id);
    await this.tracker.persist([{ type: 'departmentCreated', seq: 1, department, cause: this.cause(meta) }]);
  }

  /**
   * Appends many registry and section-creation events at once (demo data, imports), in one durable
   * batch instead of thousands of round trips. What already exists is skipped.
   */
  async importBatch(input: ImportBatch, meta: RequestMeta): Promise<void> {
    await this.tracker.ready();
    this.requireOwner(null);
    for (const s of input.sections) this.requireOwner(s.info.courseId);
    const cause = this.cause(meta);
    const events: DomainEvent[] = [];
    for (const d of input.departments) {
      if (this.directory.departments.has(d.id)) continue;
      this.directory.departments.set(d.id, d);
      this.tracker.departmentCreated(d.id);
      events.push({ type: 'departmentCreated', seq: 1, department: d, cause });
    }
    for (const s of input.staff) {
      if (this.directory.staff.has(s.id)) continue;
      this.directory.staff.set(s.id, s);
      this.tracker.staffCreated(s.id);
      events.push({ type: 'staffCreated', seq: 1, staff: s, cause });
    }
    for (const s of input.students) {
      if (this.directory.get(s.id)) continue;
      this.directory.addStudent(s);
      this.tracker.studentCreated(s.id);
      events.push({ type: 'studentCreated', seq: 1, student: s, cause });
    }
    for (const s of input.sections) {
      if (this.host.has(sectionKey(s.info.courseId, s.info.groupId))) continue;
      events.push(this.addSection(s, cause));
    }
    for (const e of input.enrollments ?? []) {
      const st = this.directory.get(e.studentId);
      const key = sectionKey(e.courseId, e.groupId);
      if (!st || !this.host.has(key) || checkWindow(st.record, e.at, this.windowMs)) continue;
      try {
        events.push(
          ...this.route(key, {
            type: 'enroll',
            studentId: e.studentId,
            gender: st.record.gender,
            schedule: { maxUnits: st.record.maxUnits, held: this.directory.heldInfos(st, this.infoOf), checkSameCourse: true },
            cause: { requestId: meta.requestId, actor: `student:${e.studentId}`, at: e.at },
          }),
        );
      } catch (err) {
        // Refused by a rule: skipped, exactly as that request would have been answered.
        if (!isEngineError(err)) throw err;
      }
    }
    for (const c of input.closures ?? []) {
      const key = sectionKey(c.courseId, c.groupId);
      if (!this.host.has(key) || this.host.context(key).closed) continue;
      events.push(...this.route(key, { type: 'close', cause: { ...cause, at: c.at } }));
    }
    await this.tracker.persist(events);
  }

  // -------------------------------------------------------------------------------------------

  private cause(meta: RequestMeta, at: number = this.now()): Cause {
    return { requestId: meta.requestId, actor: meta.actor, at };
  }

  private readonly infoOf = (courseId: number, groupId: number): SectionInfo | undefined => {
    const key = sectionKey(courseId, groupId);
    return this.host.has(key) ? this.host.context(key).info : undefined;
  };

  /** Hosts a new section and returns its creation event (not yet durable). */
  private addSection(input: NewSection, cause: Cause): SectionEvent {
    const { courseId, groupId } = input.info;
    const ctx: SectionContext = { ...initialSectionContext(input.info, input), seq: 1 };
    const key = this.host.add(ctx);
    this.tracker.sectionCreated(key, this.host.snapshot(key));
    return {
      type: 'sectionCreated',
      courseId,
      groupId,
      seq: 1,
      cause,
      info: input.info,
      capacity: input.capacity,
      reserveCapacity: input.reserveCapacity,
      sexLock: input.sexLock,
      closed: ctx.closed,
    };
  }

  /**
   * Sends a command to a section and returns the events it recorded (or throws its refusal); the
   * new snapshot is handed to the tracker and the holdings follow the events, in the same step.
   */
  private route(key: string, cmd: SectionCommand): SectionEvent[] {
    if (this.owns) this.requireOwner(Number(key.slice(0, key.indexOf(':'))));
    const r = this.host.send(key, cmd);
    if (r.events.length > 0) {
      this.tracker.sectionChanged(key, r.snapshot.context.seq, r.snapshot, r.before);
      for (const e of r.events) this.directory.index(e);
    }
    return r.events;
  }

  private requireOwner(courseId: number | null): void {
    if (this.owns && !this.owns(courseId)) {
      throw new EngineError('NOT_OWNER', 'another engine instance owns the event stream; this one serves reads only; nothing was changed');
    }
  }

  private withStudent<T>(studentId: number, task: (st: StudentState) => Promise<T>): Promise<T> {
    return this.directory.mailboxes.run(studentId, async () => {
      // The hot path: skip the extra await (a microtask per request) when no reload is pending.
      if (this.tracker.reloadPending) await this.tracker.ready();
      return task(this.directory.require(studentId));
    });
  }
}
