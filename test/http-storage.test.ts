import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { C, createHttpFixture, expectError, expectStatus, S, type HttpFixture } from './support/http-fixture.js';

/**
 * A lost database or broker: the write that could not be made durable answers 503 UNAVAILABLE
 * with a reason, and nothing it attempted is visible afterwards (SPEC section 6: a 2xx means
 * durable, and nothing undurable is acknowledged). The next request works again.
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
const snapshot = async () => {
  const staff = fx.staffToken();
  return {
    alice: (await fx.request('GET', '/student/course', { token: fx.studentToken(S.alice) })).body,
    f3: (await fx.request('GET', '/staff/student-courses?std_id=' + S.f3, { token: staff })).body,
    algo1: (await fx.request('GET', '/sections/101/1/students', { token: staff })).body,
    sections: (await fx.request('GET', '/sections', { token: staff })).body,
    me: (await fx.request('GET', '/me', { token: fx.studentToken(S.alice) })).body,
  };
};

/** Fails the next append, runs the request, and checks 503 + nothing changed + recovery. */
async function failsCleanly(send: () => ReturnType<HttpFixture['request']>): Promise<void> {
  const before = await snapshot();
  const logLength = fx.persistence.log.length;
  fx.persistence.failNext = 1;
  const r = await send();
  expectError(r, 503, 'UNAVAILABLE');
  // Every 503 says when to come back (a Go client, a proxy or a browser retries then).
  assert.ok(Number(r.headers['retry-after']) >= 1, `Retry-After on a 503: ${String(r.headers['retry-after'])}`);
  assert.equal(fx.persistence.log.length, logLength, 'something was written');
  assert.deepEqual(await snapshot(), before, 'a GET after the failure shows a change that was never acknowledged');
}

describe('storage failure answers 503 and changes nothing', () => {
  it('enroll', async () => {
    await failsCleanly(() => enroll(S.alice, C.physics));
    expectStatus(await enroll(S.alice, C.physics), 204); // storage is back: the same request now works
    assert.equal((await snapshot()).alice.data.length, 1);
  });

  it('drop (with the queue promotion it would cause)', async () => {
    for (const s of [S.alice, S.f1, S.f3]) expectStatus(await enroll(s, C.algo1), 204);
    await failsCleanly(() => fx.request('DELETE', '/student/course?course_id=101', { token: fx.studentToken(S.alice) }));
    expectStatus(await fx.request('DELETE', '/student/course?course_id=101', { token: fx.studentToken(S.alice) }), 204);
    assert.deepEqual((await snapshot()).algo1, { registered_students: [S.f1, S.f3], reserved_queue_students: [] });
  });

  it('change group', async () => {
    expectStatus(await enroll(S.alice, C.algo1), 204);
    await failsCleanly(() => fx.request('PATCH', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 101, group_id: 2 } }));
  });

  it('force enroll and force drop', async () => {
    await failsCleanly(() => fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id: S.f3, course_id: 101, group_id: 1 } }));
    expectStatus(await fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id: S.f3, course_id: 101, group_id: 1 } }), 204);
    await failsCleanly(() => fx.request('DELETE', `/staff/force-std?std_id=${S.f3}&course_id=101&group_id=1`, { token: fx.staffToken() }));
  });

  it('capacity change (with promotions)', async () => {
    for (const s of [S.f1, S.f2, S.f3]) expectStatus(await enroll(s, C.algo1), 204);
    await failsCleanly(() => fx.request('PATCH', '/staff/capacity', { token: fx.staffToken(), body: { course_id: 101, group_id: 1, capacity: 5 } }));
    await failsCleanly(() => fx.request('PATCH', '/sections/101/1', { token: fx.staffToken(), body: { capacity: 5, name: 'Renamed' } }));
  });

  it('section create, close and edit', async () => {
    const staff = fx.staffToken();
    await failsCleanly(() =>
      fx.request('POST', '/sections', { token: staff, body: { course_id: 400, group_id: 1, name: 'X', units: 1, capacity: 1, reserve_capacity: 0 } }),
    );
    expectError(await fx.request('GET', '/sections/400/1', { token: staff }), 404, 'SECTION_NOT_FOUND');
    await failsCleanly(() => fx.request('POST', '/sections/101/1/close', { token: staff }));
    await failsCleanly(() => fx.request('PATCH', '/sections/101/1', { token: staff, body: { reserve_capacity: 9, sex_lock: 'female' } }));
  });

  it('student and staff creation: the new user cannot log in', async () => {
    const staff = fx.staffToken();
    const password = 'long-enough-password';
    await failsCleanly(() =>
      fx.request('POST', '/students', {
        token: staff,
        body: { id: 700, password, enrollment_start_time: 1_756_713_600, max_units: 20, remaining_actions: 1, gender: 'male' },
      }),
    );
    expectError(await fx.request('POST', '/login', { body: { user: 700, password } }), 401, 'BAD_CREDENTIALS');
    await failsCleanly(() => fx.request('POST', '/staff', { token: staff, body: { id: 970, password } }));
    expectError(await fx.request('POST', '/login', { body: { user: 970, password, staff: true } }), 401, 'BAD_CREDENTIALS');
  });
});

describe('storage still down after a failed write', () => {
  it('reads are served at once from the rolled-back memory, never showing the refused change', async () => {
    fx.persistence.failNext = 1;
    fx.persistence.failLoads = 1; // a reload would fail too: reads must not need one
    expectError(await enroll(S.alice, C.physics), 503, 'UNAVAILABLE');
    const r = await fx.request('GET', '/student/course', { token: fx.studentToken(S.alice) });
    expectStatus(r, 200);
    assert.deepEqual(r.body, { data: [] });
    const s = await fx.request('GET', '/sections/108/1', { token: fx.staffToken() });
    expectStatus(s, 200);
    assert.equal(s.body.registered_count, 0);
  });

  it('while storage stays down, reads keep answering 200 and writes answer 503 until it is back', async () => {
    fx.persistence.failNext = 1;
    fx.persistence.failLoads = 2;
    expectError(await enroll(S.alice, C.physics), 503, 'UNAVAILABLE');
    const read = await fx.request('GET', '/sections/108/1', { token: fx.staffToken() });
    expectStatus(read, 200);
    assert.equal(read.body.registered_count, 0);
    // The next write needs a reload from storage first; while that fails, the write is refused.
    const down = await enroll(S.alice, C.physics);
    expectError(down, 503, 'UNAVAILABLE');
    assert.ok(!down.raw.includes('injected load failure'), 'storage error details leak to the client');
    expectError(await enroll(S.alice, C.physics), 503, 'UNAVAILABLE');
    // Storage is back: the write goes through.
    expectStatus(await enroll(S.alice, C.physics), 204);
    const r = await fx.request('GET', '/sections/108/1', { token: fx.staffToken() });
    assert.equal(r.body.registered_count, 1);
    expectStatus(await fx.request('GET', '/health'), 200); // liveness does not depend on storage
  });

  it('a failed reload is tried again by itself, without waiting for a write to ask', async () => {
    fx.persistence.failNext = 1;
    fx.persistence.failLoads = 3;
    expectError(await enroll(S.alice, C.physics), 503, 'UNAVAILABLE');
    expectError(await enroll(S.alice, C.physics), 503, 'UNAVAILABLE'); // its reload fails
    // No request from here on: the engine keeps trying until storage answers.
    const until = performance.now() + 5000;
    while (!fx.logs.some((l) => l.includes('state reloaded from storage')) && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.equal(fx.persistence.failLoads, 0, 'every failing load was tried');
    assert.ok(fx.logs.some((l) => l.includes('state reloaded from storage')), 'reloaded with no write asking for it');
    expectStatus(await enroll(S.alice, C.physics), 204);
  });
});
