import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createDatabaseDeliveryQueue } from '../src/persistence/delivery-queue.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import type { DomainEvent, Persistence } from '../src/persistence/types.js';
import { S, STAFF } from './support/http-fixture.js';
import { deleteQueues } from './support/amqp.js';
import { rawHead } from './support/http-json.js';
import { openSse, quietLogger, startNoticesWorld, type NoticesWorld } from './support/notices-world.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * GET /me/events through a real listening server and a real HTTP client, on the embedded store
 * (PGlite files in a temporary directory, so the engine can be restarted on them).
 */

/** The embedded store with a switch that makes appends fail, as when storage is lost. */
function failable(inner: Persistence): Persistence & { failAppends: boolean } {
  const p = {
    failAppends: false,
    get mode() {
      return inner.mode;
    },
    notices: inner.notices,
    migrate: () => inner.migrate(),
    load: () => inner.load(),
    append: (events: DomainEvent[]) => (p.failAppends ? Promise.reject(new Error('injected append failure')) : inner.append(events)),
    recentTransitions: (c: number, g: number, l: number) => inner.recentTransitions(c, g, l),
    studentTransitions: (id: number, l: number) => inner.studentTransitions(id, l),
    fillHistory: (opts: Parameters<Persistence['fillHistory']>[0]) => inner.fillHistory(opts),
    readiness: () => inner.readiness(),
    close: () => inner.close(),
  };
  return p;
}

const dir = mkdtempSync(join(tmpdir(), 'notices-sse-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function openStore(): Promise<Persistence & { failAppends: boolean }> {
  const store = await createEmbeddedStore({ dataDir: join(dir, 'pglite'), logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
  await store.migrate();
  return failable(store);
}

describe('GET /me/events (SSE, embedded store)', { timeout: 120_000 }, () => {
  test('promotion, queue moves, staff drops and section changes arrive live; Last-Event-ID resumes, also after a restart', async () => {
    let store = await openStore();
    let w: NoticesWorld = await startNoticesWorld({ persistence: store, seed: true });
    const staff = w.token(STAFF, 'staff');
    const enroll = async (id: number) => assert.equal((await w.call('PUT', '/student/course', w.token(id), { course_id: 101, group_id: 1 })).status, 204);
    // Algorithms 101/1: 2 seats, 2 reserve places.
    await enroll(S.f1);
    await enroll(S.f2);
    await enroll(S.alice); // queued 1st
    await enroll(S.f3); // queued 2nd

    const alice = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.alice)}` });
    const f3 = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.f3)}` });
    assert.equal(alice.status, 200);
    await alice.waitFor((e) => e.some((x) => x.event === 'ready'));
    await f3.waitFor((e) => e.some((x) => x.event === 'ready'));

    // f1 leaves: alice is promoted (with the section), f3 moves up to place 1.
    assert.equal((await w.call('DELETE', '/student/course?course_id=101', w.token(S.f1))).status, 204);
    await alice.waitFor((e) => e.some((x) => x.data?.kind === 'promoted'), 15_000, 'promoted');
    const promoted = alice.notices().find((n) => n.kind === 'promoted');
    assert.equal(promoted.course_id, 101);
    assert.equal(promoted.group_id, 1);
    assert.equal(promoted.section_name, 'Algorithms');
    assert.equal(promoted.student_id, S.alice);
    assert.match(promoted.id, /^101-1-\d+$/);
    assert.equal(alice.events.find((e) => e.data?.kind === 'promoted')?.id, promoted.id, 'the SSE id is the notice id');
    await f3.waitFor((e) => e.some((x) => x.data?.kind === 'queueMoved'), 15_000, 'queueMoved');
    const moved = f3.notices().find((n) => n.kind === 'queueMoved');
    assert.equal(moved.queue_position, 1);
    // Nobody is told about someone else's change.
    assert.ok(alice.notices().every((n) => n.student_id === S.alice));
    assert.ok(f3.notices().every((n) => n.student_id === S.f3));

    // f3 goes away; meanwhile staff drop f3. Reconnecting with Last-Event-ID brings the missed notice.
    const f3Last = f3.events.filter((e) => e.id !== undefined).at(-1)!.id!;
    f3.close();
    assert.equal((await w.call('DELETE', `/staff/force-std?std_id=${S.f3}&course_id=101&group_id=1`, staff)).status, 204);
    const f3b = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.f3)}`, 'last-event-id': f3Last });
    await f3b.waitFor((e) => e.some((x) => x.data?.kind === 'droppedByStaff'), 15_000, 'droppedByStaff after resume');
    assert.equal(f3b.events.find((e) => e.event === 'ready')?.data.resumed, true);
    assert.equal(f3b.notices().filter((n) => n.kind === 'queueMoved').length, 0, 'nothing at or before Last-Event-ID is repeated');
    f3b.close();

    // Staff change and then close the section: its members are told.
    assert.equal((await w.call('PATCH', '/sections/101/1', staff, { capacity: 5 })).status, 200);
    assert.equal((await w.call('POST', '/sections/101/1/close', staff)).status, 200);
    await alice.waitFor((e) => e.some((x) => x.data?.kind === 'sectionClosed'), 15_000, 'sectionClosed');
    const changed = alice.notices().find((n) => n.kind === 'sectionChanged');
    assert.deepEqual(changed.change, { capacity: 5 });
    const liveKinds = alice.notices().map((n) => n.kind);
    assert.deepEqual(liveKinds, ['promoted', 'sectionChanged', 'sectionClosed']);
    const liveIds = alice.notices().map((n) => n.id);
    alice.close();

    // Restart the engine on the same files; resuming from the promotion replays the rest, in order.
    await w.stop();
    await store.close();
    store = await openStore();
    w = await startNoticesWorld({ persistence: store, seed: false });
    const again = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.alice)}`, 'last-event-id': promoted.id });
    await again.waitFor((e) => e.filter((x) => x.event === 'notice').length >= 2, 15_000, 'resumed notices after restart');
    assert.deepEqual(
      again.notices().map((n) => [n.kind, n.id]),
      [
        ['sectionChanged', liveIds[1]],
        ['sectionClosed', liveIds[2]],
      ],
    );
    // An id the database never held: the client is told to reload instead of being sent nothing.
    const unknown = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.alice)}`, 'last-event-id': '101-1-999999' });
    await unknown.waitFor((e) => e.some((x) => x.event === 'reset'), 20_000, 'reset');
    unknown.close();
    again.close();
    await w.stop();
    await store.close();
  });

  test('only acknowledged changes are announced', async () => {
    const store = await openStore();
    // A fresh data set under new ids, on the same files.
    const w = await startNoticesWorld({ persistence: store, seed: false });
    const staff = w.token(STAFF, 'staff');
    const course = 701;
    assert.equal(
      (
        await w.call('POST', '/sections', staff, {
          course_id: course,
          group_id: 1,
          name: 'Durability',
          units: 1,
          capacity: 3,
          reserve_capacity: 0,
        })
      ).status,
      201,
    );
    assert.equal((await w.call('PUT', '/student/course', w.token(S.bea), { course_id: course, group_id: 1 })).status, 204);
    const bea = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.bea)}` });
    await bea.waitFor((e) => e.some((x) => x.event === 'ready'));
    store.failAppends = true;
    const refused = await w.call('POST', `/sections/${course}/1/close`, staff);
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    store.failAppends = false;
    assert.equal((await w.call('POST', `/sections/${course}/1/close`, staff)).status, 200);
    await bea.waitFor((e) => e.some((x) => x.data?.kind === 'sectionClosed'), 15_000, 'sectionClosed');
    // Give a wrongly announced notice time to show up too, then count.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bea.notices().filter((n) => n.kind === 'sectionClosed').length, 1, 'the refused close was not announced');
    bea.close();
    await w.stop();
    await store.close();
  });

  test('queue moves: at most one queueMoved per student and section per window, carrying the latest place; resume gives the current place', async () => {
    const store = await openStore();
    // A window far longer than the test: only the first move of the window goes out by itself.
    const w = await startNoticesWorld({ persistence: store, seed: false, hub: { queueMoveWindowMs: 3_600_000 } });
    const staff = w.token(STAFF, 'staff');
    const course = 702;
    const section = { course_id: course, group_id: 1, name: 'Windows', units: 1, capacity: 1, reserve_capacity: 5 };
    assert.equal((await w.call('POST', '/sections', staff, section)).status, 201);
    const enroll = async (id: number) => assert.equal((await w.call('PUT', '/student/course', w.token(id), { course_id: course, group_id: 1 })).status, 204);
    const drop = async (id: number) => assert.equal((await w.call('DELETE', `/student/course?course_id=${course}`, w.token(id))).status, 204);
    for (const id of [S.alice, S.f1, S.f2, S.f3, S.f4]) await enroll(id); // alice seated; f1..f4 queued 1..4
    const f4 = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.f4)}` });
    await f4.waitFor((e) => e.some((x) => x.event === 'ready'));
    const moves = () => f4.notices().filter((n) => n.kind === 'queueMoved');
    const changes = () => f4.notices().filter((n) => n.kind === 'sectionChanged').length;

    await drop(S.alice); // f1 promoted; f4 moves to place 3: the first move of the window, sent at once
    await f4.waitFor(() => moves().length === 1, 15_000, 'first queueMoved');
    assert.equal(moves()[0].queue_position, 3);
    const firstId = moves()[0].id as string;

    await drop(S.f2); // f4 to place 2: held for the window
    await drop(S.f3); // f4 to place 1: held, replaces the place above
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(moves().length, 1, 'moves within the window are held');
    // A staff change is told at once, after the drops (notices go out in log order). The move held
    // for f4 goes out just before it (probe N: sent after it, on the window's end, a client that
    // reconnected with the change's id as Last-Event-ID was never told its place).
    assert.equal((await w.call('PATCH', `/sections/${course}/1`, staff, { reserve_capacity: 6 })).status, 200);
    await f4.waitFor(() => changes() === 1, 15_000, 'sectionChanged');
    const changedId = f4.notices().find((n) => n.kind === 'sectionChanged').id as string;
    const changedSeq = Number(changedId.split('-')[2]);
    assert.equal(moves().length, 2, 'the held move is sent with the change');
    const latest = moves()[1];
    assert.equal(latest.queue_position, 1, 'only the latest place is sent');
    assert.equal(latest.id, `${course}-1-${changedSeq - 1}`, 'with the id of the latest transition that moved the student');
    const order = f4.notices().map((n) => n.id as string);
    assert.ok(order.indexOf(latest.id as string) < order.indexOf(changedId), `notices in log order: ${order.join(', ')}`);
    w.hub.flushQueueMoves(); // what the window's end does: nothing is left to send
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(moves().length, 2, 'a move is sent once');
    f4.close();

    // Resuming from the first move (the client missed the rest) gives the current place.
    const again = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.f4)}`, 'last-event-id': firstId });
    await again.waitFor((e) => e.some((x) => x.data?.kind === 'sectionChanged'), 15_000, 'resumed');
    assert.deepEqual(
      again.notices().filter((n) => n.kind === 'queueMoved').map((n) => n.queue_position),
      [1],
    );
    again.close();
    await w.stop();
    await store.close();
  });

  test('authentication: header or one-use ticket; tokens in URLs, staff and bad ids are refused', async () => {
    const store = await openStore();
    const w = await startNoticesWorld({ persistence: store, seed: false, queue: (p) => createDatabaseDeliveryQueue({ store: p.notices!, logger: quietLogger }) });
    const none = await openSse(`${w.base}/me/events`);
    assert.equal(none.status, 401);
    const inUrl = await openSse(`${w.base}/me/events?token=${w.token(S.alice)}`);
    assert.equal(inUrl.status, 401);
    assert.match(JSON.parse(inUrl.body).reason, /not accepted in URLs/);
    const staff = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(STAFF, 'staff')}` });
    assert.equal(staff.status, 403);
    const bad = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.alice)}`, 'last-event-id': 'hello' });
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.body).code, 'BAD_REQUEST');

    const t = await w.call('POST', '/me/events-ticket', w.token(S.alice));
    assert.equal(t.status, 200);
    const byTicket = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(t.body.ticket)}`);
    assert.equal(byTicket.status, 200);
    await byTicket.waitFor((e) => e.some((x) => x.event === 'ready' && x.data.student_id === S.alice));
    const reused = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(t.body.ticket)}`);
    assert.equal(reused.status, 401, 'a ticket opens one stream only');
    byTicket.close();

    // Per-student cap.
    const open = [];
    for (let i = 0; i < w.hub.maxStreamsPerStudent; i++) open.push(await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.dan)}` }));
    const over = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.dan)}` });
    assert.equal(over.status, 429);
    assert.equal(JSON.parse(over.body).code, 'TOO_MANY_STREAMS');
    for (const c of open) c.close();
    const end = Date.now() + 15_000;
    while (w.hub.openStreams > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.equal(w.hub.openStreams, 0, 'closed streams leave the hub');

    // Documented with the rest of the API.
    const docs = await w.call('GET', '/docs/json', null);
    assert.equal(docs.status, 200);
    for (const path of ['/me/events', '/me/events-ticket', '/me/watches', '/me/watches/{courseId}/{groupId}', '/webhooks', '/webhooks/{id}/deliveries']) {
      assert.ok(docs.body.paths[path], `${path} is in the OpenAPI document`);
    }
    await w.stop();
    await store.close();
  });

  test('HEAD /me/events is answered at once with the head a GET gets, no body, and takes no stream slot', async () => {
    const store = await openStore();
    const w = await startNoticesWorld({ persistence: store, seed: false });
    const auth = { authorization: `Bearer ${w.token(S.dan)}` };
    // Over a real socket: more HEADs than the student's stream cap, one after another.
    for (let i = 0; i < w.hub.maxStreamsPerStudent + 1; i++) {
      const h = await rawHead(w.base, '/me/events', auth);
      assert.equal(h.status, 200);
      assert.match(h.headers['content-type'] ?? '', /^text\/event-stream/);
      assert.equal(h.headers['cache-control'], 'no-store');
      assert.ok(h.headers['x-request-id'], 'the headers set before the stream are kept');
      assert.equal(h.rest, '', 'no body after the head');
    }
    // Several at once, through app.inject as well.
    const heads = await Promise.all(Array.from({ length: w.hub.maxStreamsPerStudent }, () => w.app.inject({ method: 'HEAD', url: '/me/events', headers: auth })));
    for (const h of heads) {
      assert.equal(h.statusCode, 200);
      assert.equal(h.body, '');
    }
    assert.equal(w.hub.openStreams, 0, 'a HEAD holds no stream');
    // The student's real streams still open, up to the cap.
    const open = [];
    for (let i = 0; i < w.hub.maxStreamsPerStudent; i++) {
      const c = await openSse(`${w.base}/me/events`, auth);
      assert.equal(c.status, 200, `stream ${i + 1} after the HEADs`);
      open.push(c);
    }
    // The refusals a GET gets, as heads without a body.
    assert.equal((await rawHead(w.base, '/me/events', auth)).status, 429, 'over the cap, like the GET');
    assert.equal((await rawHead(w.base, '/me/events')).status, 401);
    assert.equal((await rawHead(w.base, '/me/events', { authorization: `Bearer ${w.token(STAFF, 'staff')}` })).status, 403);
    assert.equal((await rawHead(w.base, '/me/events', { authorization: `Bearer ${w.token(S.alice)}`, 'last-event-id': 'hello' })).status, 400);
    for (const c of open) c.close();
    await w.stop();
    await store.close();
  });

  test('a stream of a revoked session ends within a keep-alive, without waiting for a notice (logout, revoke-tokens, a new password)', async () => {
    const store = await openStore();
    const w = await startNoticesWorld({ persistence: store, seed: true, streamKeepAliveMs: 200 });
    const streamOf = async (token: string) => {
      const c = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${token}` });
      assert.equal(c.status, 200, c.body);
      await c.waitFor((e) => e.some((x) => x.event === 'ready'));
      return c;
    };
    const expired = (c: Awaited<ReturnType<typeof streamOf>>, what: string) =>
      c.waitFor((e) => e.some((x) => x.event === 'expired' && /revoked/.test(x.data.reason)), 3000, `${what}: the stream to end as revoked`);
    // Logout of the stream's own session.
    const alice = w.token(S.alice);
    const a = await streamOf(alice);
    assert.equal((await w.call('POST', '/logout', alice)).status, 204);
    await expired(a, 'logout');
    // Staff revoke every token of a student.
    const bea = await streamOf(w.token(S.bea));
    w.clock.now += 1;
    assert.equal((await w.call('POST', `/students/${S.bea}/revoke-tokens`, w.token(STAFF, 'staff'))).status, 204);
    await expired(bea, 'revoke-tokens');
    // A student's own change of password ends their other sessions' streams, not the new token's.
    w.clock.now += 1;
    const carl = await streamOf(w.token(S.carl));
    w.clock.now += 1;
    const changed = await w.call('POST', '/me/password', w.token(S.carl), { current_password: 'pw', new_password: 'a new one, long enough' });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));
    await expired(carl, 'change of password');
    const fresh = await streamOf(changed.body.token);
    await new Promise((r) => setTimeout(r, 600));
    assert.ok(!fresh.events.some((x) => x.event === 'expired'), 'the new session keeps its stream');
    fresh.close();
    // A stream nobody revoked is kept (keep-alives only).
    const dan = await streamOf(w.token(S.dan));
    await new Promise((r) => setTimeout(r, 600));
    assert.ok(!dan.events.some((x) => x.event === 'expired'));
    dan.close();
    await w.stop();
    await store.close();
  });
});

describe('GET /me/events (SSE, full mode: PostgreSQL + RabbitMQ)', { timeout: 180_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  test('live notices, then Last-Event-ID resumption after the engine is restarted on the same stream and database', { skip }, async () => {
    const db = await createTestDatabase();
    const prefix = uniqueName('notices_sse');
    const open = async () => {
      const s = await createFullStore({ databaseUrl: db.url, rabbitmqUrl: AMQP_URL, prefix, logger: quietLogger, batchMaxEvents: 500, runBatcher: true });
      await s.migrate();
      return s;
    };
    try {
      let store = await open();
      let w = await startNoticesWorld({ persistence: store, seed: true });
      const staff = w.token(STAFF, 'staff');
      for (const id of [S.f1, S.f2, S.alice, S.f3]) {
        assert.equal((await w.call('PUT', '/student/course', w.token(id), { course_id: 101, group_id: 1 })).status, 204);
      }
      const f3 = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.f3)}` });
      await f3.waitFor((e) => e.some((x) => x.event === 'ready'));
      assert.equal((await w.call('DELETE', '/student/course?course_id=101', w.token(S.f1))).status, 204);
      await f3.waitFor((e) => e.some((x) => x.data?.kind === 'queueMoved'), 15_000, 'queueMoved');
      const last = f3.events.filter((e) => e.id !== undefined).at(-1)!.id!;
      f3.close();
      // While f3 is away: promoted (f2 leaves), then the section is changed.
      assert.equal((await w.call('DELETE', '/student/course?course_id=101', w.token(S.f2))).status, 204);
      assert.equal((await w.call('PATCH', '/sections/101/1', staff, { reserve_capacity: 4 })).status, 200);
      await w.stop();
      await store.close();

      store = await open();
      w = await startNoticesWorld({ persistence: store, seed: false });
      const again = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.f3)}`, 'last-event-id': last });
      await again.waitFor((e) => e.filter((x) => x.event === 'notice').length >= 2, 20_000, 'resumed notices');
      assert.deepEqual(
        again.notices().map((n) => n.kind),
        ['promoted', 'sectionChanged'],
      );
      assert.deepEqual(again.notices()[1].change, { reserve_capacity: 4 });
      again.close();
      // A client that leaves while its resume still waits for the database leaves no stream behind.
      const gone = http.get(`${w.base}/me/events`, { headers: { authorization: `Bearer ${w.token(S.f3)}`, 'last-event-id': '101-1-999999' } });
      gone.on('error', () => undefined);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(w.hub.openStreams, 1, 'held while the resume waits');
      gone.destroy();
      const end = Date.now() + 30_000;
      while (w.hub.openStreams > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      assert.equal(w.hub.openStreams, 0);
      await w.stop();
      await store.close();
    } finally {
      await deleteQueues(Object.values(streamNames(prefix))).catch(() => undefined);
      await db.drop();
    }
  });
});
