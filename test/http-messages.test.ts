import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHttpFixture, expectError, type HttpFixture, PASSWORD, S, STAFF } from './support/http-fixture.js';

/**
 * Issue 15, clear errors: each refusal says what to do in plain words, one sentence per missing or
 * wrong field, and the stable codes are unchanged (src/errors.ts: added, never renamed).
 */
describe('clear error messages', () => {
  let fx: HttpFixture;
  before(async () => {
    fx = await createHttpFixture();
  });
  after(async () => fx.close());

  const reason = async (method: string, url: string, opts: { token?: string | null; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {}, status = 400, code = 'BAD_REQUEST') => {
    const r = await fx.request(method, url, opts);
    expectError(r, status, code);
    return r.body.reason as string;
  };

  it('a staff account logging in without staff: true is told to send it', async () => {
    assert.equal(await reason('POST', '/login', { body: { user: STAFF, password: PASSWORD } }, 401, 'WRONG_ROLE'), 'this account is staff: log in with staff: true');
  });

  it('a student trying the admin page (staff login, admin data, feed) or a staff route is told students cannot use it', async () => {
    const login = await reason('POST', '/login', { body: { user: S.alice, password: PASSWORD, staff: true } }, 401, 'WRONG_ROLE');
    assert.match(login, /^this account is a student: students cannot use the admin page/);
    const student = fx.studentToken(S.alice);
    for (const url of ['/admin/api/sections', '/admin/api/machine', '/sections/101/1/students', '/staff/student-courses?student_id=1']) {
      const r = await fx.request('GET', url, { token: student });
      assert.ok(r.status === 403 || r.status === 401, `${url}: ${r.raw}`);
      assert.equal(r.body.code, 'FORBIDDEN', r.raw);
      assert.match(r.body.reason, /^students cannot use the admin page or staff routes/, url);
    }
    const feed = await fx.request('POST', '/admin/feed-ticket', { token: student });
    assert.match(feed.body.reason, /^students cannot use the admin page/, feed.raw);
  });

  it('staff on a student route are pointed to the staff routes', async () => {
    const r = await fx.request('GET', '/student/courses', { token: fx.staffToken() });
    assert.equal(r.body.code, 'FORBIDDEN');
    assert.match(r.body.reason, /^this route is for students; staff use the staff routes/);
  });

  it('a missing field is reported once: "<field> is required"', async () => {
    assert.equal(await reason('PUT', '/student/course', { token: fx.studentToken(), body: { group_id: 1 } }), 'course_id is required');
    assert.equal(await reason('POST', '/login', { body: { password: 'x' } }), 'user is required');
    assert.equal(await reason('DELETE', '/student/course', { token: fx.studentToken() }), 'course_id is required');
  });

  it('one sentence per missing or wrong field, none repeated', async () => {
    assert.equal(await reason('POST', '/login', { body: {} }), 'user is required; password is required');
    assert.equal(
      await reason('PUT', '/student/course', { token: fx.studentToken(), body: { course_id: 1.5, group_id: -1, extra: 1 } }),
      'course_id must be a whole number; group_id must be at least 0',
    );
    assert.equal(
      await reason('POST', '/sections', { token: fx.staffToken(), body: { course_id: 1.5, group_id: 1, name: 'x', units: 3, capacity: 1, reserve_capacity: 0, extra: 1 } }),
      'extra is not a known field; course_id must be a whole number',
    );
    assert.equal(await reason('POST', '/login', { body: { user: 1, password: 2, staff: 'yes' } }), 'password must be a string; staff must be true or false');
  });

  it('a name where a numeric id belongs says "must be a number", in a body, a query string and a path', async () => {
    assert.equal(await reason('POST', '/login', { body: { user: 'bob', password: 'x' } }), 'user must be a number');
    assert.equal(await reason('PUT', '/student/course', { token: fx.studentToken(), body: { course_id: 'abc', group_id: 1 } }), 'course_id must be a number');
    assert.equal(await reason('DELETE', '/student/course?course_id=abc', { token: fx.studentToken() }), 'course_id must be a number');
    const path = await reason('GET', '/sections/abc/1', { token: fx.staffToken() });
    assert.match(path, /must be a number$/);
    assert.equal(await reason('POST', '/students/abc/revoke-tokens', { token: fx.staffToken() }), 'id must be a number');
  });

  it('a number of the wrong kind or size where a number may also be written as text, or be null, says which', async () => {
    assert.equal(await reason('POST', '/login', { body: { user: 99_999_999_999, password: 'x' } }), 'user must be at most 2147483647');
    assert.equal(await reason('POST', '/login', { body: { user: 1.5, password: 'x' } }), 'user must be a whole number');
    const section = { course_id: 901, group_id: 1, name: 'x', units: 3, capacity: 2, reserve_capacity: 2 };
    assert.equal(await reason('POST', '/sections', { token: fx.staffToken(), body: { ...section, exam_time: -1 } }), 'exam_time must be at least 0');
  });

  it('a body that is not JSON says why; JSON with a prototype-poisoning member says that', async () => {
    const raw = (rawBody: string) => reason('PUT', '/student/course', { token: fx.studentToken(), rawBody, headers: { 'content-type': 'application/json' } });
    assert.match(await raw('{"course_id":1,'), /^the request body is not valid JSON \(.+\)$/);
    // None of the body's text in the reason (it is logged): a login whose password lost its quotes.
    for (const body of ['{"user":1,"password":Secret-Pw-123}', "{\"password\":'Ab12', \"user\":1}", '{"user":1,"password":"x"}tail-Pw9']) {
      const r = await reason('POST', '/login', { rawBody: body, headers: { 'content-type': 'application/json' } });
      assert.match(r, /^the request body is not valid JSON \(.+\)$/);
      for (const secret of ['Secret', 'Ab12', 'tail']) assert.ok(!r.includes(secret), `"${r}" quotes the body`);
    }
    assert.equal(await raw('{"course_id":1,"group_id":1,"__proto__":{"x":1}}'), 'the request body may not contain a __proto__ or constructor.prototype member');
    assert.equal(
      await raw('{"course_id":1,"group_id":1,"constructor":{"prototype":{"x":1}}}'),
      'the request body may not contain a __proto__ or constructor.prototype member',
    );
  });

  it('a body that is not an object says so', async () => {
    assert.equal(await reason('PUT', '/student/course', { token: fx.studentToken(), body: [1, 2] }), 'the request body must be a JSON object');
  });
});
