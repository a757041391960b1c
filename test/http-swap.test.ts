import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import type { DomainEvent } from '../src/persistence/types.js';
import { assertStateInvariants } from './support/engine-fixture.js';
import { C, createHttpFixture, expectError, expectStatus, MINUTE, PW_HASH, S, seedData, T0, type HttpFixture } from './support/http-fixture.js';
import { normalize } from './support/scenario.js';
import { embeddedMode, fullMode, seededStore, type ModeFactory } from './support/store-harness.js';

/**
 * Issue 16 item 3: POST /student/swap, "drop A only if B succeeds". The enroll is decided first with
 * every rule while A's units and times count as free; A is left (and its queue promoted) only when
 * B gave a seat, or a queue place with queue_ok. A refusal changes nothing, in memory or in the log.
 */

type Sec = readonly [number, number];
const body = (drop: Sec, enroll: Sec, queueOk?: boolean) => ({
  drop: { course_id: drop[0], group_id: drop[1] },
  enroll: { course_id: enroll[0], group_id: enroll[1] },
  ...(queueOk === undefined ? {} : { queue_ok: queueOk }),
});

describe('POST /student/swap', () => {
  let fx: HttpFixture;
  beforeEach(async () => {
    fx = await createHttpFixture({ logLevel: 'silent' });
  });
  afterEach(async () => {
    await fx.close();
  });

  const enroll = async (student: number, [course_id, group_id]: Sec) =>
    expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } }), 204);
  const swap = (student: number, drop: Sec, target: Sec, queueOk?: boolean) =>
    fx.request('POST', '/student/swap', { token: fx.studentToken(student), body: body(drop, target, queueOk) });
  const holdings = (student: number) =>
    fx.engine
      .studentSections(student)
      .map((h) => `${h.section.info.courseId}:${h.section.info.groupId}:${h.status}`)
      .sort();
  const members = ([c, g]: Sec) => fx.engine.sectionMembers(c, g);
  const actions = (student: number) => fx.engine.getStudent(student)?.remainingActions;

  it('takes the new seat, leaves the old section, promotes its queue head, and uses one action', async () => {
    await enroll(S.f1, C.algo1);
    await enroll(S.alice, C.algo1);
    await enroll(S.f2, C.algo1); // queued behind a full section
    assert.deepEqual(members(C.algo1), { registered: [S.f1, S.alice], queue: [S.f2] });
    const appendsBefore = fx.persistence.appendCount;
    // db's exam is at the same time as algo1's: allowed only because algo1 is being dropped.
    const r = await swap(S.alice, C.algo1, C.db);
    expectStatus(r, 200);
    assert.deepEqual(r.body, { status: 'registered', remaining_actions: 4 });
    assert.deepEqual(holdings(S.alice), ['102:1:registered']);
    assert.deepEqual(members(C.algo1), { registered: [S.f1, S.f2], queue: [] }, 'the queue head got the freed seat');
    assert.deepEqual(members(C.db), { registered: [S.alice], queue: [] });
    assert.equal(actions(S.alice), 4);
    assert.equal(fx.persistence.appendCount, appendsBefore + 1, 'the swap is one append');
    const last = fx.persistence.log.slice(-4).map((e) => e.type);
    assert.deepEqual(last, ['studentEnrolled', 'studentDropped', 'studentPromoted', 'actionUsed']);
  });

  it('counts the dropped section\'s class time and units as free', async () => {
    await enroll(S.alice, C.algo1);
    // compilers' class overlaps algo1's on Sunday: a plain enroll is refused ...
    expectError(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 103, group_id: 1 } }), 400, 'CLASS_CONFLICT');
    // ... a swap out of algo1 is not.
    expectStatus(await swap(S.alice, C.algo1, C.compilers), 200);
    assert.deepEqual(holdings(S.alice), ['103:1:registered']);

    // dan may hold 4 units: 3 held + 3 would exceed, but not when the 3 held are dropped.
    await enroll(S.dan, C.physics);
    expectError(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.dan), body: { course_id: 106, group_id: 1 } }), 400, 'UNITS_EXCEEDED');
    expectStatus(await swap(S.dan, C.physics, C.tiny), 200);
    assert.deepEqual(holdings(S.dan), ['106:1:registered']);
  });

  it('works within one course too (a change of group)', async () => {
    await enroll(S.alice, C.algo1);
    expectStatus(await swap(S.alice, C.algo1, C.algo2), 200);
    assert.deepEqual(holdings(S.alice), ['101:2:registered']);
    assert.deepEqual(members(C.algo1), { registered: [], queue: [] });
  });

  it('without queue_ok refuses a queue-only target with NO_SEAT; with queue_ok it queues and drops', async () => {
    await enroll(S.f1, C.algo1);
    await enroll(S.f2, C.algo1);
    await enroll(S.alice, C.physics);
    const before = normalize(fx.engine.dumpState());
    const appends = fx.persistence.appendCount;
    expectError(await swap(S.alice, C.physics, C.algo1), 409, 'NO_SEAT');
    expectError(await swap(S.alice, C.physics, C.algo1, false), 409, 'NO_SEAT');
    assert.deepEqual(normalize(fx.engine.dumpState()), before);
    assert.equal(fx.persistence.appendCount, appends);

    const r = await swap(S.alice, C.physics, C.algo1, true);
    expectStatus(r, 200);
    assert.deepEqual(r.body, { status: 'queued', remaining_actions: 4 });
    assert.deepEqual(holdings(S.alice), ['101:1:queued']);
    assert.deepEqual(members(C.physics), { registered: [], queue: [] });
    // GET /student/course shows the queue position.
    const held = await fx.request('GET', '/student/course', { token: fx.studentToken(S.alice) });
    assert.equal(held.body.data[0].reserve_queue_position, 1);
  });

  it('a free seat is taken with or without queue_ok', async () => {
    await enroll(S.alice, C.physics);
    const r = await swap(S.alice, C.physics, C.algo1, true);
    assert.deepEqual(r.body, { status: 'registered', remaining_actions: 4 });
  });

  it('each refusal answers the refusing rule and changes nothing (memory, log, actions)', async () => {
    await enroll(S.alice, C.algo1);
    await enroll(S.alice, C.physics);
    await enroll(S.bea, C.physics);
    await enroll(S.dan, C.physics);
    await enroll(S.f1, C.tiny);
    const cases: { who: number; drop: Sec; target: Sec; status: number; code: string; prep?: () => void }[] = [
      { who: S.carl, drop: C.physics, target: C.algo2, status: 403, code: 'ENROLLMENT_WINDOW_CLOSED' },
      { who: S.eve, drop: C.physics, target: C.algo2, status: 403, code: 'NO_ACTIONS_LEFT' },
      { who: S.alice, drop: C.db, target: C.algo2, status: 409, code: 'NOT_ENROLLED' },
      { who: S.alice, drop: [101, 2], target: C.heavy, status: 409, code: 'NOT_ENROLLED' },
      { who: S.alice, drop: C.physics, target: [999, 1], status: 404, code: 'SECTION_NOT_FOUND' },
      { who: S.alice, drop: [998, 1], target: C.heavy, status: 404, code: 'SECTION_NOT_FOUND' },
      { who: S.alice, drop: C.physics, target: C.physics, status: 400, code: 'SAME_SECTION' },
      { who: S.alice, drop: C.physics, target: C.closed, status: 409, code: 'SECTION_CLOSED' },
      { who: S.alice, drop: C.physics, target: C.linalg, status: 403, code: 'SEX_LOCK' },
      { who: S.dan, drop: C.physics, target: C.heavy, status: 409, code: 'UNITS_EXCEEDED' },
      { who: S.alice, drop: C.physics, target: C.algo2, status: 409, code: 'SAME_COURSE' },
      { who: S.alice, drop: C.physics, target: C.db, status: 409, code: 'EXAM_CONFLICT' },
      { who: S.alice, drop: C.physics, target: C.compilers, status: 409, code: 'CLASS_CONFLICT' },
      { who: S.alice, drop: C.physics, target: C.tiny, status: 409, code: 'SECTION_FULL' },
      { who: S.bea, drop: C.physics, target: C.tiny, status: 409, code: 'SECTION_FULL' },
    ];
    for (const c of cases) {
      const before = normalize(fx.engine.dumpState());
      const appends = fx.persistence.appendCount;
      const r = await swap(c.who, c.drop, c.target, true);
      expectError(r, c.status, c.code);
      assert.deepEqual(normalize(fx.engine.dumpState()), before, `${c.code}: state unchanged`);
      assert.equal(fx.persistence.appendCount, appends, `${c.code}: nothing appended`);
    }
    assert.equal(actions(S.alice), 5);
    assert.deepEqual(holdings(S.alice), ['101:1:registered', '108:1:registered']);
  });

  it('refuses a malformed body with 400 and staff tokens with 403', async () => {
    await enroll(S.alice, C.physics);
    for (const bad of [{}, { drop: { course_id: 108, group_id: 1 } }, { ...body(C.physics, C.algo1), queue_ok: 'yes' }, { ...body(C.physics, C.algo1), extra: 1 }]) {
      const r = await fx.request('POST', '/student/swap', { token: fx.studentToken(S.alice), body: bad });
      expectError(r, 400, 'BAD_REQUEST');
    }
    expectError(await fx.request('POST', '/student/swap', { token: fx.staffToken(), body: body(C.physics, C.algo1) }), 403, 'FORBIDDEN');
    expectError(await fx.request('POST', '/student/swap', { body: body(C.physics, C.algo1) }), 401, 'UNAUTHENTICATED');
    assert.deepEqual(holdings(S.alice), ['108:1:registered']);
  });

  it('a failed append rolls both halves back and answers 503', async () => {
    await enroll(S.f1, C.algo1);
    await enroll(S.alice, C.algo1);
    await enroll(S.f2, C.algo1);
    const before = normalize(fx.engine.dumpState());
    fx.persistence.failNext = 1;
    expectError(await swap(S.alice, C.algo1, C.db), 503, 'UNAVAILABLE');
    assert.deepEqual(normalize(fx.engine.dumpState()), before);
    assert.deepEqual(holdings(S.alice), ['101:1:registered']);
    // And the next attempt works.
    expectStatus(await swap(S.alice, C.algo1, C.db), 200);
    assert.deepEqual(holdings(S.alice), ['102:1:registered']);
  });

  it('is documented in the OpenAPI document', async () => {
    const r = await fx.request('GET', '/docs/json');
    const op = r.body.paths['/student/swap'].post;
    assert.ok(op.requestBody.content['application/json'].schema.properties.queue_ok);
    assert.ok(op.responses['200']);
  });
});

describe('POST /student/swap under concurrency', () => {
  let fx: HttpFixture;
  before(async () => {
    fx = await createHttpFixture({ logLevel: 'silent' });
  });
  after(async () => {
    await fx.close();
  });

  it('swappers and plain enrollers racing for the same seats never overbook; each swap is all or nothing', async () => {
    const crowd = Array.from({ length: 30 }, (_, i) => 5000 + i);
    await fx.engine.importBatch(
      {
        departments: [],
        staff: [],
        students: crowd.map((id) => ({
          id,
          passwordHash: PW_HASH,
          enrollmentStart: T0,
          maxUnits: 20,
          remainingActions: 3,
          departmentId: 1,
          entryYear: 2024,
          gender: 'male' as const,
        })),
        sections: [
          { info: { ...seedData().sections[0]!.info, courseId: 700, groupId: 1, examTime: null, classTime: null }, capacity: 6, reserveCapacity: 0, sexLock: null },
          { info: { ...seedData().sections[0]!.info, courseId: 701, groupId: 1, examTime: null, classTime: null }, capacity: 15, reserveCapacity: 5, sexLock: null },
        ],
      },
      { requestId: 'crowd', actor: 'system' },
    );
    // Half the crowd holds 701 and swaps it for 700; the other half enrolls in 700 directly.
    const swappers = crowd.slice(0, 15);
    const enrollers = crowd.slice(15);
    for (const id of swappers) {
      expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(id), body: { course_id: 701, group_id: 1 } }), 204);
    }
    for (const id of enrollers.slice(0, 5)) {
      // 701 is full with the swappers: five of the enrollers wait in its queue.
      expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(id), body: { course_id: 701, group_id: 1 } }), 204);
    }
    assert.deepEqual(fx.engine.sectionMembers(701, 1).queue, enrollers.slice(0, 5));
    const replies = await Promise.all([
      ...swappers.map((id) =>
        fx.request('POST', '/student/swap', { token: fx.studentToken(id), body: body([701, 1], [700, 1]) }).then((r) => ({ id, kind: 'swap', r })),
      ),
      ...enrollers.slice(5).map((id) =>
        fx.request('PUT', '/student/course', { token: fx.studentToken(id), body: { course_id: 700, group_id: 1 } }).then((r) => ({ id, kind: 'enroll', r })),
      ),
    ]);
    const won = replies.filter((x) => x.r.status === 200 || x.r.status === 204);
    const lost = replies.filter((x) => !(x.r.status === 200 || x.r.status === 204));
    for (const x of lost) assert.equal(x.r.body.code, 'SECTION_FULL', x.r.raw);
    assert.equal(won.length, 6, 'exactly the six seats were given');
    const s700 = fx.engine.sectionMembers(700, 1);
    assert.deepEqual([...s700.registered].sort(), won.map((x) => x.id).sort());
    const swapWinners = won.filter((x) => x.kind === 'swap').map((x) => x.id);
    const swapLosers = replies.filter((x) => x.kind === 'swap' && x.r.status !== 200).map((x) => x.id);
    // Each swap winner left 701 and used an action; each loser kept 701 and its actions.
    for (const id of swapWinners) {
      assert.deepEqual(fx.engine.studentSections(id).map((h) => h.section.info.courseId), [700]);
      assert.equal(fx.engine.getStudent(id)?.remainingActions, 2);
    }
    for (const id of swapLosers) {
      assert.deepEqual(fx.engine.studentSections(id).map((h) => `${h.section.info.courseId}:${h.status}`), ['701:registered']);
      assert.equal(fx.engine.getStudent(id)?.remainingActions, 3);
    }
    // 701's freed seats went to its queue, in order.
    const s701 = fx.engine.sectionMembers(701, 1);
    const promotedCount = Math.min(5, swapWinners.length);
    assert.deepEqual(s701.queue, enrollers.slice(promotedCount, 5), 'the queue head was promoted first');
    if (promotedCount > 0) assert.deepEqual(s701.registered.slice(-promotedCount), enrollers.slice(0, promotedCount));
    assert.equal(s701.registered.length, 15 - swapWinners.length + promotedCount);
    assertStateInvariants(fx.engine.dumpState());
    // The log, replayed, is the same state.
    const reloaded = await fx.persistence.load();
    assert.deepEqual(normalize(reloaded), normalize(fx.engine.dumpState()));
  });
});

// -------------------------------------------------------------------------------------------------
// Durable as one change, across a restart, in the embedded store (PGlite) and the full store
// (PostgreSQL + RabbitMQ stream + batcher).

const NOW = T0 + 5 * MINUTE;

for (const mode of [embeddedMode, fullMode] as ModeFactory[]) {
  describe(`POST /student/swap is durable as one change (${mode.name} store)`, async () => {
    const { skip, harness } = await seededStore(mode, NOW);

    it('one append holds both halves and the action; a restart finds the swap whole', { skip, timeout: 120_000 }, async () => {
      const h = harness();
      const tok = (id: number) => h.token(id, 'student');
      const put = async (id: number, [course_id, group_id]: Sec) =>
        expectStatus(await h.request('PUT', '/student/course', { token: tok(id), body: { course_id, group_id } }), 204);
      await put(S.f1, C.algo1);
      await put(S.alice, C.algo1);
      await put(S.f2, C.algo1);
      const appends: DomainEvent[][] = [];
      const store = h.store;
      const orig = store.append.bind(store);
      store.append = (events) => {
        appends.push(structuredClone(events));
        return orig(events);
      };
      const r = await h.request('POST', '/student/swap', { token: tok(S.alice), body: body(C.algo1, C.db) });
      store.append = orig;
      expectStatus(r, 200);
      assert.equal(appends.length, 1, 'one append');
      assert.deepEqual(
        appends[0]!.map((e) => e.type),
        ['studentEnrolled', 'studentDropped', 'studentPromoted', 'actionUsed'],
      );
      const expected = normalize(h.engine.dumpState());
      // What the database holds is the whole swap (the full store's batcher writes behind).
      assert.deepEqual(normalize(await h.databaseState()), expected);
      await h.restart(h.canReopenStore ? { reopenStore: true } : {});
      assert.deepEqual(normalize(h.engine.dumpState()), expected);
      assert.deepEqual(h.engine.sectionMembers(101, 1), { registered: [S.f1, S.f2], queue: [] });
      assert.deepEqual(h.engine.sectionMembers(102, 1), { registered: [S.alice], queue: [] });
      assert.equal(h.engine.getStudent(S.alice)?.remainingActions, 4);
      // And a refused swap after the restart still changes nothing.
      const before2 = normalize(h.engine.dumpState());
      const refused = await h.request('POST', '/student/swap', { token: tok(S.alice), body: body(C.db, C.closed) });
      expectError(refused, 409, 'SECTION_CLOSED');
      assert.deepEqual(normalize(h.engine.dumpState()), before2);
    });
  });
}
