import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { evolveSection, initialSectionContext } from '../src/actors/section-logic.js';
import type { SectionContext, SectionEvent } from '../src/actors/types.js';
import { eventMayNotify, freePlaces, hasRoom, noticesForEvent, noticesFromRows, parseNoticeId } from '../src/notices/notices.js';
import type { TransitionRow } from '../src/persistence/notice-types.js';

/** The pure notice rules: which durable transition tells whom what. */

const cause = { requestId: 'r', actor: 'staff:1', at: Date.UTC(2026, 0, 1) };
function ctx(registered: number[], queue: number[], capacity = 2, reserve = 3): SectionContext {
  return {
    ...initialSectionContext(
      { courseId: 5, groupId: 2, forDepartment: null, name: 'Optics', lecturer: '', units: 3, examTime: null, classTime: null, notes: '' },
      { capacity, reserveCapacity: reserve, sexLock: null },
    ),
    registered,
    queue,
    seq: 10,
  };
}
function apply(before: SectionContext, body: Record<string, unknown>) {
  const e = { ...body, courseId: 5, groupId: 2, seq: before.seq + 1, cause } as SectionEvent;
  const after = evolveSection(before, e);
  return noticesForEvent(before, e, after).map((n) => [n.kind, n.studentId, n.queuePosition ?? null, n.id]);
}

describe('notice rules', () => {
  test('a promotion tells the promoted student and everyone left in the queue their new place', () => {
    assert.deepEqual(apply(ctx([1], [7, 8, 9]), { type: 'studentPromoted', studentId: 7 }), [
      ['promoted', 7, null, '5-2-11'],
      ['queueMoved', 8, 1, '5-2-11'],
      ['queueMoved', 9, 2, '5-2-11'],
    ]);
  });

  test('leaving the queue moves only those behind; a staff drop tells the dropped student', () => {
    assert.deepEqual(apply(ctx([1, 2], [7, 8, 9]), { type: 'studentDropped', studentId: 8, from: 'queued', reason: 'forceDropped' }), [
      ['droppedByStaff', 8, null, '5-2-11'],
      ['queueMoved', 9, 2, '5-2-11'],
    ]);
    assert.deepEqual(apply(ctx([1, 2], [7]), { type: 'studentDropped', studentId: 1, from: 'registered', reason: 'dropped' }), []);
  });

  test("a student's own enroll says nothing; a staff enroll does", () => {
    assert.deepEqual(apply(ctx([1], []), { type: 'studentEnrolled', studentId: 3, forced: false, movedIn: false }), []);
    assert.deepEqual(apply(ctx([1], []), { type: 'studentEnrolled', studentId: 3, forced: true, movedIn: false }).map((x) => x[0]), ['enrolledByStaff']);
  });

  test('closing and changing a section tell every member, seated and queued', () => {
    assert.deepEqual(apply(ctx([1, 2], [7]), { type: 'sectionClosed' }).map((x) => [x[0], x[1]]), [
      ['sectionClosed', 1],
      ['sectionClosed', 2],
      ['sectionClosed', 7],
    ]);
    const before = ctx([1], []);
    const e = { type: 'capacityChanged', capacity: 9, courseId: 5, groupId: 2, seq: 11, cause } as SectionEvent;
    const [n] = noticesForEvent(before, e, evolveSection(before, e));
    assert.deepEqual(n?.change, { capacity: 9 });
  });

  test('the outbox pre-filter: every event that means a notice passes eventMayNotify, and a plain enroll or seat drop does not', () => {
    const bodies: Record<string, unknown>[] = [
      { type: 'studentPromoted', studentId: 7 },
      { type: 'studentDropped', studentId: 8, from: 'queued', reason: 'dropped' },
      { type: 'studentDropped', studentId: 1, from: 'registered', reason: 'forceDropped' },
      { type: 'studentDropped', studentId: 1, from: 'registered', reason: 'dropped' },
      { type: 'studentEnrolled', studentId: 3, forced: true, movedIn: false },
      { type: 'studentEnrolled', studentId: 3, forced: false, movedIn: false },
      { type: 'sectionClosed' },
      { type: 'sectionReopened' },
      { type: 'capacityChanged', capacity: 9 },
      { type: 'reserveCapacityChanged', reserveCapacity: 4 },
      { type: 'sexLockChanged', sexLock: 'female' },
    ];
    for (const body of bodies) {
      const before = body.type === 'sectionReopened' ? { ...ctx([1, 2], [7, 8, 9]), closed: true } : ctx([1, 2], [7, 8, 9]);
      const e = { ...body, courseId: 5, groupId: 2, seq: before.seq + 1, cause } as SectionEvent;
      const notices = noticesForEvent(before, e, evolveSection(before, e));
      if (notices.length > 0) assert.ok(eventMayNotify(e), `${JSON.stringify(body)} means notices`);
    }
    const plain = { type: 'studentEnrolled', studentId: 3, forced: false, movedIn: false, courseId: 5, groupId: 2, seq: 11, cause } as SectionEvent;
    assert.equal(eventMayNotify(plain), false);
    const seatDrop = { type: 'studentDropped', studentId: 1, from: 'registered', reason: 'dropped', courseId: 5, groupId: 2, seq: 11, cause } as SectionEvent;
    assert.equal(eventMayNotify(seatDrop), false);
  });

  test('room: a free seat or reserve place in an open section', () => {
    assert.equal(hasRoom(ctx([1, 2], [7, 8, 9])), false);
    assert.equal(hasRoom(ctx([1, 2], [7, 8])), true);
    assert.equal(freePlaces(ctx([1], [])), 1 + 3);
    assert.equal(hasRoom({ ...ctx([], []), closed: true }), false);
  });

  test('ids parse back, and nothing else does', () => {
    assert.deepEqual(parseNoticeId('5-2-11'), { courseId: 5, groupId: 2, seq: 11 });
    for (const bad of ['', '5-2', 'a-b-c', '5-2-11-1', '-1-2-3']) assert.equal(parseNoticeId(bad), null, bad);
  });

  test('resumed from rows: own changes, section changes, one queue move per section with the current place, fired watches, in log order', () => {
    const row = (id: number, seq: number, type: string, studentId: number | null, payload: Record<string, unknown> = {}): TransitionRow => ({
      id,
      courseId: 5,
      groupId: 2,
      seq,
      type,
      studentId,
      at: cause.at,
      payload,
    });
    const out = noticesFromRows({
      studentId: 8,
      own: [row(50, 20, 'studentQueued', 8), row(90, 25, 'studentDropped', 8, { reason: 'forceDropped', from: 'queued' })],
      sections: [
        row(60, 21, 'studentPromoted', 7),
        row(70, 22, 'studentDropped', 6, { from: 'queued', reason: 'dropped' }),
        row(80, 23, 'sexLockChanged', null, { sexLock: 'female' }),
        row(85, 24, 'studentDropped', 4, { from: 'registered', reason: 'dropped' }),
      ],
      fired: [{ courseId: 5, groupId: 2, firedSeq: 26, transitionId: 95, at: cause.at }],
      names: new Map([['5:2', 'Optics']]),
      queuedNow: new Map([['5:2', 1]]),
    });
    assert.deepEqual(
      out.map((n) => [n.kind, n.id, n.queuePosition ?? null]),
      [
        ['queueMoved', '5-2-22', 1],
        ['sectionChanged', '5-2-23', null],
        ['droppedByStaff', '5-2-25', null],
        ['seatAvailable', '5-2-26', null],
      ],
    );
  });
});
