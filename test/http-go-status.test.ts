import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ERROR_STATUS } from '../src/errors.js';
import { goStatus } from '../src/http/error-handler.js';
import { C, createHttpFixture, expectError, expectStatus, PASSWORD, S, type HttpFixture } from './support/http-fixture.js';

/**
 * Issue 13, item 4: on the Go service's routes (SPEC section 5 table) every refusal is answered as
 * the Go service did, 400 with `reason` (and our `code`), a role mismatch 401; the resource routes
 * keep 403/404/409 for the same refusals. Each rule is checked on both families where it exists.
 */
let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

const enroll = (student: number, [course_id, group_id]: readonly [number, number]) =>
  fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } });
const held = async (student: number) => (await fx.request('GET', '/student/course', { token: fx.studentToken(student) })).body;

describe('Go routes: every enroll rule is a 400 with reason and code, and changes nothing', () => {
  const rules: { rule: string; code: keyof typeof ERROR_STATUS; setup?: () => Promise<unknown>; student: number; section: readonly [number, number] }[] = [
    { rule: '1. window', code: 'ENROLLMENT_WINDOW_CLOSED', student: S.carl, section: C.physics },
    { rule: '2. unknown section', code: 'SECTION_NOT_FOUND', student: S.alice, section: [999, 1] },
    { rule: '2. closed section', code: 'SECTION_CLOSED', student: S.alice, section: C.closed },
    { rule: '3. sex lock', code: 'SEX_LOCK', student: S.alice, section: C.linalg },
    { rule: '4. units', code: 'UNITS_EXCEEDED', student: S.dan, section: C.heavy },
    { rule: '5. same course', code: 'SAME_COURSE', setup: () => enroll(S.alice, C.algo1), student: S.alice, section: C.algo2 },
    { rule: '6a. exam conflict', code: 'EXAM_CONFLICT', setup: () => enroll(S.alice, C.algo1), student: S.alice, section: C.db },
    { rule: '6b. class conflict', code: 'CLASS_CONFLICT', setup: () => enroll(S.alice, C.algo1), student: S.alice, section: C.compilers },
    { rule: '7. full', code: 'SECTION_FULL', setup: () => enroll(S.f1, C.tiny), student: S.alice, section: C.tiny },
  ];
  for (const r of rules) {
    it(`${r.rule}: 400 ${r.code} (our own status would be ${ERROR_STATUS[r.code]})`, async () => {
      if (r.setup) expectStatus((await r.setup()) as never, 204);
      const before = await held(r.student);
      const reply = await enroll(r.student, r.section);
      expectError(reply, 400, r.code);
      assert.ok(typeof reply.body.reason === 'string' && reply.body.reason.length > 0, 'a reason for people');
      assert.deepEqual(await held(r.student), before);
    });
  }

  it('drop and change of group refusals: 400 (NOT_ENROLLED, NO_ACTIONS_LEFT, SECTION_NOT_FOUND)', async () => {
    expectError(await fx.request('DELETE', '/student/course?course_id=108', { token: fx.studentToken(S.alice) }), 400, 'NOT_ENROLLED');
    expectStatus(await enroll(S.eve, C.physics), 204);
    expectError(await fx.request('DELETE', '/student/course?course_id=108', { token: fx.studentToken(S.eve) }), 400, 'NO_ACTIONS_LEFT');
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectError(await fx.request('PATCH', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 101, group_id: 9 } }), 400, 'SECTION_NOT_FOUND');
  });
});

describe('the same refusal on both route families', () => {
  it('unknown section: 400 on GET /staff/course-students, 404 on GET /sections/:c/:g', async () => {
    expectError(await fx.request('GET', '/staff/course-students?course_id=999&group_id=1', { token: fx.staffToken() }), 400, 'SECTION_NOT_FOUND');
    expectError(await fx.request('GET', '/sections/999/1', { token: fx.staffToken() }), 404, 'SECTION_NOT_FOUND');
  });

  it('capacity below the registered count: 400 on PATCH /staff/capacity, 409 on PATCH /sections/:c/:g', async () => {
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    const body = { course_id: 101, group_id: 1, capacity: 1 };
    expectError(await fx.request('PATCH', '/staff/capacity', { token: fx.staffToken(), body }), 400, 'CAPACITY_BELOW_REGISTERED');
    expectError(await fx.request('PATCH', '/sections/101/1', { token: fx.staffToken(), body: { capacity: 1 } }), 409, 'CAPACITY_BELOW_REGISTERED');
  });

  it('already in the section: 400 on PUT /staff/force-std; unknown student 400 there', async () => {
    expectStatus(await fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id: S.alice, course_id: 101, group_id: 1 } }), 204);
    expectError(await fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id: S.alice, course_id: 101, group_id: 1 } }), 400, 'ALREADY_IN_SECTION');
    expectError(await fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id: 4242, course_id: 101, group_id: 1 } }), 400, 'STUDENT_NOT_FOUND');
  });

  it('role mismatch: 401 on the Go routes, 403 on the resource routes', async () => {
    expectError(await fx.request('PUT', '/staff/force-std', { token: fx.studentToken(), body: { std_id: 1, course_id: 101, group_id: 1 } }), 401, 'FORBIDDEN');
    expectError(await fx.request('GET', '/student/course', { token: fx.staffToken() }), 401, 'FORBIDDEN');
    expectError(await fx.request('POST', '/sections/101/1/close', { token: fx.studentToken() }), 403, 'FORBIDDEN');
  });

  it('a malformed request stays 400 and a missing token 401 on both', async () => {
    expectError(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 'x' } }), 400, 'BAD_REQUEST');
    expectError(await fx.request('PUT', '/student/course', { body: { course_id: 101, group_id: 1 } }), 401, 'UNAUTHENTICATED');
    expectError(await fx.request('GET', '/sections/101/1'), 401, 'UNAUTHENTICATED');
  });
});

describe('goStatus', () => {
  it('keeps what a Go client must retry (503, 429) and what is already Go-like (400, 401)', () => {
    assert.equal(goStatus(503, 'UNAVAILABLE'), 503);
    assert.equal(goStatus(429, 'TOO_MANY_REQUESTS'), 429);
    assert.equal(goStatus(400, 'BAD_REQUEST'), 400);
    assert.equal(goStatus(401, 'TOKEN_EXPIRED'), 401);
    assert.equal(goStatus(403, 'FORBIDDEN'), 401);
    for (const code of ['SEX_LOCK', 'SECTION_FULL', 'SECTION_NOT_FOUND'] as const) assert.equal(goStatus(ERROR_STATUS[code], code), 400);
  });
});

describe('Go routes: members the Go service did not know are ignored, as its JSON decoder ignored them', () => {
  it('login, enroll, change group, force enroll and capacity accept a body with one more member', async () => {
    const login = await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD, staff: false, remember_me: true } });
    expectStatus(login, 200);
    const token = login.body.token as string;
    expectStatus(await fx.request('PUT', '/student/course', { token, body: { course_id: C.algo2[0], group_id: C.algo2[1], std_id: S.bea } }), 204);
    expectStatus(await fx.request('PATCH', '/student/course', { token, body: { course_id: C.algo1[0], group_id: C.algo1[1], reason: 'x' } }), 204);
    // Only alice moved: the extra std_id named nobody.
    assert.deepEqual(
      (await held(S.alice)).data.map((d: { course: { course_id: number; group_id: number } }) => [d.course.course_id, d.course.group_id]),
      [[...C.algo1]],
    );
    assert.deepEqual((await held(S.bea)).data, []);
    const staff = fx.staffToken();
    expectStatus(await fx.request('PUT', '/staff/force-std', { token: staff, body: { std_id: S.bea, course_id: C.tiny[0], group_id: C.tiny[1], reserved: false } }), 204);
    expectStatus(await fx.request('PATCH', '/staff/capacity', { token: staff, body: { course_id: C.tiny[0], group_id: C.tiny[1], capacity: 4, note: 'x' } }), 204);
    // A wrong type in a known member is still refused.
    expectError(await fx.request('PUT', '/student/course', { token, body: { course_id: '101', group_id: 1, extra: 1 } }), 400, 'BAD_REQUEST');
  });
});
