import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import {
  C,
  createHttpFixture,
  EXAM_A,
  expectError,
  expectStatus,
  MINUTE,
  S,
  T0,
  type HttpFixture,
} from './support/http-fixture.js';

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

const enroll = (student: number, [course_id, group_id]: readonly [number, number]) =>
  fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } });
const held = async (student: number) => {
  const r = await fx.request('GET', '/student/course', { token: fx.studentToken(student) });
  expectStatus(r, 200);
  return r.body.data as { course: Record<string, unknown>; reserve_queue_position?: number }[];
};
const members = async ([course_id, group_id]: readonly [number, number]) => {
  const r = await fx.request('GET', `/staff/course-students?course_id=${course_id}&group_id=${group_id}`, { token: fx.staffToken() });
  expectStatus(r, 200);
  return r.body as { registered_students: number[]; reserved_queue_students: number[] };
};

describe('PUT /student/course (enroll)', () => {
  it('enrolls with 204 and no body, and GET /student/course shows the full CourseData', async () => {
    const r = await enroll(S.alice, C.algo1);
    expectStatus(r, 204);
    assert.equal(r.raw, '');
    assert.deepEqual(await held(S.alice), [
      {
        course: {
          course_id: 101,
          group_id: 1,
          name: 'Algorithms',
          units: 3,
          capacity: 2,
          registered_count: 1,
          reserve_capacity: 2,
          reserved_count: 0,
          exam_time: EXAM_A / 1000,
          class_time: [
            { day: 0, start_minute: 480, end_minute: 570 },
            { day: 2, start_minute: 480, end_minute: 570 },
          ],
          lecturer: 'Donald Knuth',
          sex_lock: null,
          closed: false,
          state: 'open.seatsAvailable',
          for_department: 1,
          notes: '',
        },
      },
    ]);
  });

  it('queues a student when the seats are taken, with a 1-based position that moves up', async () => {
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectStatus(await enroll(S.f3, C.algo1), 204);
    const [a] = await held(S.alice);
    assert.equal(a?.reserve_queue_position, 1);
    assert.equal(a?.course['registered_count'], 2);
    assert.equal(a?.course['reserved_count'], 2);
    assert.equal(a?.course['state'], 'open.full');
    assert.equal((await held(S.f3))[0]?.reserve_queue_position, 2);
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f1, S.f2], reserved_queue_students: [S.alice, S.f3] });
    // A registered student's entry has no position at all.
    assert.ok(!('reserve_queue_position' in ((await held(S.f1))[0] ?? {})));
  });

  it('lists several held sections in course order', async () => {
    expectStatus(await enroll(S.alice, C.physics), 204);
    expectStatus(await enroll(S.alice, C.algo1), 204);
    const list = await held(S.alice);
    assert.deepEqual(list.map((h) => [h.course['course_id'], h.course['group_id']]), [[101, 1], [108, 1]]);
  });

  it('answers an unknown section with 400 SECTION_NOT_FOUND', async () => {
    expectError(await enroll(S.alice, [999, 1]), 400, 'SECTION_NOT_FOUND');
    expectError(await enroll(S.alice, [101, 99]), 400, 'SECTION_NOT_FOUND');
  });

  it('answers a token for a student who does not exist (any more) with 401 UNAUTHENTICATED', async () => {
    const r = await fx.request('PUT', '/student/course', { token: fx.studentToken(4242), body: { course_id: 101, group_id: 1 } });
    expectError(r, 401, 'UNAUTHENTICATED');
    expectError(await fx.request('GET', '/student/course', { token: fx.studentToken(4242) }), 401, 'UNAUTHENTICATED');
  });
});

describe('enroll rules over HTTP (SPEC section 4, in order)', () => {
  /** Asserts the rejection and that the student's schedule did not change. */
  async function refused(student: number, section: readonly [number, number], status: number, code: string) {
    const before = await held(student);
    expectError(await enroll(student, section), status, code);
    assert.deepEqual(await held(student), before);
  }

  it('1. window not yet open, and window closed: 400 ENROLLMENT_WINDOW_CLOSED', async () => {
    await refused(S.carl, C.physics, 400, 'ENROLLMENT_WINDOW_CLOSED');
    fx.clock.now = T0 + 61 * MINUTE; // tokens are still valid; the window is not
    await refused(S.alice, C.physics, 400, 'ENROLLMENT_WINDOW_CLOSED');
  });

  it('2. closed section: 400 SECTION_CLOSED', async () => {
    await refused(S.alice, C.closed, 400, 'SECTION_CLOSED');
  });

  it('3. sex lock: 400 SEX_LOCK for the other sex, 204 for the right one', async () => {
    await refused(S.alice, C.linalg, 400, 'SEX_LOCK');
    expectStatus(await enroll(S.bea, C.linalg), 204);
  });

  it('4. units: 400 UNITS_EXCEEDED', async () => {
    await refused(S.dan, C.heavy, 400, 'UNITS_EXCEEDED');
  });

  it('5. same course: 400 SAME_COURSE', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    await refused(S.alice, C.algo2, 400, 'SAME_COURSE');
  });

  it('6a. exam conflict: 400 EXAM_CONFLICT', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    await refused(S.alice, C.db, 400, 'EXAM_CONFLICT');
  });

  it('6b. class conflict: 400 CLASS_CONFLICT', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    await refused(S.alice, C.compilers, 400, 'CLASS_CONFLICT');
  });

  it('7. section and reserve queue full: 400 SECTION_FULL', async () => {
    expectStatus(await enroll(S.f1, C.tiny), 204);
    await refused(S.alice, C.tiny, 400, 'SECTION_FULL');
  });

  it('checks the window before the section exists', async () => {
    expectError(await enroll(S.carl, [999, 1]), 400, 'ENROLLMENT_WINDOW_CLOSED');
  });
});

describe('PATCH /student/course (change group)', () => {
  it('moves the student atomically and uses one action', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    const r = await fx.request('PATCH', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 101, group_id: 2 } });
    expectStatus(r, 204);
    const list = await held(S.alice);
    assert.deepEqual(list.map((h) => h.course['group_id']), [2]);
    assert.deepEqual((await members(C.algo1)).registered_students, []);
    const me = await fx.request('GET', '/me', { token: fx.studentToken(S.alice) });
    assert.equal(me.body.remaining_actions, 4);
  });

  it('promotes the head of the old group\'s queue', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204); // queued
    const r = await fx.request('PATCH', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 101, group_id: 2 } });
    expectStatus(r, 204);
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f1, S.f2], reserved_queue_students: [] });
  });

  it('refuses the same group, a course not held, an unknown group, and a student with no actions', async () => {
    const t = fx.studentToken(S.alice);
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectError(await fx.request('PATCH', '/student/course', { token: t, body: { course_id: 101, group_id: 1 } }), 400, 'SAME_GROUP');
    expectError(await fx.request('PATCH', '/student/course', { token: t, body: { course_id: 108, group_id: 1 } }), 400, 'NOT_ENROLLED');
    expectError(await fx.request('PATCH', '/student/course', { token: t, body: { course_id: 101, group_id: 7 } }), 400, 'SECTION_NOT_FOUND');
    expectStatus(await enroll(S.eve, C.physics), 204);
    expectError(
      await fx.request('PATCH', '/student/course', { token: fx.studentToken(S.eve), body: { course_id: 108, group_id: 1 } }),
      400,
      'NO_ACTIONS_LEFT',
    );
    assert.deepEqual((await held(S.alice)).map((h) => h.course['group_id']), [1]);
  });
});

describe('DELETE /student/course (drop)', () => {
  it('drops with 204, uses one action, and a second drop is 400 NOT_ENROLLED', async () => {
    const t = fx.studentToken(S.alice);
    expectStatus(await enroll(S.alice, C.physics), 204);
    expectStatus(await fx.request('DELETE', '/student/course?course_id=108', { token: t }), 204);
    assert.deepEqual(await held(S.alice), []);
    assert.equal((await fx.request('GET', '/me', { token: t })).body.remaining_actions, 4);
    expectError(await fx.request('DELETE', '/student/course?course_id=108', { token: t }), 400, 'NOT_ENROLLED');
  });

  it('promotes the head of the reserve queue at once', async () => {
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectStatus(await enroll(S.f3, C.algo1), 204);
    expectStatus(await fx.request('DELETE', '/student/course?course_id=101', { token: fx.studentToken(S.f1) }), 204);
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f2, S.alice], reserved_queue_students: [S.f3] });
    const [a] = await held(S.alice);
    assert.equal(a?.reserve_queue_position, undefined);
    assert.equal((await held(S.f3))[0]?.reserve_queue_position, 1);
  });

  it('refuses with 400 NO_ACTIONS_LEFT when the student has none', async () => {
    expectStatus(await enroll(S.eve, C.physics), 204);
    expectError(await fx.request('DELETE', '/student/course?course_id=108', { token: fx.studentToken(S.eve) }), 400, 'NO_ACTIONS_LEFT');
    assert.equal((await held(S.eve)).length, 1);
  });

  it('accepts a JSON content type with an empty body, as some Go clients send on DELETE', async () => {
    expectStatus(await enroll(S.alice, C.physics), 204);
    const r = await fx.request('DELETE', '/student/course?course_id=108', {
      token: fx.studentToken(S.alice),
      headers: { 'content-type': 'application/json' },
    });
    expectStatus(r, 204);
  });
});

describe('GET /student/courses', () => {
  it('lists every section in course order, each as CourseData', async () => {
    const r = await fx.request('GET', '/student/courses', { token: fx.studentToken() });
    expectStatus(r, 200);
    assert.deepEqual(
      r.body.courses.map((c: { course_id: number; group_id: number }) => `${c.course_id}/${c.group_id}`),
      ['101/1', '101/2', '102/1', '103/1', '104/1', '105/1', '106/1', '107/1', '108/1'],
    );
    const closed = r.body.courses.find((c: { course_id: number }) => c.course_id === 105);
    assert.equal(closed.closed, true);
    assert.equal(closed.state, 'closed');
    const physics = r.body.courses.find((c: { course_id: number }) => c.course_id === 108);
    assert.equal(physics.exam_time, null);
    assert.deepEqual(physics.class_time, []);
    assert.equal(physics.for_department, null);
  });

  it('filters by department', async () => {
    const r = await fx.request('GET', '/student/courses?department=2', { token: fx.studentToken() });
    expectStatus(r, 200);
    assert.deepEqual(r.body.courses.map((c: { course_id: number }) => c.course_id), [104]);
    const none = await fx.request('GET', '/student/courses?department=77', { token: fx.studentToken() });
    assert.deepEqual(none.body, { courses: [] });
  });

  it('shows live seat counts', async () => {
    expectStatus(await enroll(S.alice, C.physics), 204);
    const r = await fx.request('GET', '/student/courses', { token: fx.studentToken() });
    assert.equal(r.body.courses.find((c: { course_id: number }) => c.course_id === 108).registered_count, 1);
  });
});
