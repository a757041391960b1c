import { createActor, enqueueActions, getInitialSnapshot, setup, type ActorRefFrom, type Snapshot, type SnapshotFrom, type StateValue } from 'xstate';
import { evolveSection, membershipOf } from './section-logic.js';
import { checkScheduleRules } from './student-rules.js';
import type {
  Cause,
  SectionCommand,
  SectionContext,
  SectionEmitted,
  SectionEvent,
  SectionRefusal,
  SectionRefusalCode,
  SettingsChange,
} from './types.js';

/**
 * One actor per section, and the only place a section's rules live (SPEC section 4, rules 2, 3 and
 * 7, capacity, reserve queue, sex lock, promotion).
 *
 * The states decide: `closed` has no way to take a seat, so it refuses an enroll; in `open` the
 * student must first be admitted (sex lock, then the student's own schedule, then not already
 * here); `seatsAvailable` takes a seat, `reserveOnly` joins the reserve queue, `full` refuses.
 * Every change of the numbers goes through `countingSeats`, a choice (UML) pseudostate whose
 * guarded branches pick the occupancy state the new numbers mean; staff changes, which mean the
 * same in every state, go through `openOrClosed` first, as does an actor started from a stored
 * context. Neither choice is ever a resting state. A drop is handled where it happens: a closed
 * section stays closed, an open one counts its seats again, and one with seats to spare and no
 * queue stays as it is (the common case, one XState microstep instead of three: 13 against 29 µs
 * per drop, bench/section-sends.ts).
 *
 * Outputs are the machine's own: each accepted change is recorded as a numbered past-tense event
 * (applied to the context with `evolveSection`, the same function the log fold uses) and emitted;
 * a refusal is emitted as `commandRefused` with its code and reason, and changes nothing. XState
 * processes one event at a time, so "check the seat and take it" is a single step.
 */

type Command<T extends SectionCommand['type']> = Extract<SectionCommand, { type: T }>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type EventBody = DistributiveOmit<SectionEvent, 'seq' | 'cause' | 'courseId' | 'groupId'>;

/** Numbers and applies the events of one step; the machine's actions commit them with `commit`. */
class Recorder {
  readonly events: SectionEvent[] = [];
  constructor(
    public ctx: SectionContext,
    private readonly cause: Cause,
  ) {}

  push(body: EventBody): void {
    // The body literal is fresh and never shared, so it is completed in place (an object spread of
    // these differently shaped events was the costliest line of a command).
    const e = body as SectionEvent;
    e.courseId = this.ctx.info.courseId;
    e.groupId = this.ctx.info.groupId;
    e.seq = this.ctx.seq + 1;
    e.cause = this.cause;
    this.ctx = evolveSection(this.ctx, e);
    this.events.push(e);
  }
}

const isWholeNumber = (n: number | undefined): boolean => n === undefined || (Number.isInteger(n) && n >= 0);

function refusal(command: SectionCommand, code: SectionRefusalCode, reason: string): SectionRefusal {
  return { type: 'commandRefused', command: command.type, code, reason };
}

/** The reason given with each refusal code (what the student or staff member reads). */
function reasonFor(code: SectionRefusalCode, ctx: SectionContext, cmd: SectionCommand): string {
  const change: SettingsChange = cmd.type === 'changeSettings' ? cmd.change : {};
  switch (code) {
    case 'SECTION_CLOSED':
      return 'the section is closed for enrollment';
    case 'SEX_LOCK':
      return `the section is only open to ${ctx.sexLock} students`;
    case 'SECTION_FULL':
      return 'the section and its reserve queue are full';
    case 'NO_SEAT':
      return 'no seat is free (only a reserve-queue place is left, and a seat was asked for)';
    case 'ALREADY_IN_SECTION':
      return cmd.type === 'forceEnroll'
        ? 'the student is already registered in this section'
        : 'the student already holds a place in this section';
    case 'NOT_ENROLLED':
      return 'the student holds no place in this section';
    case 'CAPACITY_BELOW_REGISTERED':
      return `capacity ${change.capacity} is below the ${ctx.registered.length} students already registered`;
    case 'RESERVE_BELOW_QUEUED':
      return `reserve capacity ${change.reserveCapacity} is below the ${ctx.queue.length} students already queued`;
    case 'SEX_LOCK_CONFLICT': {
      const id = lockedOut(ctx, cmd);
      return `student ${id} in this section is not ${change.sexLock}; the lock would exclude them`;
    }
    case 'MEMBER_RULES_CONFLICT': {
      const broken = memberBrokenBy(ctx, cmd);
      return broken === undefined
        ? code
        : `the change would break the schedule of student ${broken.studentId} in this section (${broken.code}: ${broken.detail}); send "force": true to apply it anyway`;
    }
    case 'BAD_REQUEST':
      return isWholeNumber(change.capacity) ? 'reserve capacity must be a whole number >= 0' : 'capacity must be a whole number >= 0';
    default:
      return code;
  }
}

/**
 * The first member a new sex lock would exclude (unknown sex counts as excluded), if any. The lock
 * the section has already is not new: a patch restating it (a form that sends every field) is not
 * refused because staff forced a member of the other sex in under it.
 */
function lockedOut(ctx: SectionContext, cmd: SectionCommand): number | undefined {
  if (cmd.type !== 'changeSettings') return undefined;
  const lock = cmd.change.sexLock;
  if (lock === undefined || lock === null || lock === ctx.sexLock) return undefined;
  const sexes = cmd.memberSexes ?? {};
  return [...ctx.registered, ...ctx.queue].find((id) => sexes[id] !== lock);
}

/**
 * The first member whose rules 4-6 (units, exam and class clashes with the rest of their schedule)
 * held before a change of this section's units, exam or class time and would not after it. A member
 * already over a limit (staff forced them in) is not counted against the change.
 */
function memberBrokenBy(ctx: SectionContext, cmd: SectionCommand): { studentId: number; code: string; detail: string } | undefined {
  if (cmd.type !== 'changeSettings' || cmd.memberSchedules === undefined || cmd.change.info === undefined) return undefined;
  const after = { ...ctx.info, ...cmd.change.info };
  for (const id of [...ctx.registered, ...ctx.queue]) {
    const schedule = cmd.memberSchedules[id];
    if (schedule === undefined) continue;
    const v = checkScheduleRules(after, schedule);
    if (v === null || checkScheduleRules(ctx.info, schedule) !== null) continue;
    let units = 0;
    for (const s of schedule.held) units += s.units;
    const detail =
      v.code === 'UNITS_EXCEEDED'
        ? `${units + after.units} units held against a limit of ${schedule.maxUnits}`
        : v.reason.replace(/^the /, 'its ').replace(' clashes with ', ' would clash with ');
    return { studentId: id, code: v.code, detail };
  }
  return undefined;
}

const hasFreeSeat = (ctx: SectionContext): boolean => ctx.registered.length < ctx.capacity;

/** The queue's length once a change to `capacity` (if any) has promoted into the seats it frees. */
function queueAfterGrowth(ctx: SectionContext, capacity: number | undefined): number {
  const freeSeats = Math.max(0, (capacity ?? ctx.capacity) - ctx.registered.length);
  return Math.max(0, ctx.queue.length - freeSeats);
}
const queueHasRoom = (ctx: SectionContext): boolean => ctx.queue.length < ctx.reserveCapacity;

/** SPEC rules 3 to 6 and "not already here": the student may take a seat or queue place if one is left. */
function isAdmitted(ctx: SectionContext, cmd: SectionCommand): boolean {
  return (
    cmd.type === 'enroll' &&
    (ctx.sexLock === null || ctx.sexLock === cmd.gender) &&
    membershipOf(ctx, cmd.studentId) === undefined &&
    checkScheduleRules(ctx.info, cmd.schedule) === null
  );
}

export const sectionMachine = setup({
  types: {
    context: {} as SectionContext,
    events: {} as SectionCommand,
    input: {} as SectionContext,
    emitted: {} as SectionEmitted,
  },
  guards: {
    /** Stored as closed (only read when an actor starts from a stored context). */
    markedClosed: ({ context }) => context.closed,
    hasFreeSeat: ({ context }) => hasFreeSeat(context),
    queueHasRoom: ({ context }) => queueHasRoom(context),
    /** SPEC rule 3: no lock, or the lock is the student's sex. */
    sexLockExcludes: ({ context, event }) =>
      event.type === 'enroll' && context.sexLock !== null && context.sexLock !== event.gender,
    /** SPEC rules 4-6, on the student's schedule as the enroll command brings it. */
    scheduleConflicts: ({ context, event }) =>
      event.type === 'enroll' && checkScheduleRules(context.info, event.schedule) !== null,
    alreadyHolds: ({ context, event }) => event.type === 'enroll' && membershipOf(context, event.studentId) !== undefined,
    /** All of the above pass: the student may have a seat or a queue place, if one is left. */
    admitted: ({ context, event }) => isAdmitted(context, event),
    /**
     * Admitted, and more than one seat (queue place) free: the state stays as it is. One named guard
     * rather than and([...]): XState's higher-order guard took 11.6 µs per enroll send against 4.4 µs.
     */
    admittedToSpareSeat: ({ context, event }) => context.registered.length + 1 < context.capacity && isAdmitted(context, event),
    /** Admitted, but the command takes a seat or nothing (a swap without queue_ok). */
    admittedButSeatOnly: ({ context, event }) => event.type === 'enroll' && event.seatOnly === true && isAdmitted(context, event),
    admittedToSpareQueuePlace: ({ context, event }) =>
      context.queue.length + 1 < context.reserveCapacity && isAdmitted(context, event),
    holdsPlace: ({ context, event }) => event.type === 'drop' && membershipOf(context, event.studentId) !== undefined,
    /** Holds a place, and nobody is queued: after the drop a seat is still free, whoever left. */
    holdsPlaceNoQueue: ({ context, event }) =>
      event.type === 'drop' && context.queue.length === 0 && membershipOf(context, event.studentId) !== undefined,
    isRegistered: ({ context, event }) => event.type === 'forceEnroll' && membershipOf(context, event.studentId) === 'registered',
    settingsMalformed: ({ event }) =>
      event.type === 'changeSettings' && !(isWholeNumber(event.change.capacity) && isWholeNumber(event.change.reserveCapacity)),
    capacityBelowRegistered: ({ context, event }) =>
      event.type === 'changeSettings' && event.change.capacity !== undefined && event.change.capacity < context.registered.length,
    /** Against the queue as it will be: a capacity growth in the same change promotes from it first. */
    reserveBelowQueued: ({ context, event }) =>
      event.type === 'changeSettings' &&
      event.change.reserveCapacity !== undefined &&
      event.change.reserveCapacity < queueAfterGrowth(context, event.change.capacity),
    lockExcludesMember: ({ context, event }) => lockedOut(context, event) !== undefined,
    infoBreaksMemberRules: ({ context, event }) => memberBrokenBy(context, event) !== undefined,
  },
  actions: {
    /** Emits the refusal of the command; nothing changes. */
    refuse: enqueueActions(({ context, event, enqueue }, params: { code: SectionRefusalCode }) => {
      enqueue.emit(refusal(event, params.code, reasonFor(params.code, context, event)));
    }),
    /** Refuses with the first of SPEC rules 4-6 the student's schedule breaks. */
    refuseForSchedule: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'enroll') return;
      const v = checkScheduleRules(context.info, event.schedule);
      if (v) enqueue.emit(refusal(event, v.code, v.reason));
    }),
    takeSeat: enqueueActions(({ context, event, enqueue }) => {
      const e = event as Command<'enroll'>;
      const r = new Recorder(context, e.cause);
      r.push({ type: 'studentEnrolled', studentId: e.studentId, forced: false, movedIn: e.movedIn ?? false });
      commit(enqueue, r);
    }),
    joinQueue: enqueueActions(({ context, event, enqueue }) => {
      const e = event as Command<'enroll'>;
      const r = new Recorder(context, e.cause);
      r.push({ type: 'studentQueued', studentId: e.studentId, movedIn: e.movedIn ?? false });
      commit(enqueue, r);
    }),
    releasePlace: enqueueActions(({ context, event, enqueue }) => {
      const e = event as Command<'drop'>;
      const from = membershipOf(context, e.studentId);
      if (from === undefined) return;
      const r = new Recorder(context, e.cause);
      r.push({ type: 'studentDropped', studentId: e.studentId, from, reason: e.reason });
      commit(enqueue, r);
    }),
    /** Fills every free seat from the head of the reserve queue, in queue order (FIFO). */
    promoteQueueHead: enqueueActions(({ context, event, enqueue }) => {
      if (!hasFreeSeat(context) || context.queue.length === 0) return;
      const r = new Recorder(context, (event as { cause: Cause }).cause);
      while (hasFreeSeat(r.ctx) && r.ctx.queue.length > 0) r.push({ type: 'studentPromoted', studentId: r.ctx.queue[0] as number });
      commit(enqueue, r);
    }),
    /** Staff: a seat whatever the rules; a full section grows by one; a queued student is promoted. */
    forceSeat: enqueueActions(({ context, event, enqueue }) => {
      const e = event as Command<'forceEnroll'>;
      const r = new Recorder(context, e.cause);
      if (!hasFreeSeat(context)) r.push({ type: 'capacityChanged', capacity: context.registered.length + 1 });
      if (membershipOf(context, e.studentId) === 'queued') r.push({ type: 'studentPromoted', studentId: e.studentId });
      else r.push({ type: 'studentEnrolled', studentId: e.studentId, forced: true, movedIn: false });
      commit(enqueue, r);
    }),
    /**
     * Records each setting that changes, in a fixed order; unchanged ones record nothing. A reserve
     * capacity that only the same change's growth makes room for (its promotions shorten the queue)
     * is recorded after them, so no event leaves the queue longer than its reserve capacity.
     */
    applySettings: enqueueActions(({ context, event, enqueue }) => {
      const e = event as Command<'changeSettings'>;
      const c = e.change;
      const r = new Recorder(context, e.cause);
      const reserveChanges = c.reserveCapacity !== undefined && c.reserveCapacity !== context.reserveCapacity;
      const reserveAfterPromotions = reserveChanges && (c.reserveCapacity as number) < context.queue.length;
      if (reserveChanges && !reserveAfterPromotions) r.push({ type: 'reserveCapacityChanged', reserveCapacity: c.reserveCapacity as number });
      if (c.sexLock !== undefined && c.sexLock !== context.sexLock) r.push({ type: 'sexLockChanged', sexLock: c.sexLock });
      if (c.info !== undefined && Object.keys(c.info).length > 0) r.push({ type: 'infoUpdated', info: c.info });
      if (c.capacity !== undefined && c.capacity !== context.capacity) r.push({ type: 'capacityChanged', capacity: c.capacity });
      if (reserveAfterPromotions) {
        while (hasFreeSeat(r.ctx) && r.ctx.queue.length > 0) r.push({ type: 'studentPromoted', studentId: r.ctx.queue[0] as number });
        r.push({ type: 'reserveCapacityChanged', reserveCapacity: c.reserveCapacity as number });
      }
      commit(enqueue, r);
    }),
    markClosed: enqueueActions(({ context, event, enqueue }) => {
      const r = new Recorder(context, (event as Command<'close'>).cause);
      r.push({ type: 'sectionClosed' });
      commit(enqueue, r);
    }),
    markReopened: enqueueActions(({ context, event, enqueue }) => {
      const r = new Recorder(context, (event as Command<'reopen'>).cause);
      r.push({ type: 'sectionReopened' });
      commit(enqueue, r);
    }),
  },
}).createMachine({
  id: 'section',
  context: ({ input }) => input,
  initial: 'openOrClosed',
  // Staff changes mean the same in every state; afterwards the section finds its state again from
  // the new numbers (it stays closed if it was). A drop nobody could make is refused here.
  on: {
    drop: { actions: { type: 'refuse', params: { code: 'NOT_ENROLLED' } } },
    forceEnroll: [
      { guard: 'isRegistered', actions: { type: 'refuse', params: { code: 'ALREADY_IN_SECTION' } } },
      { target: '.openOrClosed', actions: 'forceSeat' },
    ],
    changeSettings: [
      { guard: 'settingsMalformed', actions: { type: 'refuse', params: { code: 'BAD_REQUEST' } } },
      { guard: 'capacityBelowRegistered', actions: { type: 'refuse', params: { code: 'CAPACITY_BELOW_REGISTERED' } } },
      { guard: 'reserveBelowQueued', actions: { type: 'refuse', params: { code: 'RESERVE_BELOW_QUEUED' } } },
      { guard: 'lockExcludesMember', actions: { type: 'refuse', params: { code: 'SEX_LOCK_CONFLICT' } } },
      { guard: 'infoBreaksMemberRules', actions: { type: 'refuse', params: { code: 'MEMBER_RULES_CONFLICT' } } },
      { target: '.openOrClosed', actions: ['applySettings', 'promoteQueueHead'] },
    ],
  },
  states: {
    openOrClosed: {
      always: [{ guard: 'markedClosed', target: 'closed' }, { target: 'open' }],
    },
    closed: {
      on: {
        enroll: { actions: { type: 'refuse', params: { code: 'SECTION_CLOSED' } } },
        drop: { guard: 'holdsPlace', actions: ['releasePlace', 'promoteQueueHead'] },
        reopen: { target: 'open', actions: 'markReopened' },
      },
    },
    open: {
      initial: 'countingSeats',
      states: {
        countingSeats: {
          always: [
            { guard: 'hasFreeSeat', target: 'seatsAvailable' },
            { guard: 'queueHasRoom', target: 'reserveOnly' },
            { target: 'full' },
          ],
        },
        // Taking a seat (or a queue place) that is not the last one leaves the state as it is, so
        // that common case stays in the state; the last one goes through countingSeats.
        seatsAvailable: {
          on: {
            drop: { guard: 'holdsPlaceNoQueue', actions: 'releasePlace' },
            enroll: [
              { guard: 'admittedToSpareSeat', actions: 'takeSeat' },
              { guard: 'admitted', target: 'countingSeats', actions: 'takeSeat' },
            ],
          },
        },
        reserveOnly: {
          on: {
            enroll: [
              { guard: 'admittedButSeatOnly', actions: { type: 'refuse', params: { code: 'NO_SEAT' } } },
              { guard: 'admittedToSpareQueuePlace', actions: 'joinQueue' },
              { guard: 'admitted', target: 'countingSeats', actions: 'joinQueue' },
            ],
          },
        },
        full: {
          on: { enroll: { guard: 'admitted', actions: { type: 'refuse', params: { code: 'SECTION_FULL' } } } },
        },
      },
      on: {
        // Reached only when the state above did not admit the student: say why, in SPEC order.
        enroll: [
          { guard: 'sexLockExcludes', actions: { type: 'refuse', params: { code: 'SEX_LOCK' } } },
          { guard: 'scheduleConflicts', actions: 'refuseForSchedule' },
          { guard: 'alreadyHolds', actions: { type: 'refuse', params: { code: 'ALREADY_IN_SECTION' } } },
        ],
        drop: { guard: 'holdsPlace', target: '.countingSeats', actions: ['releasePlace', 'promoteQueueHead'] },
        close: { target: 'closed', actions: 'markClosed' },
      },
    },
  },
});

/** Assigns the recorded context and emits the recorded events, in order. */
function commit(
  enqueue: { assign: (fn: () => SectionContext) => void; emit: (e: SectionEmitted) => void },
  r: Recorder,
): void {
  if (r.events.length === 0) return;
  const next = r.ctx;
  enqueue.assign(() => next);
  for (const e of r.events) enqueue.emit(e);
}

export type SectionActor = ActorRefFrom<typeof sectionMachine>;
export type SectionSnapshot = SnapshotFrom<typeof sectionMachine>;

/** The state an admin sees, as one dotted name (e.g. `open.reserveOnly`). */
export function sectionStateName(snapshot: SectionSnapshot): string {
  const v = snapshot.value;
  if (typeof v === 'string') return v;
  const [parent, child] = Object.entries(v)[0] as [string, string];
  return `${parent}.${child}`;
}

/**
 * What a passivated section keeps: XState's persisted snapshot (JSON-safe), which carries the state
 * value and the context, so a passivated section can still be read and is restored exactly.
 */
export type PersistedSection = Snapshot<unknown> & { value: SectionSnapshot['value']; context: SectionContext };

/** The actor's persisted snapshot, typed as what it is for this machine. */
export function persistSection(actor: SectionActor): PersistedSection {
  return actor.getPersistedSnapshot() as PersistedSection;
}

/**
 * All that the machine's choices read of a stored context on the way to its resting state
 * (`openOrClosed`: `markedClosed`; `countingSeats`: `hasFreeSeat`, `queueHasRoom`), as one number.
 */
const choiceKey = (ctx: SectionContext): number => (ctx.closed ? 4 : 0) | (hasFreeSeat(ctx) ? 2 : 0) | (queueHasRoom(ctx) ? 1 : 0);

/** The resting state the machine's initial step picked, by the choices' inputs (at most eight entries). */
const restingStates = new Map<number, StateValue>();

/**
 * The snapshot a section starts from when it is first activated from its stored context: the
 * state the machine's own initial step picks for it. That step (microsteps through the choices)
 * made activating the seed workload's 1,500 sections cost 274 ms of the engine's CPU under load,
 * a tenth of it (profile); so it runs once per combination of the choices' inputs, and every
 * other context with the same inputs is put straight into the state it picked (`resolveState`, no
 * microsteps): 91 ms. The machine still decides: the cache only remembers its answer, and
 * test/section-resting-state.test.ts checks the result equals the initial step's for any context.
 */
export function restingSnapshotOf(context: SectionContext): SectionSnapshot {
  const key = choiceKey(context);
  const value = restingStates.get(key);
  if (value !== undefined) return sectionMachine.resolveState({ value, context });
  const initial = getInitialSnapshot(sectionMachine, context);
  restingStates.set(key, initial.value);
  return initial;
}

/**
 * Starts a section actor: from a stored context (a new or loaded section, in the state the machine
 * picks for it: {@link restingSnapshotOf}), or from a snapshot the actor persisted before it was
 * passivated (restored as it was).
 */
export function createSectionActor(from: { context: SectionContext } | { snapshot: PersistedSection }): SectionActor {
  // The input is not read when a snapshot is given (the context comes from it); the types ask for one.
  const actor =
    'snapshot' in from
      ? createActor(sectionMachine, { snapshot: from.snapshot, input: from.snapshot.context })
      : createActor(sectionMachine, { snapshot: restingSnapshotOf(from.context), input: from.context });
  actor.start();
  return actor;
}
