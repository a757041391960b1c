import assert from 'node:assert/strict';
import { createSecretKey } from 'node:crypto';
import { afterEach, describe, it } from 'node:test';
import jwt from 'jsonwebtoken';
import { hashPassword } from '../src/password.js';
import { createMemoryRevocations, TOKEN_AUDIENCE, TOKEN_ISSUER, TokenService } from '../src/http/auth.js';
import { createPasswordGate, MAX_WAITING, MAX_WAITING_PER_ADDRESS } from '../src/http/password-gate.js';
import { renderMetrics } from '../src/metrics/registry.js';
import { createHttpFixture, expectError, expectStatus, MINUTE, PASSWORD, S, SECRET, type HttpFixture } from './support/http-fixture.js';

/** Issue 11: sessions that end, tokens that name themselves, revocation before the cache, a cap on bcrypt. */

let fx: HttpFixture | null = null;
afterEach(async () => {
  await fx?.close();
  fx = null;
});

function claims(token: string): jwt.JwtPayload {
  const c = jwt.decode(token);
  assert.ok(c && typeof c === 'object');
  return c;
}

const key = createSecretKey(Buffer.from(SECRET));

describe('sessions have a maximum age that refresh cannot extend', () => {
  it('carries sid and auth_time through refreshes, caps exp at auth_time + max, then refuses with SESSION_EXPIRED', async () => {
    const f = (fx = await createHttpFixture({ app: { sessionMaxSeconds: 2 * 3600 } }));
    const login = await f.request('POST', '/login', { body: { user: S.alice, password: PASSWORD } });
    expectStatus(login, 200);
    const first = claims(login.body.token);
    const authTime = Math.floor(f.clock.now / 1000);
    assert.equal(first.auth_time, authTime);
    assert.equal(first.exp, authTime + 3600);
    let token = login.body.token as string;
    const seen = new Set<string>([first.jti as string]);
    // Refresh every 50 minutes: each token expires no later than the session does.
    for (let i = 1; i <= 2; i++) {
      f.clock.now += 50 * MINUTE;
      const r = await f.request('POST', '/refresh', { token });
      expectStatus(r, 200);
      const c = claims(r.body.token);
      assert.equal(c.sid, first.sid);
      assert.equal(c.auth_time, authTime);
      assert.ok((c.exp as number) <= authTime + 2 * 3600, `exp ${c.exp} past the session end`);
      assert.ok(!seen.has(c.jti as string), 'every token has its own jti');
      seen.add(c.jti as string);
      token = r.body.token;
    }
    assert.equal(claims(token).exp, authTime + 2 * 3600);
    // Past the session's end the last token is dead, and refreshing it is refused.
    f.clock.now = (authTime + 2 * 3600) * 1000;
    expectError(await f.request('POST', '/refresh', { token }), 401, 'TOKEN_EXPIRED');
    expectError(await f.request('GET', '/student/course', { token }), 401, 'TOKEN_EXPIRED');
  });

  it('refuses to issue a refresh once the session has no time left', () => {
    const clock = { now: Date.UTC(2026, 0, 12, 8) };
    const tokens = new TokenService({ secret: SECRET, ttlSeconds: 3600, maxSessionSeconds: 3600, now: () => clock.now });
    const authTime = Math.floor(clock.now / 1000);
    clock.now += 3600_000;
    assert.throws(() => tokens.issue({ id: 1, role: 'student' }, { sid: 's', authTime }), (e: unknown) => (e as { code?: string }).code === 'SESSION_EXPIRED');
  });

  it('refuses a token that claims a longer life than the session allows', async () => {
    const f = (fx = await createHttpFixture({ app: { sessionMaxSeconds: 3600 } }));
    const iat = Math.floor(f.clock.now / 1000);
    const forged = jwt.sign({ role: 'student', iat, exp: iat + 7200, sid: 's1', auth_time: iat }, key, {
      subject: String(S.alice), jwtid: 'j1', issuer: TOKEN_ISSUER, audience: TOKEN_AUDIENCE,
    });
    expectError(await f.request('GET', '/student/course', { token: forged }), 401, 'SESSION_EXPIRED');
  });

  it('puts jti, iss and aud on every token and refuses tokens without them or for another issuer or audience', async () => {
    const f = (fx = await createHttpFixture());
    const c = claims(f.studentToken());
    assert.equal(c.iss, TOKEN_ISSUER);
    assert.equal(c.aud, TOKEN_AUDIENCE);
    assert.equal(typeof c.jti, 'string');
    const iat = Math.floor(f.clock.now / 1000);
    const sign = (opts: jwt.SignOptions, extra: object = {}) =>
      jwt.sign({ role: 'student', iat, sid: 's1', auth_time: iat, ...extra }, key, { subject: String(S.alice), expiresIn: 600, ...opts });
    const full = { jwtid: 'j1', issuer: TOKEN_ISSUER, audience: TOKEN_AUDIENCE };
    expectStatus(await f.request('GET', '/student/course', { token: sign(full) }), 200);
    const bad = {
      noJti: sign({ issuer: TOKEN_ISSUER, audience: TOKEN_AUDIENCE }),
      noIss: sign({ jwtid: 'j1', audience: TOKEN_AUDIENCE }),
      noAud: sign({ jwtid: 'j1', issuer: TOKEN_ISSUER }),
      otherIss: sign({ ...full, issuer: 'someone-else' }),
      otherAud: sign({ ...full, audience: 'another-api' }),
      noSid: jwt.sign({ role: 'student', iat, auth_time: iat }, key, { subject: '1', expiresIn: 600, ...full }),
      noAuthTime: jwt.sign({ role: 'student', iat, sid: 's1' }, key, { subject: '1', expiresIn: 600, ...full }),
    };
    for (const [name, token] of Object.entries(bad)) {
      const r = await f.request('GET', '/student/course', { token });
      assert.equal(r.status, 401, `${name}: ${r.raw}`);
      assert.equal(r.body.code, 'UNAUTHENTICATED', name);
    }
  });
});

describe('revocation is checked before the verified-token cache', () => {
  it('refuses a remembered token once its jti, or its whole session, is revoked', () => {
    const clock = { now: Date.UTC(2026, 0, 12, 8) };
    const revocations = createMemoryRevocations(() => clock.now);
    const tokens = new TokenService({ secret: SECRET, ttlSeconds: 3600, now: () => clock.now, revocations });
    const a = tokens.issue({ id: 1, role: 'student' });
    const b = tokens.issue({ id: 2, role: 'student' });
    // Both verified once, so both are in the cache.
    assert.deepEqual(tokens.verify(a), { id: 1, role: 'student' });
    assert.deepEqual(tokens.verify(b), { id: 2, role: 'student' });
    assert.equal(tokens.rememberedTokens, 2);
    const ca = claims(a);
    revocations.revoke({ jti: ca.jti as string, until: ca.exp as number });
    assert.throws(() => tokens.verify(a), (e: unknown) => (e as { code?: string }).code === 'TOKEN_REVOKED');
    assert.deepEqual(tokens.verify(b), { id: 2, role: 'student' });
    // Revoking the session also ends tokens refreshed from it.
    const session = tokens.verifyToken(b).session;
    const refreshed = tokens.issue({ id: 2, role: 'student' }, session);
    assert.deepEqual(tokens.verify(refreshed), { id: 2, role: 'student' });
    revocations.revoke({ sid: session.sid, until: session.authTime + 12 * 3600 });
    for (const t of [b, refreshed]) assert.throws(() => tokens.verify(t), (e: unknown) => (e as { code?: string }).code === 'TOKEN_REVOKED');
  });

  it('the HTTP layer answers a revoked token with 401 TOKEN_REVOKED', async () => {
    const revocations = createMemoryRevocations();
    const f = (fx = await createHttpFixture({ app: { revocations } }));
    const token = f.studentToken();
    expectStatus(await f.request('GET', '/student/course', { token }), 200);
    revocations.revoke({ jti: claims(token).jti as string, until: Math.floor(Date.now() / 1000) + 3600 });
    expectError(await f.request('GET', '/student/course', { token }), 401, 'TOKEN_REVOKED');
  });
});

describe('password checks are capped; logins over the cap wait their turn for a bounded time', () => {
  /** A check the test ends (true) when it likes; `ran` counts the checks started. */
  function checks() {
    const releases: (() => void)[] = [];
    const state = { ran: 0, running: 0, most: 0 };
    const check = () =>
      new Promise<boolean>((resolve) => {
        state.ran += 1;
        state.running += 1;
        state.most = Math.max(state.most, state.running);
        releases.push(() => {
          state.running -= 1;
          resolve(true);
        });
      });
    /** Ends the oldest unfinished check and lets the gate start the next. */
    const finishOne = async () => {
      releases.shift()?.();
      await new Promise((r) => setImmediate(r));
    };
    return { state, check, finishOne, releases };
  }
  const isBusy = (e: unknown) => (e as { code?: string }).code === 'LOGIN_BUSY';

  it('at most `max` checks run at once; the others wait and start in arrival order as slots free', async () => {
    const gate = createPasswordGate({ max: 2, maxWaitMs: 5000 });
    const c = checks();
    const order: number[] = [];
    const all = [0, 1, 2, 3, 4].map((i) => gate.run(() => (order.push(i), c.check())));
    assert.equal(gate.active, 2);
    assert.equal(gate.waiting, 3);
    while (c.releases.length > 0) await c.finishOne();
    assert.deepEqual(await Promise.all(all), [true, true, true, true, true]);
    assert.deepEqual(order, [0, 1, 2, 3, 4], 'first come, first checked');
    assert.equal(c.state.most, 2, 'never more than the cap at once');
    assert.equal(gate.active + gate.waiting, 0);
  });

  it('a login arriving while the queue is full is refused at once, unchecked, with Retry-After', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 5000 });
    const c = checks();
    const held = gate.run(c.check);
    const queued = Array.from({ length: MAX_WAITING }, (_, i) => gate.run(c.check, undefined, `10.0.${i % 2}.1`));
    assert.equal(gate.waiting, MAX_WAITING);
    await assert.rejects(gate.run(c.check), (e: unknown) => isBusy(e) && (e as { retryAfterSeconds?: number }).retryAfterSeconds === 5);
    assert.equal(gate.waiting, MAX_WAITING, 'the refused login was not queued');
    assert.equal(c.state.ran, 1, 'nor checked');
    while (c.releases.length > 0) await c.finishOne();
    await Promise.all([held, ...queued]);
    assert.equal(c.state.ran, MAX_WAITING + 1);
  });

  it('waiting logins take turns by address: a flood from one address delays its own logins, not another address\'s', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 5000 });
    const c = checks();
    const order: string[] = [];
    const held = gate.run(c.check, undefined, 'flood');
    const flood = Array.from({ length: 200 }, (_, i) => gate.run(() => (order.push(`flood ${i}`), c.check()), undefined, 'flood'));
    const student = gate.run(() => (order.push('student'), c.check()), undefined, 'campus');
    await c.finishOne();
    await c.finishOne();
    assert.deepEqual(order, ['flood 0', 'student'], 'the other address is served after one turn, not after 200 logins');
    while (c.releases.length > 0) await c.finishOne();
    await Promise.all([held, ...flood, student]);
  });

  it('one address may hold at most half of the waiting places; another address still gets in', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 5000 });
    const c = checks();
    const held = gate.run(c.check, undefined, 'flood');
    const flood = Array.from({ length: MAX_WAITING_PER_ADDRESS }, () => gate.run(c.check, undefined, 'flood'));
    await assert.rejects(gate.run(c.check, undefined, 'flood'), (e: unknown) => isBusy(e) && /from this address/.test((e as Error).message));
    const other = gate.run(c.check, undefined, 'campus');
    assert.equal(gate.waiting, MAX_WAITING_PER_ADDRESS + 1);
    while (c.releases.length > 0) await c.finishOne();
    await Promise.all([held, ...flood, other]);
  });

  it('a login still waiting at its deadline is refused then, its check never run', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 40 });
    const c = checks();
    const held = gate.run(c.check);
    const late = gate.run(c.check);
    await assert.rejects(late, isBusy);
    assert.equal(gate.waiting, 0);
    await c.finishOne();
    await held;
    assert.equal(c.state.ran, 1, 'the refused login was never checked');
    // The slot is free for the next login at once.
    const again = gate.run(c.check);
    assert.equal(gate.active, 1);
    await c.finishOne();
    assert.equal(await again, true);
  });

  it('while the checks are stuck, logins refused at their deadline are dropped from the queue and a live one behind them is still served', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 200 });
    const c = checks();
    const held = gate.run(c.check);
    const late = Array.from({ length: 300 }, () => assert.rejects(gate.run(c.check), isBusy));
    await new Promise((r) => setTimeout(r, 100));
    // Still waiting when the 300 before it are refused and dropped (they outnumber the live ones).
    const live = gate.run(c.check);
    await Promise.all(late);
    assert.equal(gate.waiting, 1);
    await c.finishOne();
    assert.equal(c.state.ran, 2, 'the live login ran, none of the refused ones');
    await c.finishOne();
    assert.deepEqual(await Promise.all([held, live]), [true, true]);
  });

  it('a waiting login whose client left is not checked; the next one gets the slot', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 5000 });
    const c = checks();
    const held = gate.run(c.check);
    let left = false;
    const gone = assert.rejects(gate.run(c.check, () => left), isBusy);
    const next = gate.run(c.check);
    left = true;
    await c.finishOne();
    await gone;
    assert.equal(c.state.ran, 2, 'the check of the login whose client left was skipped');
    await c.finishOne();
    assert.deepEqual(await Promise.all([held, next]), [true, true]);
  });

  it('with no queue (maxWaitMs 0) a login over the cap is refused at once without running the check; a slot freed is used again', async () => {
    const gate = createPasswordGate({ max: 2, maxWaitMs: 0 });
    const c = checks();
    const p1 = gate.run(c.check);
    const p2 = gate.run(c.check);
    assert.equal(gate.active, 2);
    await assert.rejects(gate.run(c.check), (e: unknown) => isBusy(e) && (e as { retryAfterSeconds?: number }).retryAfterSeconds === 1);
    assert.equal(c.state.ran, 2, 'a refused check never runs');
    await c.finishOne();
    await p1;
    assert.equal(gate.active, 1);
    const p3 = gate.run(c.check);
    assert.equal(c.state.ran, 3);
    await c.finishOne();
    await c.finishOne();
    await Promise.all([p2, p3]);
    assert.equal(gate.active, 0);
  });

  /** A student with a slow hash (cost 12), so a check is surely still running when the next login arrives. */
  async function slowStudent(f: HttpFixture, id: number): Promise<void> {
    await f.engine.createStudent(
      { id, passwordHash: await hashPassword('slow-password', 12), enrollmentStart: 0, maxUnits: 20, remainingActions: 1, departmentId: null, entryYear: null, gender: 'male' },
      { requestId: 't', actor: 'system' },
    );
  }

  it('over HTTP, with the default queue: concurrent logins beyond a cap of 1 all get their token, in turn', async () => {
    const f = (fx = await createHttpFixture({ app: { maxConcurrentPasswordChecks: 1 } }));
    await slowStudent(f, 701);
    const replies = await Promise.all([0, 1, 2, 3].map(() => f.request('POST', '/login', { body: { user: 701, password: 'slow-password' } })));
    for (const r of replies) expectStatus(r, 200);
  });

  it('over HTTP: a login whose client disconnects while it waits is never checked', async () => {
    // One failed login throttles an account, so a check of the departed login's wrong password
    // would show as 429 on that account's next, correct, login.
    const f = (fx = await createHttpFixture({ app: { maxConcurrentPasswordChecks: 1, throttle: { loginFailuresPerUser: 1 } } }));
    await slowStudent(f, 702);
    await f.engine.createStudent(
      { id: 703, passwordHash: await hashPassword('right-password', 4), enrollmentStart: 0, maxUnits: 20, remainingActions: 1, departmentId: null, entryYear: null, gender: 'male' },
      { requestId: 't', actor: 'system' },
    );
    const address = await f.app.listen({ port: 0, host: '127.0.0.1' });
    const gauge = async (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec((await renderMetrics()).body)?.[1]);
    const until = async (ok: () => Promise<boolean>, what: string) => {
      const end = performance.now() + 5000;
      while (!(await ok())) {
        if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const login = (user: number, password: string, signal?: AbortSignal) =>
      fetch(`${address}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }), signal });
    const first = login(702, 'slow-password');
    await until(async () => (await gauge('enrollment_password_checks_active')) === 1, 'the first check to run');
    const departing = new AbortController();
    const gone = login(703, 'wrong-password', departing.signal).catch(() => 'aborted');
    await until(async () => (await gauge('enrollment_login_queue')) === 1, 'the second login to wait');
    departing.abort();
    assert.equal(await gone, 'aborted');
    assert.equal((await first).status, 200);
    await until(async () => (await gauge('enrollment_login_queue')) === 0 && (await gauge('enrollment_password_checks_active')) === 0, 'the gate to empty');
    expectStatus(await f.request('POST', '/login', { body: { user: 703, password: 'right-password' } }), 200);
  });

  it('over HTTP, with LOGIN_QUEUE_MS 0: concurrent logins beyond a cap of 1 are answered 503 LOGIN_BUSY with Retry-After before the admitted one finishes', async () => {
    const f = (fx = await createHttpFixture({ app: { maxConcurrentPasswordChecks: 1, loginQueueMs: 0 } }));
    const id = 700;
    await slowStudent(f, id);
    const order: number[] = [];
    const replies = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const r = await f.request('POST', '/login', { body: { user: id, password: 'slow-password' } });
        order.push(r.status);
        return r;
      }),
    );
    const ok = replies.filter((r) => r.status === 200);
    const busy = replies.filter((r) => r.status === 503);
    assert.equal(ok.length, 1, replies.map((r) => r.raw).join('\n'));
    assert.equal(busy.length, 3);
    for (const r of busy) {
      expectError(r, 503, 'LOGIN_BUSY');
      assert.equal(r.headers['retry-after'], '1');
    }
    // Refused at once, not queued: every refusal came back before the admitted login did.
    assert.deepEqual(order, [503, 503, 503, 200]);
    // The slot is free again.
    expectStatus(await f.request('POST', '/login', { body: { user: S.alice, password: PASSWORD } }), 200);
  });
});

