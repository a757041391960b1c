import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { C, createHttpFixture, expectError, expectStatus, S, type HttpFixture } from './support/http-fixture.js';

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

const enroll = (student: number, [course_id, group_id]: readonly [number, number]) =>
  fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } });
const force = (std_id: number, [course_id, group_id]: readonly [number, number]) =>
  fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id, course_id, group_id } });
const forceDrop = (std_id: number, [course_id, group_id]: readonly [number, number]) =>
  fx.request('DELETE', `/staff/force-std?std_id=${std_id}&course_id=${course_id}&group_id=${group_id}`, { token: fx.staffToken() });
const members = async ([course_id, group_id]: readonly [number, number]) => {
  const r = await fx.request('GET', `/staff/course-students?course_id=${course_id}&group_id=${group_id}`, { token: fx.staffToken() });
  expectStatus(r, 200);
  return r.body as { registered_students: number[]; reserved_queue_students: number[] };
};
const section = async ([c, g]: readonly [number, number]) => {
  const r = await fx.request('GET', `/sections/${c}/${g}`, { token: fx.staffToken() });
  expectStatus(r, 200);
  return r.body;
};
const remaining = async (student: number) =>
  (await fx.request('GET', '/me', { token: fx.studentToken(student) })).body.remaining_actions as number;

describe('PUT /staff/force-std', () => {
  it('enrolls a student with 204, skipping the student rules', async () => {
    // Carl's window is not open and Alice is male in a female-only section: staff may still place them.
    expectStatus(await force(S.carl, C.physics), 204);
    expectStatus(await force(S.alice, C.linalg), 204);
    assert.deepEqual((await members(C.physics)).registered_students, [S.carl]);
    assert.deepEqual((await members(C.linalg)).registered_students, [S.alice]);
  });

  it('grows a full section by one seat', async () => {
    expectStatus(await enroll(S.f1, C.tiny), 204);
    expectStatus(await force(S.alice, C.tiny), 204);
    const s = await section(C.tiny);
    assert.equal(s.capacity, 2);
    assert.equal(s.registered_count, 2);
    assert.deepEqual((await members(C.tiny)).registered_students, [S.f1, S.alice]);
  });

  it('still refuses a second group of the same course, unknown sections and unknown students', async () => {
    expectStatus(await force(S.alice, C.algo1), 204);
    expectError(await force(S.alice, C.algo2), 400, 'SAME_COURSE');
    expectError(await force(S.alice, [999, 1]), 400, 'SECTION_NOT_FOUND');
    expectError(await force(4242, C.physics), 400, 'STUDENT_NOT_FOUND');
    expectError(await force(S.alice, C.algo1), 400, 'ALREADY_IN_SECTION');
  });
});

describe('DELETE /staff/force-std', () => {
  it('drops with 204, promotes the queue head, and uses none of the student\'s actions', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    expectStatus(await forceDrop(S.alice, C.algo1), 204);
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f1, S.f2], reserved_queue_students: [] });
    assert.equal(await remaining(S.alice), 5);
  });

  it('answers 400 NOT_ENROLLED for a student not in the section and 400 SECTION_NOT_FOUND for an unknown one (Go status codes)', async () => {
    expectError(await forceDrop(S.alice, C.physics), 400, 'NOT_ENROLLED');
    expectError(await forceDrop(S.alice, [999, 9]), 400, 'SECTION_NOT_FOUND');
  });
});

describe('GET /staff/student-courses', () => {
  it('shows any student\'s sections in the GET /student/course shape', async () => {
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectStatus(await enroll(S.alice, C.physics), 204);
    const r = await fx.request('GET', `/staff/student-courses?std_id=${S.alice}`, { token: fx.staffToken() });
    expectStatus(r, 200);
    const own = await fx.request('GET', '/student/course', { token: fx.studentToken(S.alice) });
    assert.deepEqual(r.body, own.body);
    assert.equal(r.body.data[0].reserve_queue_position, 1);
    assert.equal(r.body.data[1].course.course_id, 108);
  });

  it('answers an unknown student with 404 STUDENT_NOT_FOUND', async () => {
    expectError(await fx.request('GET', '/staff/student-courses?std_id=4242', { token: fx.staffToken() }), 400, 'STUDENT_NOT_FOUND');
  });
});

describe('GET /staff/course-students', () => {
  it('lists registered students in seat order and the queue in queue order', async () => {
    for (const s of [S.f3, S.f1, S.alice, S.f2]) expectStatus(await enroll(s, C.algo1), 204);
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f3, S.f1], reserved_queue_students: [S.alice, S.f2] });
  });

  it('answers an unknown section with 400 SECTION_NOT_FOUND, not 500', async () => {
    const r = await fx.request('GET', '/staff/course-students?course_id=1&group_id=1', { token: fx.staffToken() });
    expectError(r, 400, 'SECTION_NOT_FOUND');
  });
});

describe('PATCH /staff/capacity', () => {
  it('changes capacity with 204 and promotes min(growth, queue) students in queue order', async () => {
    for (const s of [S.f1, S.f2, S.alice, S.f3]) expectStatus(await enroll(s, C.algo1), 204);
    const r = await fx.request('PATCH', '/staff/capacity', { token: fx.staffToken(), body: { course_id: 101, group_id: 1, capacity: 3 } });
    expectStatus(r, 204);
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f1, S.f2, S.alice], reserved_queue_students: [S.f3] });
    expectStatus(
      await fx.request('PATCH', '/staff/capacity', { token: fx.staffToken(), body: { course_id: 101, group_id: 1, capacity: 10 } }),
      204,
    );
    assert.deepEqual(await members(C.algo1), { registered_students: [S.f1, S.f2, S.alice, S.f3], reserved_queue_students: [] });
    assert.equal((await section(C.algo1)).capacity, 10);
  });

  it('refuses to go below the registered count with 400 and changes nothing', async () => {
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    const r = await fx.request('PATCH', '/staff/capacity', { token: fx.staffToken(), body: { course_id: 101, group_id: 1, capacity: 1 } });
    expectError(r, 400, 'CAPACITY_BELOW_REGISTERED');
    assert.equal((await section(C.algo1)).capacity, 2);
  });

  it('answers an unknown section with 400 SECTION_NOT_FOUND', async () => {
    const r = await fx.request('PATCH', '/staff/capacity', { token: fx.staffToken(), body: { course_id: 9, group_id: 9, capacity: 3 } });
    expectError(r, 400, 'SECTION_NOT_FOUND');
  });
});
