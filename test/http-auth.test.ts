import assert from 'node:assert/strict';
import { createSecretKey } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import jwt from 'jsonwebtoken';
import { TokenService } from '../src/http/auth.js';
import {
  createHttpFixture,
  expectError,
  expectStatus,
  PASSWORD,
  S,
  SECRET,
  STAFF,
  TTL_SECONDS,
  type HttpFixture,
  GUARDED,
} from './support/http-fixture.js';

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

function claims(token: string): jwt.JwtPayload {
  const c = jwt.decode(token);
  assert.ok(c && typeof c === 'object');
  return c;
}

const key = createSecretKey(Buffer.from(SECRET));


describe('POST /login', () => {
  it('gives a student a token for their id, with role and expiry', async () => {
    const r = await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD } });
    expectStatus(r, 200);
    assert.deepEqual(Object.keys(r.body), ['token']);
    const c = claims(r.body.token);
    assert.equal(c.sub, String(S.alice));
    assert.equal(c.role, 'student');
    assert.equal(c.iat, Math.floor(fx.clock.now / 1000));
    assert.equal(c.exp, Math.floor(fx.clock.now / 1000) + TTL_SECONDS);
    assert.equal(jwt.decode(r.body.token, { complete: true })?.header.alg, 'HS256');
    expectStatus(await fx.request('GET', '/student/course', { token: r.body.token }), 200);
  });

  it('accepts the user id as a numeric string', async () => {
    const r = await fx.request('POST', '/login', { body: { user: String(S.bea), password: PASSWORD, staff: false } });
    expectStatus(r, 200);
    assert.equal(claims(r.body.token).sub, String(S.bea));
  });

  it('logs staff in with staff: true, and that token opens staff routes', async () => {
    const r = await fx.request('POST', '/login', { body: { user: STAFF, password: PASSWORD, staff: true } });
    expectStatus(r, 200);
    assert.equal(claims(r.body.token).role, 'staff');
    expectStatus(await fx.request('GET', '/staff/student-courses?std_id=1', { token: r.body.token }), 200);
  });

  it('refuses a wrong password, an unknown id and the wrong table with a wrong password alike with 401 BAD_CREDENTIALS', async () => {
    const wrongPw = await fx.request('POST', '/login', { body: { user: S.alice, password: 'nope' } });
    const unknown = await fx.request('POST', '/login', { body: { user: 4242, password: PASSWORD } });
    const staffAsStudentWrongPw = await fx.request('POST', '/login', { body: { user: STAFF, password: 'nope' } });
    const studentAsStaffWrongPw = await fx.request('POST', '/login', { body: { user: S.alice, password: 'nope', staff: true } });
    const huge = await fx.request('POST', '/login', { body: { user: '9999999999', password: PASSWORD } });
    for (const r of [wrongPw, unknown, staffAsStudentWrongPw, studentAsStaffWrongPw, huge]) expectError(r, 401, 'BAD_CREDENTIALS');
    // Same body whichever part was wrong, so the reply does not reveal which ids exist.
    assert.deepEqual(unknown.body, wrongPw.body);
    assert.deepEqual(staffAsStudentWrongPw.body, wrongPw.body);
  });

  it('tells someone with the right password for the other kind of account which staff flag to send (issue 15)', async () => {
    const staffAsStudent = await fx.request('POST', '/login', { body: { user: STAFF, password: PASSWORD } });
    expectError(staffAsStudent, 401, 'WRONG_ROLE');
    assert.equal(staffAsStudent.body.reason, 'this account is staff: log in with staff: true');
    const studentAsStaff = await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD, staff: true } });
    expectError(studentAsStaff, 401, 'WRONG_ROLE');
    assert.match(studentAsStaff.body.reason, /students cannot use the admin page/);
    assert.match(studentAsStaff.body.reason, /staff: false/);
  });

  it('never lets the dummy hash\'s own password in for a user that does not exist', async () => {
    // The timing-equaliser hash is of the string "dummy"; matching it must not log anyone in.
    expectError(await fx.request('POST', '/login', { body: { user: 4242, password: 'dummy' } }), 401, 'BAD_CREDENTIALS');
    expectError(await fx.request('POST', '/login', { body: { user: 4242, password: 'dummy', staff: true } }), 401, 'BAD_CREDENTIALS');
  });

  it('still spends a bcrypt verification when the user does not exist', async () => {
    // The dummy hash has cost 10 (tens of ms); skipping it would answer in well under a millisecond.
    const t0 = performance.now();
    expectError(await fx.request('POST', '/login', { body: { user: 4242, password: PASSWORD } }), 401, 'BAD_CREDENTIALS');
    assert.ok(performance.now() - t0 >= 10, 'an unknown user must not be answered without bcrypt work');
  });

  it('answers malformed logins with 400', async () => {
    for (const body of [
      { password: PASSWORD },
      { user: S.alice },
      { user: true, password: PASSWORD },
      { user: 'abc', password: PASSWORD },
      { user: -1, password: PASSWORD },
      { user: 1.5, password: PASSWORD },
      { user: S.alice, password: 12 },
      { user: S.alice, password: PASSWORD, staff: 'yes' },
    ]) {
      expectError(await fx.request('POST', '/login', { body }), 400, 'BAD_REQUEST');
    }
    // A member /login does not know is ignored, as the Go service's decoder ignored it: no more rights.
    const r = await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD, admin: true } });
    expectStatus(r, 200);
    expectError(await fx.request('GET', '/staff/student-courses?std_id=1', { token: r.body.token }), 401, 'FORBIDDEN');
  });
});

describe('POST /refresh', () => {
  it('returns a new token for the same subject and role, expiring later', async () => {
    const old = fx.staffToken();
    fx.clock.now += 10 * 60_000;
    const r = await fx.request('POST', '/refresh', { token: old });
    expectStatus(r, 200);
    const before = claims(old);
    const after = claims(r.body.token);
    assert.equal(after.sub, String(STAFF));
    assert.equal(after.role, 'staff');
    assert.equal(after.exp, (before.exp as number) + 600);
  });

  it('refuses an expired token with TOKEN_EXPIRED and no token with UNAUTHENTICATED', async () => {
    const t = fx.studentToken();
    fx.clock.now += (TTL_SECONDS + 1) * 1000;
    expectError(await fx.request('POST', '/refresh', { token: t }), 401, 'TOKEN_EXPIRED');
    expectError(await fx.request('POST', '/refresh'), 401, 'UNAUTHENTICATED');
  });

  it('refuses a token whose user does not exist', async () => {
    expectError(await fx.request('POST', '/refresh', { token: fx.token(4242, 'student') }), 401, 'UNAUTHENTICATED');
  });
});

describe('bearer tokens on guarded routes', () => {
  it('every guarded route answers 401 UNAUTHENTICATED without a token', async () => {
    for (const g of GUARDED) {
      const r = await fx.request(g.method, g.url, { body: g.method === 'GET' || g.method === 'DELETE' ? undefined : {} });
      expectError(r, 401, 'UNAUTHENTICATED');
    }
  });

  it('every role-specific route refuses the other role: 401 on the Go routes (as the Go service), 403 on the resource routes', async () => {
    for (const g of GUARDED) {
      if (g.role === 'any') continue;
      const wrong = g.role === 'student' ? fx.staffToken() : fx.studentToken();
      const r = await fx.request(g.method, g.url, { token: wrong, body: g.method === 'GET' || g.method === 'DELETE' ? undefined : {} });
      // POST /student/swap is ours (issue 16), not a Go route: it keeps the resource routes' statuses.
      // So is PATCH /staff/{id} (an admin's reset of a staff password).
      const goRoute = /^\/(student|staff)\//.test(g.url) && g.url !== '/student/swap' && !/^\/staff\/\d+$/.test(g.url);
      expectError(r, goRoute ? 401 : 403, 'FORBIDDEN');
    }
  });

  it('a valid token of a user who no longer exists is 401 UNAUTHENTICATED on every guarded route, changing nothing', async () => {
    for (const g of GUARDED) {
      const gone = g.role === 'staff' ? fx.staffToken(4242) : fx.studentToken(424242);
      const r = await fx.request(g.method, g.url, { token: gone, body: g.method === 'GET' || g.method === 'DELETE' ? undefined : { course_id: 101, group_id: 1 } });
      expectError(r, 401, 'UNAUTHENTICATED');
      assert.match(r.body.reason, /no longer exists/, `${g.method} ${g.url}`);
    }
    expectError(await fx.request('POST', '/refresh', { token: fx.studentToken(424242) }), 401, 'UNAUTHENTICATED');
  });

  it('routes for any logged-in user admit both roles', async () => {
    for (const url of ['/sections', '/sections/101/1', '/departments', '/me']) {
      expectStatus(await fx.request('GET', url, { token: fx.studentToken() }), 200);
      expectStatus(await fx.request('GET', url, { token: fx.staffToken() }), 200);
    }
  });

  it('refuses garbled, foreign and tampered tokens with 401 UNAUTHENTICATED', async () => {
    const good = fx.studentToken();
    const [h, p] = good.split('.') as [string, string, string];
    const forged = jwt.sign({ role: 'staff' }, 'another-secret-another-secret-another', { subject: '1', expiresIn: 60 });
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${p}.`;
    const asStaff = `${h}.${Buffer.from(JSON.stringify({ ...claims(good), role: 'staff' })).toString('base64url')}.${good.split('.')[2]}`;
    const cases: Record<string, string> = {
      garbage: 'Bearer not-a-token',
      dots: 'Bearer a.b.c',
      empty: 'Bearer ',
      basic: 'Basic dXNlcjpwdw==',
      forged: `Bearer ${forged}`,
      algNone: `Bearer ${none}`,
      tampered: `Bearer ${asStaff}`,
      truncated: `Bearer ${good.slice(0, -3)}`,
    };
    for (const [name, authorization] of Object.entries(cases)) {
      const r = await fx.request('GET', '/student/course', { headers: { authorization } });
      assert.equal(r.status, 401, `${name}: ${r.raw}`);
      assert.equal(r.body.code, 'UNAUTHENTICATED', name);
    }
  });

  it('refuses tokens with bad claims: unknown role, non-numeric subject, no expiry, other algorithm', async () => {
    const iat = Math.floor(fx.clock.now / 1000);
    const tokens = [
      jwt.sign({ role: 'admin', iat }, key, { subject: '1', expiresIn: 60 }),
      jwt.sign({ role: 'student', iat }, key, { subject: 'alice', expiresIn: 60 }),
      jwt.sign({ role: 'student', iat }, key, { subject: '1' }),
      jwt.sign({ role: 'student', iat }, SECRET, { subject: '1', expiresIn: 60, algorithm: 'HS512' }),
    ];
    for (const t of tokens) expectError(await fx.request('GET', '/student/course', { token: t }), 401, 'UNAUTHENTICATED');
  });

  it('refuses an expired token with 401 TOKEN_EXPIRED', async () => {
    const t = fx.studentToken();
    fx.clock.now += TTL_SECONDS * 1000 - 1000;
    expectStatus(await fx.request('GET', '/student/course', { token: t }), 200);
    fx.clock.now += 2000;
    expectError(await fx.request('GET', '/student/course', { token: t }), 401, 'TOKEN_EXPIRED');
    const past = jwt.sign({ role: 'student', iat: 1, exp: 2 }, key, { subject: '1' });
    expectError(await fx.request('GET', '/student/course', { token: past }), 401, 'TOKEN_EXPIRED');
  });

  it('accepts a lowercase scheme and a bare token, as older clients send them', async () => {
    const t = fx.studentToken();
    expectStatus(await fx.request('GET', '/student/course', { headers: { authorization: `bearer ${t}` } }), 200);
    expectStatus(await fx.request('GET', '/student/course', { headers: { authorization: t } }), 200);
  });

  it('checks the token before the body, so anonymous callers learn nothing about validation', async () => {
    expectError(await fx.request('PUT', '/student/course', { rawBody: '{oops' }), 401, 'UNAUTHENTICATED');
  });
});

describe('secrets stay out of the logs', () => {
  it('never logs the password, the hash, the token or the authorization header', async () => {
    const r = await fx.request('POST', '/login', { body: { user: S.alice, password: 'pw' } });
    const token = r.body.token as string;
    await fx.request('GET', '/student/course', { token });
    await fx.request('POST', '/login', { body: { user: S.alice, password: 'wrong-secret-pw' } });
    const all = fx.logs.join('\n');
    assert.ok(fx.logs.length > 0);
    assert.ok(!all.includes(token), 'token logged');
    assert.ok(!all.includes('wrong-secret-pw'), 'password logged');
    assert.ok(!all.includes('$2b$'), 'hash logged');
  });

  it('a token a client puts in the URL is censored in request logs, the rest of the URL kept', async () => {
    const logged = await createHttpFixture({ logRequests: true });
    try {
      const token = logged.studentToken();
      await logged.request('GET', `/student/courses?department=1&access_token=${token}&ticket=abc123`);
      const all = logged.logs.join('\n');
      assert.ok(!all.includes(token), 'token logged');
      assert.ok(!all.includes('abc123'), 'ticket logged');
      assert.match(all, /"url":"\/student\/courses\?department=1&access_token=\[redacted\]&ticket=\[redacted\]"/);
      // Whatever a client names it (found by a probe: jwt, pass and bearer were logged in clear).
      for (const name of ['jwt', 'pass', 'bearer', 'Authorization', 's']) await logged.request('GET', `/health?${name}=SECRET-${name}-VALUE&limit=5`);
      const more = logged.logs.join('\n');
      assert.ok(!more.includes('-VALUE'), 'a credential under another name logged');
      assert.match(more, /"url":"\/health\?jwt=\[redacted\]&limit=5"/, "the API's own parameters kept");
    } finally {
      await logged.close();
    }
  });
});

describe('TokenService: verified tokens are remembered, within bounds', () => {
  it('keeps at most rememberMax tokens, still verifies forgotten ones, and expires remembered ones', () => {
    const clock = { now: Date.UTC(2026, 0, 12, 8, 0, 0) };
    const tokens = new TokenService({ secret: SECRET, ttlSeconds: 60, now: () => clock.now, rememberMax: 3 });
    const issued = [1, 2, 3, 4, 5].map((id) => tokens.issue({ id, role: 'student' }));
    for (const [i, t] of issued.entries()) assert.deepEqual(tokens.verify(t), { id: i + 1, role: 'student' });
    assert.equal(tokens.rememberedTokens, 3);
    // The first two were forgotten: they verify again from scratch.
    assert.deepEqual(tokens.verify(issued[0] as string), { id: 1, role: 'student' });
    assert.equal(tokens.rememberedTokens, 3);
    // A tampered token is other text: never answered from memory.
    const t5 = issued[4] as string;
    const tampered = `${t5.slice(0, -2)}${t5.endsWith('AA') ? 'BB' : 'AA'}`;
    assert.throws(() => tokens.verify(tampered), (e: unknown) => (e as { code?: string }).code === 'UNAUTHENTICATED');
    // A remembered token still expires on time, and is then forgotten.
    clock.now += 60_000;
    assert.throws(() => tokens.verify(t5), (e: unknown) => (e as { code?: string }).code === 'TOKEN_EXPIRED');
    assert.equal(tokens.rememberedTokens, 2);
  });

  it('remembers a token it issues exactly as verifying it would (login and refresh), and still refuses it once revoked', () => {
    const clock = { now: Date.UTC(2026, 0, 12, 8, 0, 0, 437) };
    const signer = new TokenService({ secret: SECRET, ttlSeconds: 600, now: () => clock.now });
    const login = signer.issue({ id: 42, role: 'student' });
    assert.equal(signer.rememberedTokens, 1, 'issued tokens are remembered at once');
    clock.now += 1_500;
    const refreshed = signer.issue({ id: 7, role: 'staff' }, { sid: 'a-session', authTime: Math.floor(clock.now / 1000) - 30, authTimeMs: 123 });
    for (const token of [login, refreshed]) {
      // A service that never saw the token verifies it from scratch: the remembered answer is the same.
      const fresh = new TokenService({ secret: SECRET, ttlSeconds: 600, now: () => clock.now });
      assert.deepEqual(signer.verifyToken(token), fresh.verifyToken(token));
    }
    const session = signer.verifyToken(login).session;
    signer.revocations.revoke({ sid: session.sid, until: signer.sessionEnd(session) });
    assert.throws(() => signer.verify(login), (e: unknown) => (e as { code?: string }).code === 'TOKEN_REVOKED');
  });
});
