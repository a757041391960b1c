import type { Membership, SectionContext, SectionEvent, SectionInfo, Sex } from './types.js';

/**
 * What a section's transition events *do* to its context, and nothing about whether they may happen:
 * that is decided by the section machine alone (section-machine.ts), whose actions record each event
 * through `evolveSection`. The log fold (persistence) applies the same function to durable events,
 * so a restart rebuilds exactly the context the machine had, without deciding anything again.
 */

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
