import type {
  Cause,
  Membership,
  SectionCommand,
  SectionContext,
  SectionEvent,
  SectionInfo,
  SectionRejection,
  SectionRejectionCode,
  Sex,
} from './types.js';

/**
 * The section's rules as two pure functions, event-sourcing style: `decideSection` turns a command
 * into transition events (or a rejection) without changing anything, `evolveSection` applies one
 * event. The machine uses both; restart recovery replays durable events through `evolveSection`
 * alone, so a replay can never decide differently from the original run.
 */

type Decided = SectionEvent[] | SectionRejection;

function reject(code: SectionRejectionCode, reason: string): SectionRejection {
  return { type: 'rejected', code, reason };
}

/** A fresh context for a section that has never had a transition. */
export function initialSectionContext(
  info: SectionInfo,
  settings: { capacity: number; reserveCapacity: number; sexLock: Sex | null; closed?: boolean },
): SectionContext {
  return {
    info,
    capacity: settings.capacity,
    reserveCapacity: settings.reserveCapacity,
    sexLock: settings.sexLock,
    closed: settings.closed ?? false,
    registered: [],
    queue: [],
    seq: 0,
  };
}

export function sectionKey(courseId: number, groupId: number): string {
  return `${courseId}:${groupId}`;
}

/**
 * Where the student is in the section. A linear scan of two small integer arrays: sections hold tens
 * to hundreds of students, and a scan costs less than keeping (and copying on every change) an
 * index beside the arrays.
 */
export function membershipOf(ctx: SectionContext, studentId: number): Membership | undefined {
  if (ctx.registered.includes(studentId)) return 'registered';
  if (ctx.queue.includes(studentId)) return 'queued';
  return undefined;
}

/**
 * Builds the events, numbering them from the context's sequence. Promotions are appended while a
 * seat is free and the queue is not empty, head first: that is the whole of queue fairness.
 */
class EventBuilder {
  readonly events: SectionEvent[] = [];
  private seq: number;
  private registered: number;
  private queue: number[];
  private queueHead = 0;

  constructor(private readonly ctx: SectionContext, private readonly cause: Cause) {
    this.seq = ctx.seq;
    this.registered = ctx.registered.length;
    this.queue = ctx.queue;
  }

  push<E extends SectionEvent>(event: DistributiveOmit<E, 'seq' | 'cause' | 'courseId' | 'groupId'>): void {
    this.seq += 1;
    // The caller's literal is fresh and never shared, so it is completed in place: an object spread
    // of these differently shaped events was the costliest line of a command.
    const full = event as unknown as SectionEvent;
    full.courseId = this.ctx.info.courseId;
    full.groupId = this.ctx.info.groupId;
    full.seq = this.seq;
    full.cause = this.cause;
    this.events.push(full);
    switch (full.type) {
      case 'studentEnrolled':
        this.registered += 1;
        break;
      case 'studentPromoted':
        this.registered += 1;
        break;
      case 'studentDropped':
        if (full.from === 'registered') this.registered -= 1;
        else this.queue = this.queue.filter((id) => id !== full.studentId);
        break;
      default:
        break;
    }
  }

  promote(capacity: number): void {
    while (this.registered < capacity && this.queueHead < this.queue.length) {
      const studentId = this.queue[this.queueHead] as number;
      this.queueHead += 1;
      this.push({ type: 'studentPromoted', studentId });
    }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export function decideSection(ctx: SectionContext, cmd: Exclude<SectionCommand, { type: 'replay' }>): Decided {
  const b = new EventBuilder(ctx, cmd.cause);
  switch (cmd.type) {
    case 'enroll': {
      if (ctx.closed) return reject('SECTION_CLOSED', 'the section is closed for enrollment');
      if (ctx.sexLock !== null && ctx.sexLock !== cmd.gender) {
        return reject('SEX_LOCK', `the section is only open to ${ctx.sexLock} students`);
      }
      if (membershipOf(ctx, cmd.studentId) !== undefined) {
        return reject('ALREADY_IN_SECTION', 'the student already holds a place in this section');
      }
      const movedIn = cmd.movedIn ?? false;
      if (ctx.registered.length < ctx.capacity) {
        b.push({ type: 'studentEnrolled', studentId: cmd.studentId, forced: false, movedIn });
      } else if (ctx.queue.length < ctx.reserveCapacity) {
        b.push({ type: 'studentQueued', studentId: cmd.studentId, movedIn });
      } else {
        return reject('SECTION_FULL', 'the section and its reserve queue are full');
      }
      return b.events;
    }
    case 'drop': {
      const from = membershipOf(ctx, cmd.studentId);
      if (from === undefined) return reject('NOT_ENROLLED', 'the student holds no place in this section');
      b.push({ type: 'studentDropped', studentId: cmd.studentId, from, reason: cmd.reason });
      b.promote(ctx.capacity);
      return b.events;
    }
    case 'forceEnroll': {
      const where = membershipOf(ctx, cmd.studentId);
      if (where === 'registered') return reject('ALREADY_IN_SECTION', 'the student is already registered in this section');
      if (ctx.registered.length >= ctx.capacity) {
        b.push({ type: 'capacityChanged', capacity: ctx.registered.length + 1 });
      }
      if (where === 'queued') b.push({ type: 'studentPromoted', studentId: cmd.studentId });
      else b.push({ type: 'studentEnrolled', studentId: cmd.studentId, forced: true, movedIn: false });
      return b.events;
    }
    case 'changeCapacity': {
      if (!Number.isInteger(cmd.capacity) || cmd.capacity < 0) return reject('BAD_REQUEST', 'capacity must be a whole number >= 0');
      if (cmd.capacity < ctx.registered.length) {
        return reject(
          'CAPACITY_BELOW_REGISTERED',
          `capacity ${cmd.capacity} is below the ${ctx.registered.length} students already registered`,
        );
      }
      if (cmd.capacity === ctx.capacity) return [];
      b.push({ type: 'capacityChanged', capacity: cmd.capacity });
      b.promote(cmd.capacity);
      return b.events;
    }
    case 'changeReserveCapacity': {
      if (!Number.isInteger(cmd.reserveCapacity) || cmd.reserveCapacity < 0) {
        return reject('BAD_REQUEST', 'reserve capacity must be a whole number >= 0');
      }
      if (cmd.reserveCapacity < ctx.queue.length) {
        return reject(
          'RESERVE_BELOW_QUEUED',
          `reserve capacity ${cmd.reserveCapacity} is below the ${ctx.queue.length} students already queued`,
        );
      }
      if (cmd.reserveCapacity === ctx.reserveCapacity) return [];
      b.push({ type: 'reserveCapacityChanged', reserveCapacity: cmd.reserveCapacity });
      return b.events;
    }
    case 'changeSexLock': {
      if (cmd.sexLock === ctx.sexLock) return [];
      b.push({ type: 'sexLockChanged', sexLock: cmd.sexLock });
      return b.events;
    }
    case 'updateInfo': {
      b.push({ type: 'infoUpdated', info: cmd.info });
      return b.events;
    }
    case 'close': {
      if (ctx.closed) return [];
      b.push({ type: 'sectionClosed' });
      return b.events;
    }
    case 'reopen': {
      if (!ctx.closed) return [];
      b.push({ type: 'sectionReopened' });
      return b.events;
    }
  }
}

function without(list: number[], id: number): number[] {
  const i = list.indexOf(id);
  if (i < 0) return list;
  return list.slice(0, i).concat(list.slice(i + 1));
}

/** Applies one durable event. Events at or below the context's sequence are already in it. */
export function evolveSection(ctx: SectionContext, e: SectionEvent): SectionContext {
  if (e.type !== 'sectionCreated' && e.seq <= ctx.seq) return ctx;
  const seq = e.seq;
  switch (e.type) {
    case 'sectionCreated':
      return { ...initialSectionContext(e.info, e), seq };
    case 'studentEnrolled':
      return {
        ...ctx,
        seq,
        registered: [...ctx.registered, e.studentId],
      };
    case 'studentQueued':
      return { ...ctx, seq, queue: [...ctx.queue, e.studentId] };
    case 'studentPromoted':
      return {
        ...ctx,
        seq,
        queue: without(ctx.queue, e.studentId),
        registered: [...ctx.registered, e.studentId],
      };
    case 'studentDropped':
      return e.from === 'registered'
        ? { ...ctx, seq, registered: without(ctx.registered, e.studentId) }
        : { ...ctx, seq, queue: without(ctx.queue, e.studentId) };
    case 'capacityChanged':
      return { ...ctx, seq, capacity: e.capacity };
    case 'reserveCapacityChanged':
      return { ...ctx, seq, reserveCapacity: e.reserveCapacity };
    case 'sexLockChanged':
      return { ...ctx, seq, sexLock: e.sexLock };
    case 'infoUpdated':
      return { ...ctx, seq, info: { ...ctx.info, ...e.info } };
    case 'sectionClosed':
      return { ...ctx, seq, closed: true };
    case 'sectionReopened':
      return { ...ctx, seq, closed: false };
  }
}
