import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createFeedTickets } from '../src/http/admin/feed-tickets.js';
import { TICKETS_PER_STUDENT } from '../src/http/routes/me-events.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { S, STAFF } from './support/http-fixture.js';
import { openSse, quietLogger, startNoticesWorld, type NoticesWorld } from './support/notices-world.js';

/**
 * The ticket route of GET /me/events, as a browser page uses it (probe finding 2): a ticket opens
 * one stream once, so a page resumes after a drop with a new ticket and the last id it received in
 * the query; and one student asking for tickets in a loop replaces only their own.
 */

async function world(): Promise<{ w: NoticesWorld; stop: () => Promise<void> }> {
  const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
  await store.migrate();
  const w = await startNoticesWorld({ persistence: store, seed: true });
  return {
    w,
    stop: async () => {
      await w.stop();
      await store.close();
    },
  };
}

async function ticket(w: NoticesWorld, student: number): Promise<string> {
  const r = await w.app.inject({ method: 'POST', url: '/me/events-ticket', headers: { authorization: `Bearer ${w.token(student)}` } });
  assert.equal(r.statusCode, 200, r.body);
  return (r.json() as { ticket: string }).ticket;
}

describe('GET /me/events with tickets (embedded store, real sockets)', { timeout: 120_000 }, () => {
  test('a page resumes with a new ticket and last_event_id (or lastEventId); a used ticket stays refused', async () => {
    const { w, stop } = await world();
    try {
      const staff = w.token(STAFF, 'staff');
      // Algorithms 101/1: 2 seats. alice queues, f1 leaves: alice is promoted.
      for (const id of [S.f1, S.f2, S.alice]) assert.equal((await w.call('PUT', '/student/course', w.token(id), { course_id: 101, group_id: 1 })).status, 204);
      const first = await ticket(w, S.alice);
      const page = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(first)}`);
      assert.equal(page.status, 200);
      await page.waitFor((e) => e.some((x) => x.event === 'ready'));
      assert.equal((await w.call('DELETE', '/student/course?course_id=101', w.token(S.f1))).status, 204);
      await page.waitFor((e) => e.some((x) => x.data?.kind === 'promoted'), 15_000, 'promoted');
      const lastSeen = page.events.filter((e) => e.id !== undefined).at(-1)!.id!;
      page.close();

      // While the page is away, staff change and close the section.
      assert.equal((await w.call('PATCH', '/sections/101/1', staff, { capacity: 5 })).status, 200);
      assert.equal((await w.call('POST', '/sections/101/1/close', staff)).status, 200);

      // EventSource's own reconnect: the same URL with Last-Event-ID. The ticket was used: 401.
      const auto = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(first)}`, { 'last-event-id': lastSeen });
      assert.equal(auto.status, 401);
      assert.equal(JSON.parse(auto.body).code, 'UNAUTHENTICATED');
      const usedWithQuery = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(first)}&last_event_id=${lastSeen}`);
      assert.equal(usedWithQuery.status, 401, 'a used ticket opens nothing, with or without a resume point');

      // The page's own reconnect: a new ticket and the last id it received.
      for (const param of ['last_event_id', 'lastEventId']) {
        const again = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(await ticket(w, S.alice))}&${param}=${encodeURIComponent(lastSeen)}`);
        assert.equal(again.status, 200, again.body);
        await again.waitFor((e) => e.some((x) => x.data?.kind === 'sectionClosed'), 15_000, `missed notices after resuming with ${param}`);
        assert.equal(again.events.find((e) => e.event === 'ready')?.data.resumed, true, `${param}: the stream says it resumed`);
        assert.deepEqual(
          again.notices().map((n) => n.kind),
          ['sectionChanged', 'sectionClosed'],
          `${param}: what was missed, in order, and nothing at or before the last id seen`,
        );
        again.close();
      }

      // A malformed resume point is refused as the header's is.
      const bad = await openSse(`${w.base}/me/events?ticket=${encodeURIComponent(await ticket(w, S.alice))}&last_event_id=hello`);
      assert.equal(bad.status, 400);
      assert.equal(JSON.parse(bad.body).code, 'BAD_REQUEST');
      assert.match(JSON.parse(bad.body).reason, /last_event_id/);

      // Documented in the OpenAPI description.
      const docs = (await w.app.inject({ method: 'GET', url: '/docs/json' })).json() as {
        paths: Record<string, Record<string, { description?: string; parameters?: { name: string }[] }>>;
      };
      const get = docs.paths['/me/events']!.get!;
      assert.ok(get.parameters?.some((p) => p.name === 'last_event_id'), 'last_event_id is a documented query parameter');
      assert.match(get.description ?? '', /last_event_id/);
      assert.match(docs.paths['/me/events-ticket']!.post!.description ?? '', /replaces the student's oldest/);
    } finally {
      await stop();
    }
  });

  test("one student's tickets in a loop replace only their own: another student's unused ticket still opens a stream", async () => {
    const { w, stop } = await world();
    try {
      const bea = await ticket(w, S.bea);
      const dan: string[] = [];
      for (let i = 0; i < 2000; i++) dan.push(await ticket(w, S.dan));
      const open = async (t: string) => openSse(`${w.base}/me/events?ticket=${encodeURIComponent(t)}`);
      // dan's oldest are gone (replaced); the newest TICKETS_PER_STUDENT still work.
      const oldest = await open(dan[0]!);
      assert.equal(oldest.status, 401);
      const replaced = await open(dan[dan.length - TICKETS_PER_STUDENT - 1]!);
      assert.equal(replaced.status, 401, `only the newest ${TICKETS_PER_STUDENT} of one student's tickets are outstanding`);
      const kept = [];
      for (const t of dan.slice(-TICKETS_PER_STUDENT)) {
        const c = await open(t);
        assert.equal(c.status, 200, c.body);
        kept.push(c);
      }
      for (const c of kept) c.close();
      const b = await open(bea);
      assert.equal(b.status, 200, "bea's unused ticket survived dan's 2,000");
      await b.waitFor((e) => e.some((x) => x.event === 'ready' && x.data.student_id === S.bea));
      b.close();
    } finally {
      await stop();
    }
  });

  test('the shared store: a full store of tickets is not emptied of others by one caller (store bound 10, per caller 4)', () => {
    let t = 0;
    const store = createFeedTickets({ ttlMs: 30_000, max: 10, maxPerPrincipal: 4, now: () => t });
    const session = { sid: 's', exp: 10_000, iat: 0, jti: 'j', authTime: 0 } as never;
    const others = [1, 2, 3, 4, 5].map((id) => ({ id, t: store.issue({ principal: { id, role: 'student' }, session }).ticket }));
    for (let i = 0; i < 1000; i++) {
      t++;
      store.issue({ principal: { id: 99, role: 'student' }, session });
    }
    assert.ok(store.size <= 10);
    for (const o of others) assert.notEqual(store.redeem(o.t), null, `student ${o.id}'s ticket survived`);
  });
});
