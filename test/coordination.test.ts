import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createMemoryCoordination } from '../src/coordination/memory.js';
import { createRedisCoordination } from '../src/coordination/redis.js';
import { createJournalBackup } from '../src/coordination/revocation-journal.js';
import type { Coordination } from '../src/coordination/types.js';
import type { AppDeps } from '../src/http/app.js';
import type { ThrottlePolicy } from '../src/http/throttle.js';
import { createLogger } from '../src/logger.js';
import { freePort } from './support/fault-harness.js';
import { watchEngine } from '../src/metrics/engine-metrics.js';
import { renderMetrics } from '../src/metrics/registry.js';
import { createHttpFixture, expectError, expectStatus, type HttpFixture, OTHER_STAFF, PASSWORD, S, STAFF, T0, MINUTE } from './support/http-fixture.js';
import { deleteRedisKeys, REDIS_URL, requireService, uniqueName } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

/**
 * Issue 15: login throttling, the per-student write limit and token revocation behave the same on
 * the in-process store and on the real Redis (a unique key prefix per run), across instances
 * sharing Redis, and while Redis is unreachable (fail open for limits, local revocations, no 5xx).
 * Failed logins count per id at one address (3 here), per id from every address (8) and per
 * address (6); the address is the TCP peer unless a trusted proxy forwarded it (TRUST_PROXY).
 */

const redisSkip = await requireService('Redis', REDIS_URL);
const POLICY: Partial<ThrottlePolicy> = {
  loginFailuresPerUser: 3,
  loginFailuresPerUserAllAddresses: 8,
  loginFailuresPerAddress: 6,
  loginWindowMs: 60_000,
  studentWriteLimit: 3,
  studentWriteWindowMs: 10_000,
};

type Maker = (now: () => number, prefix: string, logs: string[]) => Coordination;

const memoryMaker: Maker = (now) => createMemoryCoordination({ now });
/**
 * A revocation Redis cannot take is answered once saved to a backup (the database in full mode;
 * test/revocation-backup.test.ts): here a journal in a directory of its own per store.
 */
const redisMaker =
  (url: string, extra: { probeMs?: number; commandTimeoutMs?: number } = {}): Maker =>
  (now, prefix, logs) => {
    const dir = mkdtempSync(join(tmpdir(), 'enroll-coordination-'));
    const backup = createJournalBackup(dir);
    closers.push(async () => {
      await backup.close();
      rmSync(dir, { recursive: true, force: true });
    });
    return createRedisCoordination({
      url,
      prefix,
      now,
      logger: createLogger('debug', { write: (l: string) => void logs.push(l) }),
      resyncMs: 60_000,
      backup,
      ...extra,
    });
  };

/** An app (with the test fixture's seed) on a given coordination store; the store follows the fixture's clock. */
async function appOn(
  make: Maker,
  prefix: string,
  start = T0 + 5 * MINUTE,
  extra: { app?: Partial<AppDeps>; logRequests?: boolean } = {},
): Promise<{ fx: HttpFixture; store: Coordination; logs: string[]; prefix: string }> {
  const logs: string[] = [];
  // One clock for the app, its tokens and the store: the fixture's.
  let fx: HttpFixture | null = null;
  const store = make(() => (fx === null ? start : fx.clock.now), prefix, logs);
  await store.start();
  fx = await createHttpFixture({ now: start, logRequests: extra.logRequests ?? false, app: { coordination: store, throttle: POLICY, ...extra.app } });
  return { fx, store, logs, prefix };
}

async function login(fx: HttpFixture, user: number, password: string, opts: { staff?: boolean; address?: string; forwardedFor?: string } = {}) {
  const res = await fx.app.inject({
    method: 'POST',
    url: '/login',
    payload: { user, password, staff: opts.staff ?? false },
    remoteAddress: opts.address ?? '10.0.0.1',
    ...(opts.forwardedFor === undefined ? {} : { headers: { 'x-forwarded-for': opts.forwardedFor } }),
  });
  return { status: res.statusCode, body: res.json() as { token?: string; code?: string; reason?: string }, headers: res.headers };
}

const closers: (() => Promise<void>)[] = [];
/** Every key prefix this run used on the shared Redis: their keys are deleted at the end. */
const prefixes: string[] = [];
function keyPrefix(): string {
  const p = `${uniqueName('t15')}:`;
  prefixes.push(p);
  return p;
}
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  if (redisSkip) return;
  await deleteRedisKeys(prefixes);
});

const STORES: { name: string; make: Maker; skip: string | false }[] = [
  { name: 'in-process store', make: memoryMaker, skip: false },
  { name: 'Redis', make: redisMaker(REDIS_URL), skip: redisSkip },
];

for (const store of STORES) {
  describe(`login throttling, write limit and revocation (${store.name})`, { skip: store.skip }, () => {
    const setup = async (extra: Parameters<typeof appOn>[3] = {}) => {
      const r = await appOn(store.make, keyPrefix(), T0 + 5 * MINUTE, extra);
      closers.push(async () => {
        await r.fx.close();
        await r.store.close();
      });
      return r;
    };

    it('counts guesses still being checked: a burst sent at once gets no more checks than the budget, the right password among them refused too', async () => {
      const { fx } = await setup();
      // 12 wrong guesses and then the right password, all at once, for one id from one address (budget 3).
      const burst = await Promise.all([
        ...Array.from({ length: 12 }, (_, i) => login(fx, S.alice, `guess ${i}`, { address: '10.7.0.1' })),
        login(fx, S.alice, PASSWORD, { address: '10.7.0.1' }),
      ]);
      const statuses = burst.map((r) => r.status);
      const checked = statuses.filter((s) => s === 401).length;
      assert.ok(checked <= 3, `at most the budget checked, got ${JSON.stringify(statuses)}`);
      assert.ok(statuses.slice(0, 12).every((s) => s === 401 || s === 429), JSON.stringify(statuses));
      assert.equal(burst[12]?.status, 429, `the right password in the burst is throttled too: ${JSON.stringify(burst[12]?.body)}`);
      assert.equal(burst[12]?.body.code, 'LOGIN_THROTTLED');
      // From all addresses together too (budget 8): bursts from three addresses, 4 each.
      const spread = await Promise.all(['10.8.0.1', '10.8.0.2', '10.8.0.3'].flatMap((address) => Array.from({ length: 4 }, (_, i) => login(fx, S.bea, `guess ${i}`, { address }))));
      assert.ok(spread.filter((r) => r.status === 401).length <= 8, JSON.stringify(spread.map((r) => r.status)));
      // Logins of other students from the same address are not held by it (each their own account).
      assert.equal((await login(fx, S.carl, PASSWORD, { address: '10.7.0.1' })).status, 200);
    });

    it('throttles an account at an address after its failed logins there, answers 429 with Retry-After, and lets the right student in after one window', async () => {
      const { fx } = await setup();
      for (let i = 0; i < 3; i++) assert.equal((await login(fx, S.alice, 'wrong-password', { address: '10.1.0.1' })).status, 401);
      const locked = await login(fx, S.alice, PASSWORD, { address: '10.1.0.1' });
      assert.equal(locked.status, 429, JSON.stringify(locked.body));
      assert.equal(locked.body.code, 'LOGIN_THROTTLED');
      const retry = Number(locked.headers['retry-after']);
      assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
      // Attempts while locked are not counted: a burst cannot stretch the lock past one window.
      fx.clock.now += 30_000;
      for (let i = 0; i < 10; i++) assert.equal((await login(fx, S.alice, 'wrong-password', { address: '10.1.0.1' })).status, 429);
      // Another student at that address is not affected.
      assert.equal((await login(fx, S.bea, PASSWORD, { address: '10.1.0.1' })).status, 200);
      fx.clock.now += 30_001;
      const back = await login(fx, S.alice, PASSWORD, { address: '10.1.0.1' });
      assert.equal(back.status, 200, JSON.stringify(back.body));
    });

    it('a correct password from another address still logs in while one address is locked out for that student', async () => {
      const { fx } = await setup();
      for (let i = 0; i < 3; i++) assert.equal((await login(fx, S.alice, 'wrong-password', { address: '10.20.0.1' })).status, 401);
      const attacker = await login(fx, S.alice, PASSWORD, { address: '10.20.0.1' });
      assert.equal(attacker.status, 429, JSON.stringify(attacker.body));
      assert.equal(attacker.body.code, 'LOGIN_THROTTLED');
      assert.ok(Number(attacker.headers['retry-after']) >= 1);
      // Through the whole lock the attacker keeps at it (refused, not counted), and the student,
      // logging in from elsewhere, is let in every time.
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 5; i++) assert.equal((await login(fx, S.alice, 'wrong-password', { address: '10.20.0.1' })).status, 429);
        const student = await login(fx, S.alice, PASSWORD, { address: '10.21.0.1' });
        assert.equal(student.status, 200, JSON.stringify(student.body));
        fx.clock.now += 15_000;
      }
    });

    it('bounds guessing from many addresses: an id with too many failures from all addresses together is throttled everywhere for one window', async () => {
      const { fx } = await setup();
      // One failure from each of seven addresses: no address reaches its limits; the id is not locked.
      for (let i = 0; i < 7; i++) assert.equal((await login(fx, S.alice, 'wrong-password', { address: `10.30.0.${i}` })).status, 401);
      assert.equal((await login(fx, S.alice, PASSWORD, { address: '10.31.0.1' })).status, 200);
      // That success clears the failures at 10.31.0.1 only: the eighth failure, from anywhere, reaches the bound.
      assert.equal((await login(fx, S.alice, 'wrong-password', { address: '10.30.0.7' })).status, 401);
      const locked = await login(fx, S.alice, PASSWORD, { address: '10.31.0.1' });
      assert.equal(locked.status, 429, JSON.stringify(locked.body));
      assert.equal(locked.body.code, 'LOGIN_THROTTLED');
      const retry = Number(locked.headers['retry-after']);
      assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
      assert.equal((await login(fx, S.alice, PASSWORD, { staff: true, address: '10.32.0.1' })).status, 429);
      // Other students at those addresses are not affected, and the id is let in after the window.
      assert.equal((await login(fx, S.bea, PASSWORD, { address: '10.31.0.1' })).status, 200);
      fx.clock.now += 60_001;
      assert.equal((await login(fx, S.alice, PASSWORD, { address: '10.31.0.1' })).status, 200);
    });

    it('counts failures per id whatever the staff flag: a locked student\'s password cannot be tried, or confirmed, as staff', async () => {
      const { fx } = await setup();
      for (let i = 0; i < 3; i++) assert.equal((await login(fx, S.alice, 'wrong-password', { address: '10.5.0.1' })).status, 401);
      // The right password with staff: true was answered 401 WRONG_ROLE (the password confirmed) from the staff flag's own budget.
      const asStaff = await login(fx, S.alice, PASSWORD, { staff: true, address: '10.5.0.1' });
      assert.equal(asStaff.status, 429, JSON.stringify(asStaff.body));
      assert.equal(asStaff.body.code, 'LOGIN_THROTTLED');
      // And failures sent with staff: true lock the id for student logins too.
      const { fx: fx2 } = await setup();
      for (let i = 0; i < 3; i++) assert.equal((await login(fx2, S.bea, 'wrong-password', { staff: true, address: '10.7.0.1' })).status, 401);
      assert.equal((await login(fx2, S.bea, PASSWORD, { address: '10.7.0.1' })).status, 429);
    });

    it('never counts successful logins, and a success clears the account\'s failures at that address', async () => {
      const { fx } = await setup();
      for (let i = 0; i < 20; i++) assert.equal((await login(fx, S.alice, PASSWORD)).status, 200);
      // Two rounds: four failures at one address, over the limit of three there had the success not cleared them
      // (the address's own count, six a window for any ids, and the id's all-addresses count are not cleared).
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < 2; i++) assert.equal((await login(fx, S.bea, 'wrong-password', { address: '10.3.0.1' })).status, 401);
        assert.equal((await login(fx, S.bea, PASSWORD, { address: '10.3.0.1' })).status, 200);
      }
    });

    it('throttles a client address that fails for many accounts; other addresses are not affected', async () => {
      const { fx } = await setup();
      const ids = [S.alice, S.bea, S.carl, S.dan, S.eve, S.f1];
      for (const id of ids) assert.equal((await login(fx, id, 'wrong-password', { address: '10.9.9.9' })).status, 401);
      const refused = await login(fx, S.f2, PASSWORD, { address: '10.9.9.9' });
      assert.equal(refused.status, 429);
      assert.equal(refused.body.code, 'LOGIN_THROTTLED');
      assert.ok(Number(refused.headers['retry-after']) >= 1);
      assert.equal((await login(fx, S.alice, PASSWORD, { address: '10.9.9.10' })).status, 200);
    });

    it('TRUST_PROXY: X-Forwarded-For is believed only from a trusted proxy; its clients are throttled, and logged, each by their own address', async () => {
      const { fx } = await setup({ app: { trustProxy: ['10.0.0.1', '192.0.2.0/24', '2001:db8::/32'] }, logRequests: true });
      const ids = [S.alice, S.bea, S.carl, S.dan, S.eve, S.f1];
      // One client behind the campus proxy fails for six accounts: that client is throttled...
      for (const id of ids) assert.equal((await login(fx, id, 'wrong-password', { address: '10.0.0.1', forwardedFor: '203.0.113.7' })).status, 401);
      const refused = await login(fx, S.f2, PASSWORD, { address: '10.0.0.1', forwardedFor: '203.0.113.7' });
      assert.equal(refused.status, 429, JSON.stringify(refused.body));
      assert.equal(refused.body.code, 'LOGIN_THROTTLED');
      assert.ok(Number(refused.headers['retry-after']) >= 1);
      // ...through the other trusted proxies too (a CIDR range, IPv6), and whatever it prepends itself
      // (the proxy appends the address it saw; only that entry is the trusted proxy's word).
      assert.equal((await login(fx, S.f2, PASSWORD, { address: '192.0.2.44', forwardedFor: '203.0.113.7' })).status, 429);
      assert.equal((await login(fx, S.f2, PASSWORD, { address: '2001:db8::5', forwardedFor: '203.0.113.7' })).status, 429);
      assert.equal((await login(fx, S.f2, PASSWORD, { address: '10.0.0.1', forwardedFor: '198.51.100.1, 203.0.113.7' })).status, 429);
      // ...while every other student behind the same proxy logs in, and so does the proxy itself.
      const other = await login(fx, S.f2, PASSWORD, { address: '10.0.0.1', forwardedFor: '203.0.113.8' });
      assert.equal(other.status, 200, JSON.stringify(other.body));
      assert.equal((await login(fx, S.alice, PASSWORD, { address: '10.0.0.1', forwardedFor: '203.0.113.9' })).status, 200);
      assert.equal((await login(fx, S.bea, PASSWORD, { address: '10.0.0.1' })).status, 200);
      // The request log says the client's address, not the proxy's.
      const incoming = fx.logs
        .map((l) => JSON.parse(l) as { msg?: string; req?: { remoteAddress?: string } })
        .filter((l) => l.msg === 'incoming request')
        .map((l) => l.req?.remoteAddress);
      assert.deepEqual(incoming, [...Array<string>(10).fill('203.0.113.7'), '203.0.113.8', '203.0.113.9', '10.0.0.1']);
    });

    it('TRUST_PROXY: a peer not in the list cannot choose its address with X-Forwarded-For', async () => {
      const { fx } = await setup({ app: { trustProxy: ['10.0.0.1'] } });
      const ids = [S.alice, S.bea, S.carl, S.dan, S.eve, S.f1];
      // Rotating the header does not spread the failures over several addresses: they are the peer's.
      for (const [i, id] of ids.entries()) {
        assert.equal((await login(fx, id, 'wrong-password', { address: '198.51.100.9', forwardedFor: `10.7.7.${i}` })).status, 401);
      }
      const refused = await login(fx, S.f2, PASSWORD, { address: '198.51.100.9', forwardedFor: '10.7.7.99' });
      assert.equal(refused.status, 429, JSON.stringify(refused.body));
      assert.equal(refused.body.code, 'LOGIN_THROTTLED');
      // Nor does it lock someone else out by naming their address: a client at 10.7.7.0 behind the proxy is not throttled...
      assert.equal((await login(fx, S.f2, PASSWORD, { address: '10.0.0.1', forwardedFor: '10.7.7.0' })).status, 200);
      // ...while the proxy's word is believed: the peer that failed, reaching the engine through it, is still throttled.
      assert.equal((await login(fx, S.f2, PASSWORD, { address: '10.0.0.1', forwardedFor: '198.51.100.9' })).status, 429);
      // And a spoofed header cannot escape a per-account lock either.
      for (let i = 0; i < 3; i++) await login(fx, S.carl, 'wrong-password', { address: '198.51.100.10', forwardedFor: `10.8.8.${i}` });
      assert.equal((await login(fx, S.carl, PASSWORD, { address: '198.51.100.10', forwardedFor: '10.8.8.200' })).status, 429);
    });

    it('with no TRUST_PROXY (the default), X-Forwarded-For is ignored from every peer', async () => {
      const { fx } = await setup();
      for (const [i, id] of [S.alice, S.bea, S.carl, S.dan, S.eve, S.f1].entries()) {
        assert.equal((await login(fx, id, 'wrong-password', { address: '127.0.0.1', forwardedFor: `10.7.7.${i}` })).status, 401);
      }
      assert.equal((await login(fx, S.f2, PASSWORD, { address: '127.0.0.1', forwardedFor: '10.7.7.99' })).status, 429);
    });

    it('limits one student\'s writes per window with 429 RATE_LIMITED and Retry-After; reads and other students are not limited', async () => {
      const { fx } = await setup();
      const alice = fx.studentToken(S.alice);
      for (let i = 0; i < 3; i++) {
        const r = await fx.request('DELETE', '/student/course?course_id=999999', { token: alice });
        assert.notEqual(r.status, 429, r.raw);
      }
      const over = await fx.request('PUT', '/student/course', { token: alice, body: { course_id: 101, group_id: 1 } });
      expectError(over, 429, 'RATE_LIMITED');
      assert.ok(Number(over.headers['retry-after']) >= 1 && Number(over.headers['retry-after']) <= 10);
      expectStatus(await fx.request('GET', '/student/courses', { token: alice }), 200);
      assert.notEqual((await fx.request('DELETE', '/student/course?course_id=999999', { token: fx.studentToken(S.bea) })).status, 429);
      fx.clock.now += 10_001;
      assert.notEqual((await fx.request('DELETE', '/student/course?course_id=999999', { token: alice })).status, 429);
    });

    it('HEAD and OPTIONS are reads: they never use up the write allowance, nor are they refused once it is used up', async () => {
      const { fx } = await setup();
      const token = fx.studentToken(S.bea);
      for (let i = 0; i < 10; i++) {
        for (const path of ['/student/courses', '/student/course']) assert.notEqual((await fx.request('HEAD', path, { token })).status, 429);
      }
      assert.notEqual((await fx.request('DELETE', '/student/course?course_id=999999', { token })).status, 429, 'the reads used up the write allowance');
      for (let i = 0; i < 5; i++) await fx.request('DELETE', '/student/course?course_id=999999', { token });
      expectError(await fx.request('PUT', '/student/course', { token, body: { course_id: 101, group_id: 1 } }), 429, 'RATE_LIMITED');
      assert.equal((await fx.request('HEAD', '/student/courses', { token })).status, 200, 'a HEAD refused once the writes are used up');
    });

    it('POST /logout revokes the presented token (and its session); another login still works', async () => {
      const { fx } = await setup();
      const a = (await login(fx, S.alice, PASSWORD)).body.token as string;
      const b = (await login(fx, S.alice, PASSWORD)).body.token as string;
      expectStatus(await fx.request('GET', '/student/courses', { token: a }), 200);
      expectStatus(await fx.request('POST', '/logout', { token: a }), 204);
      expectError(await fx.request('GET', '/student/courses', { token: a }), 401, 'TOKEN_REVOKED');
      expectError(await fx.request('POST', '/refresh', { token: a }), 401, 'TOKEN_REVOKED');
      expectStatus(await fx.request('GET', '/student/courses', { token: b }), 200);
      expectError(await fx.request('POST', '/logout'), 401, 'UNAUTHENTICATED');
    });

    it('logouts past the per-user allowance end every session of that user: one revocation entry, not one per logout', async () => {
      const { fx, prefix } = await setup({ app: { throttle: { ...POLICY, logoutsKeptPerUser: 3 } } });
      const kept = (await login(fx, S.alice, PASSWORD)).body.token as string;
      const other = (await login(fx, S.bea, PASSWORD)).body.token as string;
      const cycle = async () => {
        fx.clock.now += 1;
        const t = (await login(fx, S.alice, PASSWORD)).body.token as string;
        expectStatus(await fx.request('POST', '/logout', { token: t }), 204);
        expectError(await fx.request('GET', '/student/courses', { token: t }), 401, 'TOKEN_REVOKED');
      };
      for (let i = 0; i < 3; i++) {
        await cycle();
        expectStatus(await fx.request('GET', '/student/courses', { token: kept }), 200);
      }
      // The fourth logout within the session span ends every session of the student, the kept one too.
      await cycle();
      expectError(await fx.request('GET', '/student/courses', { token: kept }), 401, 'TOKEN_REVOKED');
      expectStatus(await fx.request('GET', '/student/courses', { token: other }), 200);
      for (let i = 0; i < 30; i++) await cycle();
      fx.clock.now += 1;
      const fresh = (await login(fx, S.alice, PASSWORD)).body.token as string;
      expectStatus(await fx.request('GET', '/student/courses', { token: fresh }), 200);
      if (store.name === 'Redis') {
        const { Redis } = await import('ioredis');
        const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
        try {
          await redis.connect();
          // 3 logouts kept (a token and a session each) and one entry for the student: 7, not 68.
          assert.equal(await redis.hlen(`${prefix}revocations`), 7);
        } finally {
          redis.disconnect();
        }
      }
    });

    it('staff revoke every token of a student; the student\'s next login works; students and unknown ids are refused', async () => {
      const { fx } = await setup();
      const a = (await login(fx, S.alice, PASSWORD)).body.token as string;
      const refreshed = (await fx.request('POST', '/refresh', { token: a })).body.token as string;
      const bob = (await login(fx, S.bea, PASSWORD)).body.token as string;
      const staff = fx.staffToken(STAFF);
      expectStatus(await fx.request('POST', `/students/${S.alice}/revoke-tokens`, { token: staff }), 204);
      expectError(await fx.request('GET', '/student/courses', { token: a }), 401, 'TOKEN_REVOKED');
      expectError(await fx.request('GET', '/student/courses', { token: refreshed }), 401, 'TOKEN_REVOKED');
      expectStatus(await fx.request('GET', '/student/courses', { token: bob }), 200);
      fx.clock.now += 1;
      const fresh = (await login(fx, S.alice, PASSWORD)).body.token as string;
      expectStatus(await fx.request('GET', '/student/courses', { token: fresh }), 200);
      const byStudent = await fx.request('POST', `/students/${S.bea}/revoke-tokens`, { token: bob });
      expectError(byStudent, 403, 'FORBIDDEN');
      assert.match(byStudent.body.reason, /students cannot use the admin page or staff routes/);
      expectError(await fx.request('POST', '/students/4242/revoke-tokens', { token: staff }), 404, 'STUDENT_NOT_FOUND');
    });

    it('admin staff revoke every token of a staff member; their next login works; other staff, students and unknown ids are refused', async () => {
      const { fx } = await setup();
      const leaked = (await login(fx, OTHER_STAFF, PASSWORD, { staff: true })).body.token as string;
      const refreshed = (await fx.request('POST', '/refresh', { token: leaked })).body.token as string;
      const admin = fx.staffToken(STAFF);
      expectStatus(await fx.request('GET', '/sections', { token: leaked }), 200);
      // Only admins (ADMIN_STAFF_IDS): ordinary staff could otherwise lock out the admins.
      const byStaff = await fx.request('POST', `/staff/${STAFF}/revoke-tokens`, { token: leaked });
      expectError(byStaff, 403, 'ADMIN_REQUIRED');
      expectError(await fx.request('POST', `/staff/${STAFF}/revoke-tokens`, { token: fx.studentToken(S.alice) }), 403, 'FORBIDDEN');
      expectError(await fx.request('POST', `/staff/${OTHER_STAFF}/revoke-tokens`), 401, 'UNAUTHENTICATED');
      expectStatus(await fx.request('GET', '/sections', { token: admin }), 200);

      expectStatus(await fx.request('POST', `/staff/${OTHER_STAFF}/revoke-tokens`, { token: admin }), 204);
      for (const token of [leaked, refreshed]) {
        expectError(await fx.request('GET', '/sections', { token }), 401, 'TOKEN_REVOKED');
        expectError(await fx.request('GET', '/me', { token }), 401, 'TOKEN_REVOKED');
        expectError(await fx.request('POST', '/refresh', { token }), 401, 'TOKEN_REVOKED');
      }
      // The admin's own tokens, and a student's token that shares no subject, are untouched.
      expectStatus(await fx.request('GET', '/sections', { token: admin }), 200);
      expectStatus(await fx.request('GET', '/student/courses', { token: fx.studentToken(S.alice) }), 200);
      fx.clock.now += 1;
      const fresh = (await login(fx, OTHER_STAFF, PASSWORD, { staff: true })).body.token as string;
      expectStatus(await fx.request('GET', '/sections', { token: fresh }), 200);
      const unknown = await fx.request('POST', '/staff/4242/revoke-tokens', { token: admin });
      expectError(unknown, 404, 'STAFF_NOT_FOUND');
      // A student id is not a staff id: the staff route does not reach students.
      expectError(await fx.request('POST', `/staff/${S.alice}/revoke-tokens`, { token: admin }), 404, 'STAFF_NOT_FOUND');
    });
  });
}

describe('several instances sharing Redis', { skip: redisSkip }, () => {
  it('a token revoked on one instance gets 401 on the other within 1 s; failed logins count on both, per address and from all addresses', async () => {
    const prefix = keyPrefix();
    const start = Date.now();
    const a = await appOn(redisMaker(REDIS_URL), prefix, start);
    const b = await appOn(redisMaker(REDIS_URL), prefix, start);
    closers.push(async () => {
      for (const x of [a, b]) {
        await x.fx.close();
        await x.store.close();
      }
    });
    const token = (await login(a.fx, S.alice, PASSWORD)).body.token as string;
    expectStatus(await b.fx.request('GET', '/student/courses', { token }), 200);
    expectStatus(await a.fx.request('POST', '/logout', { token }), 204);
    const t0 = performance.now();
    let status = 200;
    while (performance.now() - t0 < 1000) {
      status = (await b.fx.request('GET', '/student/courses', { token })).status;
      if (status === 401) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(status, 401, 'the other instance still accepted the revoked token after 1 s');
    // Staff revocation on B reaches A too.
    const t2 = (await login(a.fx, S.bea, PASSWORD)).body.token as string;
    expectStatus(await b.fx.request('POST', `/students/${S.bea}/revoke-tokens`, { token: b.fx.staffToken(STAFF) }), 204);
    const t1 = performance.now();
    while (performance.now() - t1 < 1000 && (await a.fx.request('GET', '/student/courses', { token: t2 })).status !== 401) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expectError(await a.fx.request('GET', '/student/courses', { token: t2 }), 401, 'TOKEN_REVOKED');
    // So does a staff member's: an admin on A cuts off a staff token that B accepted.
    const staffToken = (await login(b.fx, OTHER_STAFF, PASSWORD, { staff: true })).body.token as string;
    expectStatus(await b.fx.request('GET', '/sections', { token: staffToken }), 200);
    expectStatus(await a.fx.request('POST', `/staff/${OTHER_STAFF}/revoke-tokens`, { token: a.fx.staffToken(STAFF) }), 204);
    const t3 = performance.now();
    while (performance.now() - t3 < 1000 && (await b.fx.request('GET', '/sections', { token: staffToken })).status !== 401) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expectError(await b.fx.request('GET', '/sections', { token: staffToken }), 401, 'TOKEN_REVOKED');
    // Three failures split over two instances lock the account on both.
    assert.equal((await login(a.fx, S.carl, 'wrong-password')).status, 401);
    assert.equal((await login(b.fx, S.carl, 'wrong-password')).status, 401);
    assert.equal((await login(a.fx, S.carl, 'wrong-password')).status, 401);
    assert.equal((await login(b.fx, S.carl, PASSWORD)).status, 429);
    // At that address only: Carl, elsewhere, logs in on either instance.
    assert.equal((await login(a.fx, S.carl, PASSWORD, { address: '10.0.0.2' })).status, 200);
    // The all-addresses bound is shared too: eight failures from eight addresses, split over the two, lock the id on both.
    for (let i = 0; i < 8; i++) assert.equal((await login(i % 2 === 0 ? a.fx : b.fx, S.dan, 'wrong-password', { address: `10.40.0.${i}` })).status, 401);
    assert.equal((await login(a.fx, S.dan, PASSWORD, { address: '10.41.0.1' })).status, 429);
    assert.equal((await login(b.fx, S.dan, PASSWORD, { address: '10.41.0.1' })).status, 429);
    // A new instance started later loads the revocations already recorded.
    const c = await appOn(redisMaker(REDIS_URL), prefix, start);
    closers.push(async () => {
      await c.fx.close();
      await c.store.close();
    });
    expectError(await c.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
    expectError(await c.fx.request('GET', '/sections', { token: staffToken }), 401, 'TOKEN_REVOKED');
  });

  it('keys carry the prefix and a TTL', async () => {
    const prefix = keyPrefix();
    const r = await appOn(redisMaker(REDIS_URL), prefix);
    closers.push(async () => {
      await r.fx.close();
      await r.store.close();
    });
    await login(r.fx, S.alice, 'wrong-password');
    const t = (await login(r.fx, S.bea, PASSWORD)).body.token as string;
    await r.fx.request('POST', '/logout', { token: t });
    await r.fx.request('DELETE', '/student/course?course_id=999999', { token: r.fx.studentToken(S.alice) });
    const { Redis } = await import('ioredis');
    const probe = new Redis(REDIS_URL);
    try {
      const keys = await probe.keys(`${prefix}*`);
      assert.ok(keys.length >= 3, `keys: ${keys.join(', ')}`);
      for (const k of keys) {
        const ttl = await probe.pttl(k);
        assert.ok(ttl > 0, `${k} has no TTL (${ttl})`);
      }
    } finally {
      probe.disconnect();
    }
  });
});

describe('while Redis is down', { skip: redisSkip }, () => {
  it('with Redis unreachable from the start: logins, writes and logout work (limits fail open, revocation local), never a 5xx, and it is logged', async () => {
    const port = await freePort();
    const r = await appOn(redisMaker(`redis://127.0.0.1:${port}`), keyPrefix());
    closers.push(async () => {
      await r.fx.close();
      await r.store.close();
    });
    assert.equal(r.store.connected, false);
    for (let i = 0; i < 6; i++) assert.equal((await login(r.fx, S.alice, 'wrong-password')).status, 401);
    const ok = await login(r.fx, S.alice, PASSWORD);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const token = ok.body.token as string;
    for (let i = 0; i < 5; i++) {
      const w = await r.fx.request('DELETE', '/student/course?course_id=999999', { token });
      assert.ok(w.status < 500 && w.status !== 429, w.raw);
    }
    expectStatus(await r.fx.request('POST', '/logout', { token }), 204);
    expectError(await r.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
    const warned = r.logs.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40);
    assert.ok(warned.some((l) => /rate limits fail open/.test(l.msg)), r.logs.join('\n'));
  });

  it('Redis that comes up after the engine started is used once it answers (ioredis keeps reconnecting)', async () => {
    const proxy = await TcpProxy.start('127.0.0.1', Number(new URL(REDIS_URL).port || 6379));
    proxy.cut();
    const r = await appOn(redisMaker(proxy.rewrite(REDIS_URL)), keyPrefix());
    closers.push(async () => {
      await r.fx.close();
      await r.store.close();
      await proxy.close();
    });
    assert.equal(r.store.connected, false);
    proxy.resume();
    const t0 = performance.now();
    while (!r.store.connected && performance.now() - t0 < 15_000) await new Promise((res) => setTimeout(res, 50));
    assert.equal(r.store.connected, true, 'never reconnected');
    // Shared again: failures now count in Redis, so the account locks after three.
    for (let i = 0; i < 3; i++) assert.equal((await login(r.fx, S.alice, 'wrong-password')).status, 401);
    assert.equal((await login(r.fx, S.alice, PASSWORD)).status, 429);
    // And subscribed: a logout on another instance reaches this one within a second.
    const other = await appOn(redisMaker(REDIS_URL), r.prefix);
    closers.push(async () => {
      await other.fx.close();
      await other.store.close();
    });
    const token = r.fx.studentToken(S.bea);
    expectStatus(await r.fx.request('GET', '/student/courses', { token }), 200);
    expectStatus(await other.fx.request('POST', '/logout', { token }), 204);
    const t1 = performance.now();
    while (performance.now() - t1 < 1000 && (await r.fx.request('GET', '/student/courses', { token })).status !== 401) {
      await new Promise((res) => setTimeout(res, 10));
    }
    expectError(await r.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
  });

  it('when the link to Redis is cut: no 5xx, a logout holds here at once and reaches the other instance once Redis is back', async () => {
    const proxy = await TcpProxy.start('127.0.0.1', Number(new URL(REDIS_URL).port || 6379));
    const prefix = keyPrefix();
    const start = Date.now();
    const a = await appOn(redisMaker(proxy.rewrite(REDIS_URL)), prefix, start);
    const b = await appOn(redisMaker(REDIS_URL), prefix, start);
    closers.push(async () => {
      for (const x of [a, b]) {
        await x.fx.close();
        await x.store.close();
      }
      await proxy.close();
    });
    assert.equal(a.store.connected, true);
    const token = (await login(a.fx, S.alice, PASSWORD)).body.token as string;
    proxy.cut();
    for (let i = 0; i < 5; i++) assert.equal((await login(a.fx, S.bea, 'wrong-password')).status, 401);
    const w = await a.fx.request('DELETE', '/student/course?course_id=999999', { token });
    assert.ok(w.status < 500, w.raw);
    expectStatus(await a.fx.request('POST', '/logout', { token }), 204);
    expectError(await a.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
    expectStatus(await b.fx.request('GET', '/student/courses', { token }), 200);
    proxy.resume();
    const t0 = performance.now();
    while (performance.now() - t0 < 15_000 && (await b.fx.request('GET', '/student/courses', { token })).status !== 401) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expectError(await b.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
    assert.ok(a.logs.some((l) => /redis is back/.test(l)), a.logs.join('\n'));
  });

  it('when Redis hangs (connection open, no answers): reported down after the first timeout, logins pay at most one timeout, and it is back once it answers', async () => {
    const proxy = await TcpProxy.start('127.0.0.1', Number(new URL(REDIS_URL).port || 6379));
    const prefix = keyPrefix();
    const start = Date.now();
    // A command timeout well above this machine's scheduling noise, so "one timeout" and "none" are told apart
    // reliably (the default is 250 ms; the mechanism does not depend on it).
    const TIMEOUT = 1000;
    const a = await appOn(redisMaker(proxy.rewrite(REDIS_URL), { probeMs: 100, commandTimeoutMs: TIMEOUT }), prefix, start);
    const b = await appOn(redisMaker(REDIS_URL), prefix, start);
    closers.push(async () => {
      for (const x of [a, b]) {
        await x.fx.close();
        await x.store.close();
      }
      await proxy.close();
    });
    watchEngine({ activeActors: 0, sectionCount: 0, activeMailboxes: 0, queuedRequests: 0 }, a.store);
    const gauge = async () => /enrollment_coordination_connected\{store="redis"\} (\d)/.exec((await renderMetrics()).body)?.[1];
    assert.equal(a.store.connected, true);
    assert.equal(await gauge(), '1');
    const timed = async (user: number, password: string) => {
      const t0 = performance.now();
      const r = await login(a.fx, user, password);
      return { status: r.status, ms: performance.now() - t0, token: r.body.token };
    };
    // What a login costs here without Redis trouble (bcrypt at the fixture's low cost, two Redis calls).
    let base = Infinity;
    for (let i = 0; i < 3; i++) base = Math.min(base, (await timed(S.carl, PASSWORD)).ms);
    const token = (await login(a.fx, S.alice, PASSWORD)).body.token as string;

    proxy.stall();
    // The first login meets the hang: one command timeout, not one per Redis call (two before).
    const first = await timed(S.carl, PASSWORD);
    assert.equal(first.status, 200);
    assert.ok(first.ms >= TIMEOUT - 50, `the first login during the hang took ${first.ms.toFixed(0)} ms: was Redis stalled?`);
    assert.ok(first.ms < base + TIMEOUT + TIMEOUT / 2, `the first login during the hang took ${first.ms.toFixed(0)} ms (baseline ${base.toFixed(0)} ms)`);
    assert.equal(a.store.connected, false, 'still reported connected after a command timed out');
    assert.equal(await gauge(), '0', 'the gauge still reads 1 after a command timed out');
    // Known to be unresponsive: later logins, failed or not, skip Redis (the documented fail-open fallback).
    for (let i = 0; i < 4; i++) {
      const r = await timed(S.bea, i % 2 === 0 ? 'wrong-password' : PASSWORD);
      assert.ok(r.ms < base + TIMEOUT / 2, `login ${i} during the hang took ${r.ms.toFixed(0)} ms (baseline ${base.toFixed(0)} ms)`);
    }
    const w = await a.fx.request('DELETE', '/student/course?course_id=999999', { token });
    assert.ok(w.status < 500 && w.status !== 429, w.raw);
    // A logout holds here at once, and reaches the other instance once Redis answers again.
    const l0 = performance.now();
    expectStatus(await a.fx.request('POST', '/logout', { token }), 204);
    assert.ok(performance.now() - l0 < TIMEOUT / 2, 'the logout waited for the hung Redis');
    expectError(await a.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
    await new Promise((r) => setTimeout(r, 400)); // several probes, none answered
    assert.equal(a.store.connected, false);

    proxy.flow();
    const t0 = performance.now();
    while (!a.store.connected && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    assert.equal(a.store.connected, true, 'never reported back after Redis answered again');
    assert.equal(await gauge(), '1');
    const t1 = performance.now();
    while (performance.now() - t1 < 2000 && (await b.fx.request('GET', '/student/courses', { token })).status !== 401) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expectError(await b.fx.request('GET', '/student/courses', { token }), 401, 'TOKEN_REVOKED');
    // Shared again: failures count in Redis, so the account locks after three.
    for (let i = 0; i < 3; i++) assert.equal((await login(a.fx, S.dan, 'wrong-password')).status, 401);
    assert.equal((await login(b.fx, S.dan, PASSWORD)).status, 429);
    const logs = a.logs.map((l) => JSON.parse(l) as { level: number; msg: string });
    assert.ok(logs.some((l) => l.level === 40 && /no answer within 1000 ms/.test(l.msg)), a.logs.join('\n'));
    assert.ok(logs.some((l) => l.level === 30 && /redis is back/.test(l.msg)), a.logs.join('\n'));
  });
});

describe('a Redis link that lost bytes', { skip: redisSkip }, () => {
  it('is made again once it has not answered for recycleAfterMs, and the store is shared again (probe J: it stayed away until broken by hand)', async () => {
    const u = new URL(REDIS_URL);
    const proxy = await TcpProxy.start(u.hostname, Number(u.port || 6379));
    const lines: string[] = [];
    const store = createRedisCoordination({
      url: proxy.rewrite(REDIS_URL),
      prefix: keyPrefix(),
      logger: createLogger('info', { write: (l: string) => void lines.push(l) }),
      commandTimeoutMs: 200,
      probeMs: 100,
      recycleAfterMs: 1000,
    });
    try {
      await store.start();
      assert.equal(store.connected, true);
      const limit = [{ key: 'recycle-test', limit: 5, windowMs: 60_000 }];
      proxy.blackhole();
      // A command whose bytes are lost times out: Redis is treated as away, as a hang is.
      assert.deepEqual(await store.limits.check(limit), { allowed: true, retryAfterMs: 0 });
      assert.equal(store.connected, false);
      await new Promise((r) => setTimeout(r, 300)); // PINGs lost too
      proxy.flow();
      const t0 = performance.now();
      while (!store.connected && performance.now() - t0 < 6000) await new Promise((r) => setTimeout(r, 25));
      assert.equal(store.connected, true, `never shared again after the link moved bytes again:\n${lines.join('\n')}`);
      assert.equal((await store.limits.take(limit[0] as (typeof limit)[0])).allowed, true);
      assert.ok(lines.some((l) => l.includes('making a new one')), 'the connection was made again');
    } finally {
      await store.close();
      await proxy.close();
    }
  });
});
