import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { evolveSection, initialSectionContext, membershipOf, sectionKey } from '../src/actors/section-logic.js';
import { createSectionActor } from '../src/actors/section-machine.js';
import type { Cause, SectionCommand, SectionContext, SectionEmitted, SectionEvent, SectionRefusal, Sex } from '../src/actors/types.js';
import { makeInfo } from './support/engine-fixture.js';

/**
 * The section's rules, command by command, on a real section actor started from a given context:
 * what it records (events, numbered after the context) or why it refuses (its `commandRefused`).
 */

const cause: Cause = { requestId: 'r1', actor: 'staff:1', at: 1_700_000_000_000 };
type Cmd = SectionCommand;
const schedule = { maxUnits: 1000, held: [], checkSameCourse: true };

/** Sends one command to an actor started at `ctx`; what it emitted and the context it ended with. */
function run(ctx: SectionContext, c: Cmd): { emitted: SectionEmitted[]; after: SectionContext } {
  const actor = createSectionActor({ context: ctx });
  const emitted: SectionEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.send(c);
  const after = actor.getSnapshot().context;
  actor.stop();
  return { emitted, after };
}

function decideSection(ctx: SectionContext, c: Cmd): SectionEvent[] | SectionRefusal {
  const { emitted } = run(ctx, c);
  const refused = emitted.find((e): e is SectionRefusal => e.type === 'commandRefused');
  if (refused) {
    assert.equal(emitted.length, 1, 'a refusal comes alone');
    return refused;
  }
  return emitted as SectionEvent[];
}
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function ctxWith(over: { capacity?: number; reserveCapacity?: number; sexLock?: Sex | null; closed?: boolean } = {}): SectionContext {
  return initialSectionContext(makeInfo(10, 1), {
    capacity: over.capacity ?? 2,
    reserveCapacity: over.reserveCapacity ?? 2,
    sexLock: over.sexLock ?? null,
    closed: over.closed ?? false,
  });
}

const cmd = {
  enroll: (studentId: number, gender: Sex = 'male', movedIn?: boolean): Cmd =>
    movedIn === undefined
      ? { type: 'enroll', studentId, gender, schedule, cause }
      : { type: 'enroll', studentId, gender, schedule, movedIn, cause },
  drop: (studentId: number): Cmd => ({ type: 'drop', studentId, reason: 'dropped', cause }),
  force: (studentId: number): Cmd => ({ type: 'forceEnroll', studentId, cause }),
  capacity: (capacity: number): Cmd => ({ type: 'changeSettings', change: { capacity }, cause }),
  reserve: (reserveCapacity: number): Cmd => ({ type: 'changeSettings', change: { reserveCapacity }, cause }),
  lock: (sexLock: Sex | null, memberSexes: Record<number, Sex> = {}): Cmd => ({ type: 'changeSettings', change: { sexLock }, memberSexes, cause }),
  close: (): Cmd => ({ type: 'close', cause }),
  reopen: (): Cmd => ({ type: 'reopen', cause }),
};

function events(ctx: SectionContext, c: Cmd): SectionEvent[] {
  const d = decideSection(ctx, c);
  assert.ok(Array.isArray(d), `expected events, got ${JSON.stringify(d)}`);
  return d;
}

function rejection(ctx: SectionContext, c: Cmd): SectionRefusal {
  const d = decideSection(ctx, c);
  assert.ok(!Array.isArray(d), `expected a rejection, got ${JSON.stringify(d)}`);
  return d;
}

/** Runs the commands one after the other, each on a fresh actor started from the last context. */
function apply(ctx: SectionContext, ...cmds: Cmd[]): SectionContext {
  let next = ctx;
  for (const c of cmds) {
    const r = run(next, c);
    assert.ok(!r.emitted.some((e) => e.type === 'commandRefused'), `refused: ${JSON.stringify(r.emitted)}`);
    let replayed = next;
    for (const e of r.emitted as SectionEvent[]) replayed = evolveSection(replayed, e);
    assert.deepEqual(r.after, replayed, 'the events emitted rebuild the context the actor reached');
    next = r.after;
  }
  return next;
}

/** The events' type-specific parts, without the envelope every event carries. */
function shapes(es: SectionEvent[]): DistributiveOmit<SectionEvent, 'courseId' | 'groupId' | 'seq' | 'cause'>[] {
  return es.map((e) => {
    const { courseId: _c, groupId: _g, seq: _s, cause: _k, ...rest } = e;
    return rest as DistributiveOmit<SectionEvent, 'courseId' | 'groupId' | 'seq' | 'cause'>;
  });
}

describe('section machine: enroll', () => {
  test('takes a free seat, numbering the event after the context and stamping the cause', () => {
    const ctx = { ...ctxWith(), seq: 7 };
    const es = events(ctx, cmd.enroll(1));
    assert.deepEqual(es, [
      { type: 'studentEnrolled', studentId: 1, forced: false, movedIn: false, courseId: 10, groupId: 1, seq: 8, cause },
    ]);
  });

  test('queues when the seats are taken, then refuses when the queue is full', () => {
    const ctx = apply(ctxWith({ capacity: 1, reserveCapacity: 1 }), cmd.enroll(1));
    assert.deepEqual(shapes(events(ctx, cmd.enroll(2))), [{ type: 'studentQueued', studentId: 2, movedIn: false }]);
    const full = apply(ctx, cmd.enroll(2));
    assert.equal(rejection(full, cmd.enroll(3)).code, 'SECTION_FULL');
  });

  test('a section with no reserve queue refuses as soon as the seats are gone', () => {
    const ctx = apply(ctxWith({ capacity: 1, reserveCapacity: 0 }), cmd.enroll(1));
    assert.equal(rejection(ctx, cmd.enroll(2)).code, 'SECTION_FULL');
  });

  test('carries movedIn for a change of group', () => {
    assert.deepEqual(shapes(events(ctxWith(), cmd.enroll(1, 'male', true))), [
      { type: 'studentEnrolled', studentId: 1, forced: false, movedIn: true },
    ]);
  });

  test('closed is checked before the sex lock, the sex lock before the seat', () => {
    assert.equal(rejection(ctxWith({ closed: true, sexLock: 'female' }), cmd.enroll(1, 'male')).code, 'SECTION_CLOSED');
    const lockedFull = apply(ctxWith({ capacity: 1, reserveCapacity: 0, sexLock: 'female' }), cmd.enroll(9, 'female'));
    assert.equal(rejection(lockedFull, cmd.enroll(1, 'male')).code, 'SEX_LOCK');
    assert.equal(rejection(lockedFull, cmd.enroll(2, 'female')).code, 'SECTION_FULL');
    // A change of group is an enroll with movedIn: the section applies the same rules to it on its
    // own, whatever the engine checked before sending it.
    assert.equal(rejection(ctxWith({ closed: true }), cmd.enroll(1, 'male', true)).code, 'SECTION_CLOSED');
    assert.equal(rejection(ctxWith({ sexLock: 'female' }), cmd.enroll(1, 'male', true)).code, 'SEX_LOCK');
    assert.equal(rejection(lockedFull, cmd.enroll(2, 'female', true)).code, 'SECTION_FULL');
    assert.deepEqual(shapes(events(ctxWith({ sexLock: 'female' }), cmd.enroll(2, 'female'))), [
      { type: 'studentEnrolled', studentId: 2, forced: false, movedIn: false },
    ]);
  });

  test('refuses a student already registered or queued here', () => {
    const ctx = apply(ctxWith({ capacity: 1 }), cmd.enroll(1), cmd.enroll(2));
    assert.equal(rejection(ctx, cmd.enroll(1)).code, 'ALREADY_IN_SECTION');
    assert.equal(rejection(ctx, cmd.enroll(2)).code, 'ALREADY_IN_SECTION');
  });

  test('never changes the context it decides on', () => {
    const ctx = apply(ctxWith({ capacity: 1 }), cmd.enroll(1), cmd.enroll(2));
    const copy = structuredClone(ctx);
    for (const c of [cmd.enroll(3), cmd.drop(1), cmd.force(2), cmd.capacity(4), cmd.reserve(5), cmd.lock('male'), cmd.close()]) {
      decideSection(ctx, c);
    }
    assert.deepEqual(ctx, copy);
  });
});

describe('section machine: drop', () => {
  test('dropping a registered student promotes the queue head at once, in the same decision', () => {
    const ctx = apply(ctxWith({ capacity: 2, reserveCapacity: 3 }), cmd.enroll(1), cmd.enroll(2), cmd.enroll(3), cmd.enroll(4));
    const es = events(ctx, cmd.drop(1));
    assert.deepEqual(shapes(es), [
      { type: 'studentDropped', studentId: 1, from: 'registered', reason: 'dropped' },
      { type: 'studentPromoted', studentId: 3 },
    ]);
    assert.deepEqual(es.map((e) => e.seq), [ctx.seq + 1, ctx.seq + 2]);
    const after = apply(ctx, cmd.drop(1));
    assert.deepEqual(after.registered, [2, 3]);
    assert.deepEqual(after.queue, [4]);
  });

  test('dropping a queued student promotes nobody and keeps the others in order', () => {
    const ctx = apply(ctxWith({ capacity: 1, reserveCapacity: 3 }), cmd.enroll(1), cmd.enroll(2), cmd.enroll(3), cmd.enroll(4));
    assert.deepEqual(shapes(events(ctx, cmd.drop(3))), [{ type: 'studentDropped', studentId: 3, from: 'queued', reason: 'dropped' }]);
    const after = apply(ctx, cmd.drop(3));
    assert.deepEqual(after.registered, [1]);
    assert.deepEqual(after.queue, [2, 4]);
  });

  test('dropping with an empty queue just frees the seat', () => {
    const ctx = apply(ctxWith(), cmd.enroll(1));
    assert.deepEqual(shapes(events(ctx, cmd.drop(1))), [{ type: 'studentDropped', studentId: 1, from: 'registered', reason: 'dropped' }]);
  });

  test('refuses a student who holds no place', () => {
    assert.equal(rejection(apply(ctxWith(), cmd.enroll(1)), cmd.drop(2)).code, 'NOT_ENROLLED');
  });

  test('works on a closed section and still promotes', () => {
    const ctx = apply(ctxWith({ capacity: 1 }), cmd.enroll(1), cmd.enroll(2), cmd.close());
    const after = apply(ctx, cmd.drop(1));
    assert.deepEqual(after.registered, [2]);
    assert.deepEqual(after.queue, []);
    assert.equal(after.closed, true);
  });
});

describe('section machine: force enroll', () => {
  test('takes a free seat without growing the section', () => {
    assert.deepEqual(shapes(events(ctxWith(), cmd.force(1))), [{ type: 'studentEnrolled', studentId: 1, forced: true, movedIn: false }]);
  });

  test('a full section grows by exactly one seat', () => {
    const ctx = apply(ctxWith({ capacity: 1, reserveCapacity: 0 }), cmd.enroll(1));
    assert.deepEqual(shapes(events(ctx, cmd.force(2))), [
      { type: 'capacityChanged', capacity: 2 },
      { type: 'studentEnrolled', studentId: 2, forced: true, movedIn: false },
    ]);
    const after = apply(ctx, cmd.force(2));
    assert.equal(after.capacity, 2);
    assert.deepEqual(after.registered, [1, 2]);
  });

  test('a queued student is promoted (out of turn, with one more seat)', () => {
    const ctx = apply(ctxWith({ capacity: 1, reserveCapacity: 2 }), cmd.enroll(1), cmd.enroll(2), cmd.enroll(3));
    assert.deepEqual(shapes(events(ctx, cmd.force(3))), [
      { type: 'capacityChanged', capacity: 2 },
      { type: 'studentPromoted', studentId: 3 },
    ]);
    const after = apply(ctx, cmd.force(3));
    assert.deepEqual(after.registered, [1, 3]);
    assert.deepEqual(after.queue, [2]);
    assert.equal(membershipOf(after, 3), 'registered');
  });

  test('ignores closed and sex lock, refuses a registered student', () => {
    const ctx = ctxWith({ closed: true, sexLock: 'female' });
    assert.deepEqual(shapes(events(ctx, cmd.force(1))), [{ type: 'studentEnrolled', studentId: 1, forced: true, movedIn: false }]);
    assert.equal(rejection(apply(ctx, cmd.force(1)), cmd.force(1)).code, 'ALREADY_IN_SECTION');
  });
});

describe('section machine: capacity and reserve capacity', () => {
  const queued = (): SectionContext =>
    apply(ctxWith({ capacity: 1, reserveCapacity: 3 }), cmd.enroll(1), cmd.enroll(2), cmd.enroll(3), cmd.enroll(4));

  test('growth promotes min(growth, queue length) students in queue order', () => {
    assert.deepEqual(shapes(events(queued(), cmd.capacity(3))), [
      { type: 'capacityChanged', capacity: 3 },
      { type: 'studentPromoted', studentId: 2 },
      { type: 'studentPromoted', studentId: 3 },
    ]);
    assert.deepEqual(shapes(events(queued(), cmd.capacity(10))), [
      { type: 'capacityChanged', capacity: 10 },
      { type: 'studentPromoted', studentId: 2 },
      { type: 'studentPromoted', studentId: 3 },
      { type: 'studentPromoted', studentId: 4 },
    ]);
    const after = apply(queued(), cmd.capacity(3));
    assert.deepEqual(after.registered, [1, 2, 3]);
    assert.deepEqual(after.queue, [4]);
  });

  test('cannot go below the registered count; may shrink to it; unchanged is no event', () => {
    const ctx = apply(ctxWith({ capacity: 5 }), cmd.enroll(1), cmd.enroll(2));
    assert.equal(rejection(ctx, cmd.capacity(1)).code, 'CAPACITY_BELOW_REGISTERED');
    assert.deepEqual(shapes(events(ctx, cmd.capacity(2))), [{ type: 'capacityChanged', capacity: 2 }]);
    assert.deepEqual(events(ctx, cmd.capacity(5)), []);
  });

  test('malformed numbers are refused', () => {
    assert.equal(rejection(ctxWith(), cmd.capacity(-1)).code, 'BAD_REQUEST');
    assert.equal(rejection(ctxWith(), cmd.capacity(1.5)).code, 'BAD_REQUEST');
    assert.equal(rejection(ctxWith(), cmd.reserve(-1)).code, 'BAD_REQUEST');
    assert.equal(rejection(ctxWith(), cmd.reserve(Number.NaN)).code, 'BAD_REQUEST');
  });

  test('reserve capacity cannot go below the queue length', () => {
    const ctx = queued();
    assert.equal(rejection(ctx, cmd.reserve(2)).code, 'RESERVE_BELOW_QUEUED');
    assert.deepEqual(shapes(events(ctx, cmd.reserve(4))), [{ type: 'reserveCapacityChanged', reserveCapacity: 4 }]);
    assert.deepEqual(events(ctx, cmd.reserve(3)), []);
  });
});

describe('section machine: lock, close, reopen, info', () => {
  test('sex lock changes are events; an unchanged lock is none', () => {
    assert.deepEqual(shapes(events(ctxWith(), cmd.lock('female'))), [{ type: 'sexLockChanged', sexLock: 'female' }]);
    assert.deepEqual(events(ctxWith(), cmd.lock(null)), []);
    assert.equal(apply(ctxWith(), cmd.lock('male')).sexLock, 'male');
  });

  test('close and reopen are idempotent', () => {
    assert.deepEqual(shapes(events(ctxWith(), cmd.close())), [{ type: 'sectionClosed' }]);
    assert.deepEqual(events(ctxWith({ closed: true }), cmd.close()), []);
    assert.deepEqual(shapes(events(ctxWith({ closed: true }), cmd.reopen())), [{ type: 'sectionReopened' }]);
    assert.deepEqual(events(ctxWith(), cmd.reopen()), []);
    assert.equal(apply(ctxWith(), cmd.close()).closed, true);
    assert.equal(apply(ctxWith(), cmd.close(), cmd.reopen()).closed, false);
  });

  test('updateInfo merges the descriptive fields', () => {
    const after = apply(ctxWith(), { type: 'changeSettings', change: { info: { lecturer: 'Dr. X', notes: 'room 5' } }, cause });
    assert.equal(after.info.lecturer, 'Dr. X');
    assert.equal(after.info.notes, 'room 5');
    assert.equal(after.info.courseId, 10);
  });
});

describe('evolveSection', () => {
  test('a redelivered event (seq at or below the context) changes nothing', () => {
    const ctx = apply(ctxWith(), cmd.enroll(1));
    const [e] = events(apply(ctxWith(), cmd.enroll(1)), cmd.enroll(2));
    const once = evolveSection(ctx, e!);
    assert.equal(evolveSection(once, e!), once);
    const [old] = events(ctxWith(), cmd.enroll(1));
    assert.equal(evolveSection(once, old!), once);
  });

  test('replaying the decided events from scratch rebuilds the same context', () => {
    const base = ctxWith({ capacity: 1, reserveCapacity: 2 });
    const all: SectionEvent[] = [];
    let ctx = base;
    for (const c of [cmd.enroll(1), cmd.enroll(2), cmd.enroll(3), cmd.drop(1), cmd.capacity(3), cmd.force(4), cmd.close(), cmd.drop(2)]) {
      const es = events(ctx, c);
      all.push(...es);
      for (const e of es) ctx = evolveSection(ctx, e);
    }
    assert.deepEqual(all.map((e) => e.seq), all.map((_e, i) => i + 1), 'consecutive sequence numbers');
    let replayed = base;
    for (const e of all) replayed = evolveSection(replayed, e);
    assert.deepEqual(replayed, ctx);
    assert.deepEqual(ctx.registered, [3, 4]);
    assert.equal(membershipOf(ctx, 3), 'registered');
    assert.equal(membershipOf(ctx, 1), undefined);
  });

  test('sectionCreated starts a fresh context', () => {
    const info = makeInfo(20, 3);
    const created: SectionEvent = {
      type: 'sectionCreated',
      courseId: 20,
      groupId: 3,
      seq: 1,
      cause,
      info,
      capacity: 4,
      reserveCapacity: 1,
      sexLock: 'female',
      closed: true,
    };
    const ctx = evolveSection(ctxWith(), created);
    assert.deepEqual(ctx, { ...initialSectionContext(info, { capacity: 4, reserveCapacity: 1, sexLock: 'female', closed: true }), seq: 1 });
  });

  test('helpers', () => {
    const ctx = apply(ctxWith({ capacity: 1 }), cmd.enroll(1), cmd.enroll(2));
    assert.equal(membershipOf(ctx, 1), 'registered');
    assert.equal(membershipOf(ctx, 2), 'queued');
    assert.equal(membershipOf(ctx, 3), undefined);
    assert.equal(sectionKey(10, 2), '10:2');
  });
});
