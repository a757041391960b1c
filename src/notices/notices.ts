import type { SectionContext, SectionEvent } from '../actors/types.js';
import type { OutboxDeriver, OutboxNotice, TransitionRow } from '../persistence/notice-types.js';

/**
 * What a student is told, derived from a section's durable transitions. Pure functions: the live
 * path (notice-hub.ts) derives notices from each durable batch and the section's context before and
 * after it; a resumed stream derives them again from the `transitions` rows. A notice's id is its
 * transition's `<course>-<group>-<seq>`, which is durable and unique, and its order is the log's.
 */

export const NOTICE_KINDS = [
  'promoted',
  'queueMoved',
  'droppedByStaff',
  'enrolledByStaff',
  'sectionClosed',
  'sectionReopened',
  'sectionChanged',
  'seatAvailable',
] as const;
export type NoticeKind = (typeof NOTICE_KINDS)[number];

export interface Notice {
  /** `<course>-<group>-<seq>` of the transition it comes from (the SSE id). */
  id: string;
  kind: NoticeKind;
  studentId: number;
  courseId: number;
  groupId: number;
  sectionName: string;
  /** Unix ms of the decision. */
  at: number;
  /** 1-based place in the reserve queue, for `queueMoved`. */
  queuePosition?: number;
  /** The settings that changed, for `sectionChanged`. */
  change?: Record<string, unknown>;
  message: string;
}

/** The wire form (snake_case, like the rest of the API), for SSE and webhook bodies. */
export interface NoticeWire {
  id: string;
  kind: NoticeKind;
  student_id: number;
  course_id: number;
  group_id: number;
  section_name: string;
  at: string;
  queue_position?: number;
  change?: Record<string, unknown>;
  message: string;
}

export function toWire(n: Notice): NoticeWire {
  const w: NoticeWire = {
    id: n.id,
    kind: n.kind,
    student_id: n.studentId,
    course_id: n.courseId,
    group_id: n.groupId,
    section_name: n.sectionName,
    at: new Date(n.at).toISOString(),
    message: n.message,
  };
  if (n.queuePosition !== undefined) w.queue_position = n.queuePosition;
  if (n.change !== undefined) w.change = n.change;
  return w;
}

export function noticeId(courseId: number, groupId: number, seq: number): string {
  return `${courseId}-${groupId}-${seq}`;
}

/** Parses a notice id (a client's Last-Event-ID); null if it is not one. */
export function parseNoticeId(id: string): { courseId: number; groupId: number; seq: number } | null {
  const m = /^(\d{1,10})-(\d{1,10})-(\d{1,15})$/.exec(id.trim());
  if (!m) return null;
  return { courseId: Number(m[1]), groupId: Number(m[2]), seq: Number(m[3]) };
}

/** A seat or a reserve place is free and the section takes enrollments. */
export function hasRoom(ctx: SectionContext): boolean {
  return !ctx.closed && (ctx.registered.length < ctx.capacity || ctx.queue.length < ctx.reserveCapacity);
}

/** Free seats plus free reserve places. */
export function freePlaces(ctx: SectionContext): number {
  if (ctx.closed) return 0;
  return Math.max(0, ctx.capacity - ctx.registered.length) + Math.max(0, ctx.reserveCapacity - ctx.queue.length);
}

const SETTING_TYPES = new Set(['capacityChanged', 'reserveCapacityChanged', 'sexLockChanged', 'infoUpdated']);

function changeOf(type: string, payload: Record<string, unknown>): Record<string, unknown> {
  switch (type) {
    case 'capacityChanged':
      return { capacity: payload.capacity };
    case 'reserveCapacityChanged':
      return { reserve_capacity: payload.reserveCapacity };
    case 'sexLockChanged':
      return { sex_lock: payload.sexLock };
    default:
      return { info: payload.info };
  }
}

function base(kind: NoticeKind, studentId: number, c: number, g: number, seq: number, name: string, at: number, message: string): Notice {
  return { id: noticeId(c, g, seq), kind, studentId, courseId: c, groupId: g, sectionName: name, at, message };
}

const seatMessage = (name: string) =>
  `a place opened in ${name}. This is a notice, not a seat: nothing is held for you, and the place goes to whoever enrolls first`;

/**
 * Whether a durable section event can mean a notice (before looking at the section): the webhook
 * outbox reads the active webhooks only for batches that hold one. Follows {@link noticesForEvent}.
 */
export function eventMayNotify(e: SectionEvent): boolean {
  switch (e.type) {
    case 'studentPromoted':
    case 'sectionClosed':
    case 'sectionReopened':
    case 'capacityChanged':
    case 'reserveCapacityChanged':
    case 'sexLockChanged':
    case 'infoUpdated':
      return true;
    case 'studentDropped':
      return e.reason === 'forceDropped' || e.from === 'queued';
    case 'studentEnrolled':
      return e.forced;
    default:
      return false;
  }
}

/** Notices for the seat watchers told about an opening (in watch order), at the transition `seq`. */
export function seatAvailableNotices(ctx: SectionContext, seq: number, at: number, watchers: number[]): Notice[] {
  const name = ctx.info.name;
  return watchers.map((s) => base('seatAvailable', s, ctx.info.courseId, ctx.info.groupId, seq, name, at, seatMessage(name)));
}

/**
 * The index in `after.queue` from which students moved up in the reserve queue with this event
 * (everyone at or behind it moved), or -1 if nobody did. The live hub uses it to record who moved
 * without building a notice per move (it sends them at most once per window; see notice-hub.ts).
 */
export function queueMovedFrom(before: SectionContext, e: SectionEvent, after: SectionContext): number {
  let from = -1;
  if (e.type === 'studentPromoted') {
    const was = before.queue.indexOf(e.studentId);
    from = was < 0 ? 0 : was;
  } else if (e.type === 'studentDropped' && e.from === 'queued') {
    from = Math.max(0, before.queue.indexOf(e.studentId));
  }
  return from >= 0 && from < after.queue.length ? from : -1;
}

/** A `queueMoved` notice: the student's place (1-based) after the transition `seq`. */
export function queueMovedNotice(ctx: SectionContext, studentId: number, position: number, seq: number, at: number): Notice {
  const name = ctx.info.name;
  const n = base('queueMoved', studentId, ctx.info.courseId, ctx.info.groupId, seq, name, at, `you moved up to place ${position} in the reserve queue of ${name}`);
  n.queuePosition = position;
  return n;
}

/**
 * Notices one durable section event means, given the section's context before and after it.
 * `opts.queueMoves: false` leaves out the `queueMoved` notices (the caller takes them from
 * {@link queueMovedFrom}); `opts.wants` limits the notices to the students it accepts.
 */
export function noticesForEvent(
  before: SectionContext,
  e: SectionEvent,
  after: SectionContext,
  opts?: { queueMoves?: boolean; wants?: (studentId: number) => boolean },
): Notice[] {
  const withMoves = opts?.queueMoves !== false;
  const wants = opts?.wants;
  const c = e.courseId;
  const g = e.groupId;
  const name = after.info.name;
  const at = e.cause.at;
  const mk = (kind: NoticeKind, s: number, message: string) => base(kind, s, c, g, e.seq, name, at, message);
  const queueMoves = (from: number): Notice[] => {
    const out: Notice[] = [];
    if (!withMoves) return out;
    for (let i = Math.max(0, from); i < after.queue.length; i++) {
      const s = after.queue[i] as number;
      if (wants && !wants(s)) continue;
      const n = mk('queueMoved', s, `you moved up to place ${i + 1} in the reserve queue of ${name}`);
      n.queuePosition = i + 1;
      out.push(n);
    }
    return out;
  };
  const members = (): number[] => {
    const all = [...after.registered, ...after.queue];
    return wants ? all.filter(wants) : all;
  };
  switch (e.type) {
    case 'studentPromoted': {
      const out = !wants || wants(e.studentId) ? [mk('promoted', e.studentId, `you were promoted from the reserve queue and now hold a seat in ${name}`)] : [];
      const was = before.queue.indexOf(e.studentId);
      return out.concat(queueMoves(was < 0 ? 0 : was));
    }
    case 'studentDropped': {
      const out = e.reason === 'forceDropped' && (!wants || wants(e.studentId)) ? [mk('droppedByStaff', e.studentId, `staff removed you from ${name}`)] : [];
      if (e.from === 'queued') return out.concat(queueMoves(Math.max(0, before.queue.indexOf(e.studentId))));
      return out;
    }
    case 'studentEnrolled':
      return e.forced && (!wants || wants(e.studentId)) ? [mk('enrolledByStaff', e.studentId, `staff enrolled you in ${name}`)] : [];
    case 'sectionClosed':
    case 'sectionReopened': {
      const kind = e.type;
      const msg = kind === 'sectionClosed' ? `${name} was closed by staff` : `${name} was reopened by staff`;
      return members().map((s) => mk(kind, s, msg));
    }
    case 'capacityChanged':
    case 'reserveCapacityChanged':
    case 'sexLockChanged':
    case 'infoUpdated': {
      const change = changeOf(e.type, e as unknown as Record<string, unknown>);
      return members().map((s) => {
        const n = mk('sectionChanged', s, `staff changed ${name}`);
        n.change = change;
        return n;
      });
    }
    default:
      return [];
  }
}

/**
 * Notices of a resumed stream, from the rows the database holds after the client's last id: the
 * student's own rows, the rows of sections the student holds now, and watches that fired. Queue
 * moves are folded into one `queueMoved` per section with the current place (`queuedNow`), since
 * only the latest place matters. Returned in log order.
 */
export function noticesFromRows(input: {
  studentId: number;
  own: TransitionRow[];
  sections: TransitionRow[];
  fired: { courseId: number; groupId: number; firedSeq: number | null; transitionId: number; at: number }[];
  names: Map<string, string>;
  queuedNow: Map<string, number>;
}): Notice[] {
  const out: { order: number; n: Notice }[] = [];
  const nameOf = (c: number, g: number) => input.names.get(`${c}:${g}`) ?? `course ${c} group ${g}`;
  const s = input.studentId;
  for (const r of input.own) {
    const name = nameOf(r.courseId, r.groupId);
    if (r.type === 'studentPromoted') {
      out.push({ order: r.id, n: base('promoted', s, r.courseId, r.groupId, r.seq, name, r.at, `you were promoted from the reserve queue and now hold a seat in ${name}`) });
    } else if (r.type === 'studentDropped' && r.payload.reason === 'forceDropped') {
      out.push({ order: r.id, n: base('droppedByStaff', s, r.courseId, r.groupId, r.seq, name, r.at, `staff removed you from ${name}`) });
    } else if (r.type === 'studentEnrolled' && r.payload.forced === true) {
      out.push({ order: r.id, n: base('enrolledByStaff', s, r.courseId, r.groupId, r.seq, name, r.at, `staff enrolled you in ${name}`) });
    }
  }
  const lastMove = new Map<string, TransitionRow>();
  for (const r of input.sections) {
    const key = `${r.courseId}:${r.groupId}`;
    const name = nameOf(r.courseId, r.groupId);
    if (r.type === 'sectionClosed' || r.type === 'sectionReopened') {
      const msg = r.type === 'sectionClosed' ? `${name} was closed by staff` : `${name} was reopened by staff`;
      out.push({ order: r.id, n: base(r.type, s, r.courseId, r.groupId, r.seq, name, r.at, msg) });
    } else if (SETTING_TYPES.has(r.type)) {
      const n = base('sectionChanged', s, r.courseId, r.groupId, r.seq, name, r.at, `staff changed ${name}`);
      n.change = changeOf(r.type, r.payload);
      out.push({ order: r.id, n });
    } else if ((r.type === 'studentPromoted' || (r.type === 'studentDropped' && r.payload.from === 'queued')) && input.queuedNow.has(key)) {
      lastMove.set(key, r);
    }
  }
  for (const [key, r] of lastMove) {
    const pos = input.queuedNow.get(key) as number;
    const name = nameOf(r.courseId, r.groupId);
    const n = base('queueMoved', s, r.courseId, r.groupId, r.seq, name, r.at, `you moved up to place ${pos} in the reserve queue of ${name}`);
    n.queuePosition = pos;
    out.push({ order: r.id, n });
  }
  for (const w of input.fired) {
    const name = nameOf(w.courseId, w.groupId);
    out.push({ order: w.transitionId, n: base('seatAvailable', s, w.courseId, w.groupId, w.firedSeq ?? 0, name, w.at, seatMessage(name)) });
  }
  out.sort((a, b) => a.order - b.order);
  return out.map((x) => x.n);
}

/** The body of a webhook delivery of a notice (docs/webhooks.md). */
export function webhookBody(n: Notice): string {
  return JSON.stringify({ type: 'notice', notice: toWire(n) });
}

/** A notice as the webhook deliveries record it: its key (with the webhook, unique) and body. */
export function outboxNotice(n: Notice): OutboxNotice {
  return { noticeKey: `${n.id}:${n.kind}:${n.studentId}`, kind: n.kind, studentId: n.studentId, body: webhookBody(n) };
}

/**
 * Within one batch's notices, only a student's latest `queueMoved` per section is kept: under churn
 * a long queue moves many times a second, and only the latest place matters (a resumed stream folds
 * them the same way).
 */
export function coalesceQueueMoves(notices: Notice[]): Notice[] {
  let last: Map<string, number> | null = null;
  for (let i = 0; i < notices.length; i++) {
    const n = notices[i] as Notice;
    if (n.kind === 'queueMoved') (last ??= new Map()).set(`${n.studentId}:${n.courseId}:${n.groupId}`, i);
  }
  if (last === null) return notices;
  const keep = last;
  return notices.filter((n, i) => n.kind !== 'queueMoved' || keep.get(`${n.studentId}:${n.courseId}:${n.groupId}`) === i);
}

/**
 * The webhook outbox's notice rules (persistence/webhook-outbox.ts): the notices of a durable
 * batch's section steps, queue moves folded per student and section within the batch, for the
 * kinds some active webhook takes.
 */
export const deriveWebhookNotices: OutboxDeriver = (steps, kinds) => {
  const all: Notice[] = [];
  for (const { before, event, after } of steps) {
    for (const n of noticesForEvent(before, event, after)) if (kinds === null || kinds.has(n.kind)) all.push(n);
  }
  return coalesceQueueMoves(all).map(outboxNotice);
};
