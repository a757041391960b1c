import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import pino from 'pino';
import { EngineError } from '../src/errors.js';
import { clientAddress } from '../src/http/auth.js';
import { CLIENT_HEADER, createForwarder, HOME_HEADER, MARK_MAX_AGE_MS, MIN_FORWARD_ANSWER_MS } from '../src/http/forwarding.js';
import { REQUEST_ID_HEADER } from '../src/http/request-id.js';
import type { ClusterMembership, WriteRoute } from '../src/persistence/types.js';
import { homeShardOf, shardOfCourse } from '../src/persistence/types.js';

/**
 * The forwarder against memberships of the test's own making (the project's ClusterMembership
 * interface, as its TSDoc states it), over real HTTP between two instances: what shards being
 * drained for a hand-over let through, and that the marks instances send each other cannot be set
 * by a client. The cluster tests show the same with real processes; here the moment a drain begins
 * is chosen exactly.
 */

const SHARDS = 2;
const SECRET = 'forwarding-test-secret';

/**
 * One instance's view of the cluster: it owns `own` shards; the others are `peer`'s. Adding a shard
 * to `draining` starts giving it up: no new writes, except those a draining home holds while the
 * shard still has an admitted write outstanding (ClusterMembership.admitWrite); admitted ones counted.
 */
function createMembership(own: Set<number>, peer: () => string) {
  const draining = new Set<number>();
  const admitted = new Map<number, number>();
  /** Shards of every admission, in order (a request routed to its home shows here). */
  const admissions: number[] = [];
  /** The lease table out of reach (the database away). */
  const storage = { unreachable: false };
  const membership: ClusterMembership = {
    shards: SHARDS,
    instanceId: 'test',
    peers: 1,
    get storageUnreachable() {
      return storage.unreachable;
    },
    routeWrite: (shard): WriteRoute => (!own.has(shard) ? { self: false, address: peer() } : draining.has(shard) ? { self: false, address: null } : { self: true }),
    admitWrite(shard, opts) {
      if (!own.has(shard)) return null;
      // Draining: only a write a draining home holds, while the drain still waits for one of this shard.
      if (draining.has(shard) && !(opts?.forDrainingHome && (admitted.get(shard) ?? 0) > 0)) return null;
      admitted.set(shard, (admitted.get(shard) ?? 0) + 1);
      admissions.push(shard);
      let open = true;
      return () => {
        if (open) admitted.set(shard, (admitted.get(shard) ?? 1) - 1);
        open = false;
      };
    },
    decides: (shard) => own.has(shard),
    refreshRoutes: () => Promise.resolve(),
    syncReads: () => Promise.resolve(true),
    follow: () => undefined,
    onGained: () => undefined,
    handOver: () => Promise.resolve(),
    join: () => undefined,
  };
  return { membership, own, draining, admitted, admissions, storage };
}

/** A student whose home is `home` and a course in shard `section`. */
function pick(home: number, section: number, from = 1): { student: number; course: number } {
  let student = from;
  while (homeShardOf(student, SHARDS) !== home) student += 1;
  let course = 100;
  while (shardOfCourse(course, SHARDS) !== section) course += 1;
  return { student, course };
}

/** Headers of a request that arrived carrying a home mark. */
type Marked = Record<string, string>;

async function createInstance(
  t: { after: (fn: () => Promise<void>) => void },
  own: number[],
  peer: () => string = () => 'http://127.0.0.1:9',
  retryMs = 300,
  /** Sees each request carrying a home mark before the forwarder does; true: answered NOT_OWNER there (its mark never checked). */
  onMarked: (headers: Marked) => boolean = () => false,
  /** Runs just before the forwarder sees each request. */
  beforeForward: () => void = () => undefined,
  /**
   * `syncOk: false`: this instance's read copy cannot catch up (syncReads answers false); `logs` receives the log lines;
   * `minAnswerMs`: the owner's shortest answer window (default here: `retryMs`, so a silent owner is given up quickly).
   */
  extra: { syncOk?: boolean; logs?: Record<string, unknown>[]; minAnswerMs?: number } = {},
) {
  const m = createMembership(new Set(own), peer);
  if (extra.syncOk === false) m.membership.syncReads = () => Promise.resolve(false);
  const logs = extra.logs;
  const app = Fastify({
    loggerInstance: pino({ level: logs ? 'info' : 'silent' }, { write: (line: string) => void logs?.push(JSON.parse(line) as Record<string, unknown>) }),
  });
  t.after(() => app.close());
  let received = 0;
  app.addHook('onRequest', (_request, _reply, done) => {
    received += 1;
    done();
  });
  app.decorateRequest('principal', null);
  app.decorateRequest('forwardedClient', null);
  app.addHook('onRequest', (request, reply, done) => {
    if (request.headers[HOME_HEADER] !== undefined && onMarked({ ...(request.headers as Marked) })) {
      void reply.code(503).send({ code: 'NOT_OWNER' });
      return;
    }
    done();
  });
  app.addHook('onRequest', (request, _reply, done) => {
    // The student's identity travels in Authorization, which a forward passes on as it came.
    request.principal = { id: Number(String(request.headers.authorization).replace('Student ', '')), role: 'student' };
    done();
  });
  app.setErrorHandler((err: Error, _request, reply) => {
    const code = err instanceof EngineError ? err.code : 'INTERNAL';
    void reply.code(err instanceof EngineError ? err.statusCode : 500).send({ code, reason: err.message });
  });
  app.addHook('preValidation', (_request, _reply, done) => {
    beforeForward();
    done();
  });
  app.addHook('preValidation', createForwarder({ cluster: m.membership, retryMs, secret: SECRET, minAnswerMs: extra.minAnswerMs ?? retryMs }));
  /** Requests the handler holds until `open()`. */
  let gate!: () => void;
  let gated = new Promise<void>((r) => (gate = r));
  const decided: number[] = [];
  /** The client address each decided write is counted under (the throttles' view). */
  const clients: string[] = [];
  app.put<{ Body: { course_id: number; n: number } }>('/student/course', async (request) => {
    await gated;
    decided.push(request.body.n);
    clients.push(clientAddress(request));
    return { ok: request.body.n };
  });
  app.get('/student/course', async (request) => ({ read: request.principal?.id }));
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  const put = (student: number, course: number, n: number, headers: Record<string, string> = {}, remoteAddress?: string) =>
    app.inject({
      method: 'PUT',
      url: '/student/course',
      headers: { authorization: `Student ${student}`, ...headers },
      payload: { course_id: course, n },
      ...(remoteAddress ? { remoteAddress } : {}),
    });
  return {
    app,
    address,
    put,
    ...m,
    decided,
    clients,
    received: () => received,
    open() {
      gate();
      gated = Promise.resolve();
    },
  };
}

/** Waits until `ok()` holds (the requests sent have reached the point the test needs). */
async function until(ok: () => boolean, what: string): Promise<void> {
  const end = performance.now() + 5000;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const count = (xs: number[], x: number) => xs.filter((y) => y === x).length;

describe('forwarding while shards drain for a hand-over', () => {
  test("a student's write admitted before the drain, for a section of the home's own shard, is decided here, not sent after a next owner", async (t) => {
    const i = await createInstance(t, [0, 1]);
    const shard = 1;
    const { student, course } = pick(shard, shard);
    // The student's first write is being decided; the second waits behind it (one at a time per student).
    const first = i.put(student, course, 1);
    const second = i.put(student, course, 2);
    await until(() => (i.admitted.get(shard) ?? 0) >= 2, 'both writes to be admitted for the home shard');
    // The shard starts to drain: nothing new is let through, the two admitted writes are awaited.
    i.draining.add(shard);
    const third = i.put(student, course, 3);
    i.open();
    const [r1, r2, r3] = await Promise.all([first, second, third]);
    assert.equal(r1.statusCode, 200);
    assert.equal(r2.statusCode, 200, `the admitted second write is decided here (got ${r2.statusCode} ${r2.body})`);
    assert.deepEqual(i.decided, [1, 2], 'both admitted writes decided, in order');
    assert.equal(i.admitted.get(shard), 0, 'the drain sees every admitted write answered');
    // A write arriving after the drain began is not taken here: with nobody else owning the shard
    // (this test has no other instance) it is refused after the retry window, having changed nothing.
    assert.equal(r3.statusCode, 503);
    assert.equal((r3.json() as { code: string }).code, 'UNAVAILABLE');
  });

  test('two instances draining at once, each holding a home write for a section the other drains: both are decided, neither waits for the other', async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [0], () => instances[1]?.address as string);
    const b = await createInstance(t, [1], () => instances[0]?.address as string);
    instances.push(a, b);
    // Student s (home shard 0, on A) enrolls in a section of shard 1 (B); student u the other way round.
    const s = pick(0, 1);
    const u = pick(1, 0);
    // Each student's first write is held at the section's owner; the second waits at home behind it.
    const s1 = a.put(s.student, s.course, 1);
    const t1 = b.put(u.student, u.course, 3);
    // Each first write admitted at its home and at the section's owner.
    await until(() => count(a.admissions, 0) >= 2 && count(b.admissions, 1) >= 2, 'the first writes to reach the section owners');
    const s2 = a.put(s.student, s.course, 2);
    const t2 = b.put(u.student, u.course, 4);
    await until(() => count(a.admissions, 0) >= 3 && count(b.admissions, 1) >= 3, 'the second writes to be admitted at their homes');
    // Both instances start to drain their shard: each still has to answer its home's second write,
    // which needs the other's draining shard.
    a.draining.add(0);
    b.draining.add(1);
    a.open();
    b.open();
    const replies = await Promise.all([s1, s2, t1, t2]);
    assert.deepEqual(
      replies.map((r) => r.statusCode),
      [200, 200, 200, 200],
      `every admitted write answered 2xx (${replies.map((r) => r.body).join(' ')})`,
    );
    assert.deepEqual(b.decided.slice().sort(), [1, 2], "B decided both of s's writes");
    assert.deepEqual(a.decided.slice().sort(), [3, 4], "A decided both of u's writes");
    assert.equal(a.admitted.get(0), 0);
    assert.equal(b.admitted.get(1), 0);
    // A write arriving at a draining home afterwards is not admitted: the drains end.
    const late = await a.put(s.student, s.course, 5);
    assert.equal(late.statusCode, 503);
  });

  test("a client's own home mark is ignored: the write goes to the student's home first", async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [0], () => instances[1]?.address as string);
    const b = await createInstance(t, [1], () => instances[0]?.address as string);
    instances.push(a, b);
    a.open();
    b.open();
    // Student s's home is A (shard 0); the section is B's. Sent straight to B, marked as if from the home.
    const s = pick(0, 1);
    const r = await b.put(s.student, s.course, 1, { [HOME_HEADER]: '1' });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(a.admissions, [0], "the write went through the student's home (A admitted it for shard 0)");
    assert.deepEqual(b.decided, [1], 'and was decided by the section owner, sent on by the home with a real mark');
  });

  test("a client's own x-engine-forwarded header is ignored: the non-owner forwards its write instead of refusing it with a 5xx", async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [0, 1], () => instances[1]?.address as string);
    const b = await createInstance(t, [], () => instances[0]?.address as string);
    instances.push(a, b);
    a.open();
    const s = pick(0, 1);
    const r = await b.put(s.student, s.course, 5, { 'x-engine-forwarded': '1' });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(a.decided, [5], 'decided by the owner');
  });

  test("a forwarded write is counted under its client's address where it is decided, through every hop; a client cannot set that address itself", async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [0], () => instances[1]?.address as string);
    const b = await createInstance(t, [1], () => instances[0]?.address as string);
    instances.push(a, b);
    a.open();
    b.open();
    // Home A, section B's, sent to B: B -> A (the home) -> B (the owner), two forwards.
    const s = pick(0, 1);
    let r = await b.put(s.student, s.course, 1, {}, '203.0.113.7');
    assert.equal(r.statusCode, 200, r.body);
    // Home A, section A's, sent to B: one forward.
    const s2 = pick(0, 0);
    r = await b.put(s2.student, s2.course, 2, {}, '198.51.100.9');
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(b.decided, [1]);
    assert.deepEqual(a.decided, [2]);
    assert.deepEqual(b.clients, ['203.0.113.7'], 'the client, not the forwarding instance (127.0.0.1)');
    assert.deepEqual(a.clients, ['198.51.100.9']);
    // A client's own header, signed or not, is never taken: straight to the owner, and through a forward.
    const forged = { [CLIENT_HEADER]: `${Date.now()}.x.${Buffer.from('192.0.2.1').toString('base64url')}.bogus` };
    r = await a.put(s2.student, s2.course, 3, forged, '203.0.113.50');
    assert.equal(r.statusCode, 200, r.body);
    r = await b.put(s2.student, s2.course, 4, forged, '203.0.113.51');
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(a.clients, ['198.51.100.9', '203.0.113.50', '203.0.113.51']);
  });

  test('writes reaching an instance that gave its shards up go to the new owner; refused connections and NOT_OWNER are retried until it serves, and its reply is relayed', async (t) => {
    // A has handed its shards over; the new owner B is not reachable at first, then reachable but
    // still loading (NOT_OWNER), then serving.
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    let bReachable = false;
    const a = await createInstance(t, [], () => (bReachable ? (instances[1]?.address as string) : 'http://127.0.0.1:9'), 5000);
    const b = await createInstance(t, [], () => instances[0]?.address as string);
    instances.push(a, b);
    a.open();
    b.open();
    const s = pick(0, 1);
    const reply = a.put(s.student, s.course, 1);
    await new Promise((r) => setTimeout(r, 80));
    bReachable = true;
    await until(() => b.received() >= 1, 'a forward to reach B');
    // B refused it (NOT_OWNER: it does not serve the shards yet); now it does.
    b.own.add(0);
    b.own.add(1);
    const r = await reply;
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(r.json(), { ok: 1 }, "B's answer, relayed unchanged");
    assert.deepEqual(b.decided, [1], 'decided once, by the new owner');
    assert.deepEqual(a.decided, [], 'not by the instance that gave the shards up');
    assert.ok(b.received() >= 2, `the refused forward was retried (B received ${b.received()})`);
  });

  test("a relayed 2xx whose change this instance's read copy cannot catch up with is still answered (it is durable), and says so in the log", async (t) => {
    const owner = await createInstance(t, [0, 1]);
    owner.open();
    const logs: Record<string, unknown>[] = [];
    const forwarder = await createInstance(t, [], () => owner.address, 300, () => false, () => undefined, { syncOk: false, logs });
    const { student, course } = pick(0, 1);
    const r = await forwarder.put(student, course, 7);
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(owner.decided, [7]);
    const warned = logs.find((l) => l['level'] === 40 && /read copy/.test(String(l['msg'])));
    assert.ok(warned, `no warning logged: ${JSON.stringify(logs.map((l) => l['msg']))}`);
  });

  test('token revocations (logout, staff revoking a student, an admin revoking a staff member) are served where they arrive, never forwarded: they must hold there at once', async (t) => {
    // Owns nothing, and the peer refuses connections: anything forwarded would end in 503 after the retry window.
    const i = await createInstance(t, [], () => 'http://127.0.0.1:9', 200);
    for (const url of ['/logout', '/students/40000001/revoke-tokens', '/staff/7/revoke-tokens']) {
      const r = await i.app.inject({ method: 'POST', url, headers: { authorization: 'Student 1' } });
      assert.equal(r.statusCode, 404, `${url} was forwarded: ${r.statusCode} ${r.body}`);
    }
    assert.deepEqual(i.admissions, []);
    const write = await i.app.inject({ method: 'POST', url: '/students/40000001/enroll', headers: { authorization: 'Student 1' } });
    assert.equal(write.statusCode, 503, 'other writes are still forwarded');
  });

  test('a forward that is still refused when the retry window ends is answered 503 with nothing changed', async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [], () => instances[1]?.address as string);
    const b = await createInstance(t, [], () => instances[0]?.address as string);
    instances.push(a, b);
    a.open();
    b.open();
    const s = pick(1, 0);
    const r = await a.put(s.student, s.course, 1);
    assert.equal(r.statusCode, 503);
    assert.equal((r.json() as { code: string }).code, 'NOT_OWNER');
    assert.deepEqual([...a.decided, ...b.decided], [], 'nothing decided anywhere');
  });

  test('with the lease table out of reach, a write for a shard nobody owns is refused at once, not after the retry window', async (t) => {
    // A retry window far longer than the test's timeout: waiting for a takeover would fail the test.
    const a = await createInstance(t, [0, 1], undefined, 60_000);
    a.open();
    a.draining.add(0);
    a.draining.add(1);
    a.storage.unreachable = true;
    const s = pick(0, 0);
    const r = await a.put(s.student, s.course, 1);
    assert.equal(r.statusCode, 503);
    const body = r.json() as { code: string; reason: string };
    assert.equal(body.code, 'UNAVAILABLE');
    assert.match(body.reason, /database is unreachable/);
    assert.deepEqual(a.decided, [], 'nothing decided');
  });

  test('with the lease table out of reach, a write whose last known owner refuses it (NOT_OWNER) is answered 503 at once, not after the retry window', { timeout: 20_000 }, async (t) => {
    // Routes read before the database went away name the peer; the peer's lease lapsed meanwhile.
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [], () => instances[1]?.address as string, 60_000);
    const b = await createInstance(t, [], () => instances[0]?.address as string, 60_000);
    instances.push(a, b);
    a.open();
    b.open();
    a.storage.unreachable = true;
    b.storage.unreachable = true;
    const s = pick(1, 0);
    const t0 = performance.now();
    const r = await a.put(s.student, s.course, 1);
    assert.ok(performance.now() - t0 < 5000, `answered after ${Math.round(performance.now() - t0)} ms`);
    assert.equal(r.statusCode, 503);
    const body = r.json() as { code: string; reason: string };
    assert.equal(body.code, 'UNAVAILABLE');
    assert.match(body.reason, /database is unreachable/);
    assert.deepEqual([...a.decided, ...b.decided], [], 'nothing decided anywhere');
  });

  test('a home mark is taken once and only while it is fresh: a forwarded request captured and sent again is a client write, routed through the home', async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    /** Marked requests B received; the first is refused before its mark is checked, so it stays unused. */
    const captured: Marked[] = [];
    const a = await createInstance(t, [0], () => instances[1]?.address as string, 2000);
    const b = await createInstance(t, [1], () => instances[0]?.address as string, 300, (h) => captured.push(h) === 1);
    instances.push(a, b);
    a.open();
    b.open();
    const s = pick(0, 1);
    const first = await a.put(s.student, s.course, 1);
    assert.equal(first.statusCode, 200, first.body);
    assert.equal(captured.length, 2, 'the home retried its refused forward');
    assert.notEqual(captured[0]?.[HOME_HEADER], captured[1]?.[HOME_HEADER], 'each send carries a mark of its own');
    assert.deepEqual(a.admissions, [0]);
    assert.deepEqual(b.decided, [1]);
    const again = (h: Marked | undefined, n: number) =>
      b.put(s.student, s.course, n, { [HOME_HEADER]: h?.[HOME_HEADER] as string, [REQUEST_ID_HEADER]: h?.[REQUEST_ID_HEADER] as string });

    // The mark B took: sent again, it is ignored and the write goes to the student's home first.
    const replayed = await again(captured[1], 2);
    assert.equal(replayed.statusCode, 200, replayed.body);
    assert.deepEqual(a.admissions, [0, 0], 'the replayed write went through the home');

    // The unused mark, past its window (B's clock 1 s beyond it): ignored the same way.
    const realNow = Date.now;
    t.mock.method(Date, 'now', () => realNow() + MARK_MAX_AGE_MS + 1000);
    const stale = await again(captured[0], 3);
    t.mock.restoreAll();
    assert.equal(stale.statusCode, 200, stale.body);
    assert.deepEqual(a.admissions, [0, 0, 0], 'the stale mark was ignored: the write went through the home');

    // The control: the same unused mark, fresh, is a home's mark, decided at B without the home.
    const fresh = await again(captured[0], 4);
    assert.equal(fresh.statusCode, 200, fresh.body);
    assert.deepEqual(a.admissions, [0, 0, 0], 'a fresh unused mark is taken: the home was not asked');
    assert.deepEqual(b.decided, [1, 2, 3, 4]);
  });

  test('a mark stamped ahead of the receiver is remembered until its own window ends, to the millisecond', async (t) => {
    const instances: Awaited<ReturnType<typeof createInstance>>[] = [];
    const a = await createInstance(t, [0], () => instances[1]?.address as string, 2000);
    const b = await createInstance(t, [1], () => instances[0]?.address as string);
    instances.push(a, b);
    a.open();
    b.open();
    const s = pick(0, 1);
    // A mark as an instance whose clock runs 30 s ahead of B's makes it (the format of
    // forwarding.ts's markFor, with the key both derive from the shared secret): at the edge of B's window.
    // B's clock is held still while it takes the mark, so the edge below is exact.
    const takenAt = Date.now();
    const sentAt = takenAt + MARK_MAX_AGE_MS;
    const stamp = `${sentAt}.test-nonce`;
    const requestId = 'req-ahead';
    const key = createHmac('sha256', SECRET).update('engine-forwarding-marks').digest();
    const mac = createHmac('sha256', key).update(`${HOME_HEADER}\nPUT\n/student/course\n${requestId}\n${stamp}`).digest('base64url');
    const send = (n: number) => b.put(s.student, s.course, n, { [HOME_HEADER]: `${stamp}.${mac}`, [REQUEST_ID_HEADER]: requestId });

    // Taken once: decided at B, the home not asked.
    t.mock.method(Date, 'now', () => takenAt);
    const taken = await send(1);
    assert.equal(taken.statusCode, 200, taken.body);
    assert.deepEqual(a.admissions, [], 'a valid unused mark is taken without the home');
    // At the last millisecond its own time is inside B's window (exactly 60 s after B took it): still
    // remembered (a memory of 60 s from taking, as before 7643687, forgot it at this very millisecond).
    t.mock.method(Date, 'now', () => sentAt + MARK_MAX_AGE_MS);
    const atEdge = await send(2);
    // One millisecond later the window itself refuses it.
    t.mock.method(Date, 'now', () => sentAt + MARK_MAX_AGE_MS + 1);
    const past = await send(3);
    t.mock.restoreAll();
    assert.equal(atEdge.statusCode, 200, atEdge.body);
    assert.equal(past.statusCode, 200, past.body);
    assert.deepEqual(a.admissions, [0, 0], 'both replays were client writes, routed through the home');
    assert.deepEqual(b.decided, [1, 2, 3]);
  });
});

describe('forwarding over pooled connections', () => {
  test("a forward is never written on a pooled connection the owner is closing for idleness, even when this instance's event loop is busy at that moment", async (t) => {
    // The owner in a process of its own (its keep-alive timer must fire while this one is busy),
    // with a short keep-alive timeout: Node announces 2 s and closes an idle connection after 3 s.
    const owner = spawn(
      process.execPath,
      [
        '-e',
        `const http = require('node:http');
         const s = http.createServer((req, res) => { req.resume(); req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{"ok":true}'); }); });
         s.keepAliveTimeout = 2000;
         s.listen(0, '127.0.0.1', () => process.stdout.write('port ' + s.address().port + ';'));`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    t.after(() => owner.kill());
    let out = '';
    owner.stdout.on('data', (c: Buffer) => (out += c.toString()));
    await until(() => /port \d+/.test(out), 'the owner to listen');
    const ownerAddress = `http://127.0.0.1:${/port (\d+)/.exec(out)?.[1]}`;
    // Busy across the moment the owner closes the connection, just before the second forward is
    // written: its close arrives while nothing here reads it (as under a rush).
    let busy = false;
    const a = await createInstance(t, [], () => ownerAddress, 300, () => false, () => {
      const until = performance.now() + 400;
      while (busy && performance.now() < until);
    });
    a.open();
    const s = pick(0, 1);
    const first = await a.put(s.student, s.course, 1);
    assert.equal(first.statusCode, 200, first.body);
    await new Promise((r) => setTimeout(r, 2_900));
    busy = true;
    const second = await a.put(s.student, s.course, 2);
    assert.equal(second.statusCode, 200, `the second forward: ${second.body}`);
    assert.deepEqual(second.json(), { ok: true });
  });
});

/** Sends a PUT over a real connection (inject has none to lose); `abort()` drops it as a killed peer's would be. */
function putOverHttp(address: string, student: number, course: number, n: number) {
  const body = JSON.stringify({ course_id: course, n });
  const req = http.request(`${address}/student/course`, {
    method: 'PUT',
    agent: false,
    headers: { authorization: `Student ${student}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
  });
  const answered = new Promise<number>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
  });
  req.end(body);
  return { answered, abort: () => req.destroy() };
}

/** `p`, or 'timeout' after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref())]);
}

describe("every forwarded write settles, and one stuck write never blocks the student's later ones", () => {
  test('a forward to an owner that accepts the connection and never answers (stopped, SIGSTOP) is answered 503 in doubt within the forward time', async (t) => {
    const sockets: net.Socket[] = [];
    const stalled = net.createServer((sock) => void sockets.push(sock));
    await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', r));
    t.after(() => {
      for (const sock of sockets) sock.destroy();
      stalled.close();
    });
    const address = `http://127.0.0.1:${(stalled.address() as net.AddressInfo).port}`;
    const a = await createInstance(t, [], () => address, 400);
    a.open();
    const s = pick(0, 1);
    const t0 = performance.now();
    const r = await within(a.put(s.student, s.course, 1), 5000);
    assert.notEqual(r, 'timeout', 'the forward was still unanswered after 5 s (a socket timeout of 30 s held it)');
    if (r === 'timeout') return;
    assert.equal(r.statusCode, 503, r.body);
    const body = r.json() as { code: string; reason: string };
    assert.equal(body.code, 'UNAVAILABLE');
    assert.match(body.reason, /its outcome is unknown, check before retrying/);
    assert.ok(performance.now() - t0 < 2000, `answered after ${Math.round(performance.now() - t0)} ms`);
  });

  test('FORWARD_RETRY_MS=0 retries nothing but still waits for the owner\'s answer (probe R: every forward was 503 at once)', async (t) => {
    const owner = await createInstance(t, [0, 1]);
    const a = await createInstance(t, [], () => owner.address, 0, undefined, undefined, { minAnswerMs: MIN_FORWARD_ANSWER_MS });
    a.open();
    const s = pick(0, 1);
    const answered = a.put(s.student, s.course, 7);
    // The owner takes 300 ms to decide (as a broker confirm may): the forward must wait for it.
    await new Promise((r) => setTimeout(r, 300));
    owner.open();
    const r = await answered;
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(r.json(), { ok: 7 });
    assert.deepEqual(owner.decided, [7]);
  });

  test("a write whose client left while it waited behind the student's previous one gives its turn up: the student's next write is answered", async (t) => {
    const a = await createInstance(t, [0, 1], undefined, 5000);
    const s = pick(0, 0);
    const first = putOverHttp(a.address, s.student, s.course, 1);
    await until(() => a.admissions.length >= 2, 'the first write to be admitted (held in its handler)');
    const second = putOverHttp(a.address, s.student, s.course, 2);
    await until(() => a.admissions.length >= 3, 'the second write to reach the home and wait its turn');
    await new Promise((r) => setTimeout(r, 50));
    // As when the instance that forwarded it is killed (-9): its connection is gone before its turn.
    second.abort();
    await new Promise((r) => setTimeout(r, 50));
    a.open();
    assert.equal(await first.answered, 200);
    const third = await within(a.put(s.student, s.course, 3), 3000);
    assert.notEqual(third, 'timeout', "the student's next write was never answered (the chain stayed blocked)");
    if (third === 'timeout') return;
    assert.equal(third.statusCode, 200, third.body);
    assert.deepEqual(a.decided, [1, 3], 'the write whose client left was not decided');
  });

  test("a write waits for the student's previous one at most the forward time, then is refused with nothing changed", async (t) => {
    const a = await createInstance(t, [0, 1], undefined, 300);
    const s = pick(0, 0);
    const first = a.put(s.student, s.course, 1);
    await until(() => a.admissions.length >= 2, 'the first write to be admitted (held in its handler)');
    const t0 = performance.now();
    const second = await within(a.put(s.student, s.course, 2), 3000);
    assert.notEqual(second, 'timeout', 'the second write waited for the stuck one without bound');
    if (second === 'timeout') return;
    assert.equal(second.statusCode, 503, second.body);
    assert.equal((second.json() as { code: string }).code, 'UNAVAILABLE');
    assert.match((second.json() as { reason: string }).reason, /previous change is still in progress; nothing was changed/);
    assert.ok(performance.now() - t0 < 1500, `refused after ${Math.round(performance.now() - t0)} ms`);
    a.open();
    assert.equal((await first).statusCode, 200);
    assert.equal((await a.put(s.student, s.course, 3)).statusCode, 200, 'the next write goes through once the stuck one is answered');
    assert.deepEqual(a.decided, [1, 3]);
  });
});

describe('read-your-writes when the read copy lags a relayed change', () => {
  test("after a relayed 2xx the copy could not catch up with, that client's reads here are refused (not stale) until it has; others read on", async (t) => {
    const owner = await createInstance(t, [0, 1]);
    owner.open();
    const forwarder = await createInstance(t, [], () => owner.address, 300, () => false, () => undefined, { syncOk: false });
    const { student, course } = pick(0, 1);
    const w = await forwarder.put(student, course, 7);
    assert.equal(w.statusCode, 200, w.body);
    assert.equal(w.headers['connection'], 'close', 'the client is asked to leave this instance');
    const read = (id: number) => forwarder.app.inject({ method: 'GET', url: '/student/course', headers: { authorization: `Student ${id}` } });
    const mine = await read(student);
    assert.equal(mine.statusCode, 503, `a read that could show the state before the change: ${mine.body}`);
    assert.equal((mine.json() as { code: string }).code, 'UNAVAILABLE');
    assert.equal((await read(student + 2)).statusCode, 200, "another client's read is not held");
    // The copy catches up: the client reads again.
    forwarder.membership.syncReads = () => Promise.resolve(true);
    assert.equal((await read(student)).statusCode, 200);
  });
});
