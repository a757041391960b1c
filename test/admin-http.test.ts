import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { createMemoryRevocations } from '../src/http/auth.js';
import { MAX_FEEDS_PER_USER } from '../src/http/admin/routes.js';
import { rawHead } from './support/http-json.js';
import { C, createHttpFixture, expectError, expectStatus, OTHER_STAFF, PASSWORD, S, STAFF, type HttpFixture } from './support/http-fixture.js';

/**
 * The admin page's HTTP surface: the page files are public and hold no data; every data endpoint
 * and the live feed are staff-only; the feed sends coalesced section updates after changes; and
 * every route is in the OpenAPI document.
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

/** Every admin endpoint that returns data. */
const DATA_ENDPOINTS = ['/admin/api/sections', '/admin/api/sections/101/1', '/admin/api/machine', '/admin/machine.mmd', '/admin/events'];

interface SseMessage {
  event: string;
  data: unknown;
}

/** A live feed connection read with fetch, as a browser's EventSource would. */
async function openFeed(url: string, headers: Record<string, string> = {}) {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  const messages: SseMessage[] = [];
  let buffer = '';
  const waiter: { wake: (() => void) | null } = { wake: null };
  const pump = (async () => {
    const decoder = new TextDecoder();
    const reader = res.body!.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let i: number;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data !== '') messages.push({ event, data: JSON.parse(data) });
          waiter.wake?.();
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    res,
    messages,
    /** Resolves when the server ends the stream (or it is aborted). */
    ended: pump,
    /** Waits until a message matching `pred` has arrived and returns it. */
    async next(pred: (m: SseMessage) => boolean, timeoutMs = 5000): Promise<SseMessage> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = messages.find(pred);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no matching feed message; got ${JSON.stringify(messages)}`);
        await new Promise<void>((r) => {
          waiter.wake = r;
          setTimeout(r, 50);
        });
      }
    },
    async close() {
      abort.abort();
      await pump;
    },
  };
}

/** A one-use feed ticket for a token, as the admin page gets one. */
async function ticketFor(token: string): Promise<string> {
  const r = await fx.request('POST', '/admin/feed-ticket', { token });
  expectStatus(r, 200);
  assert.equal(typeof r.body.ticket, 'string');
  return r.body.ticket as string;
}

async function listen(): Promise<string> {
  await fx.app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(fx.app.server.address() as AddressInfo).port}`;
}

describe('admin page files', () => {
  it('serves the page, its script and style without a token, with a strict content security policy', async () => {
    for (const [url, type] of [
      ['/admin', 'text/html'],
      ['/admin/admin.js', 'text/javascript'],
      ['/admin/admin.css', 'text/css'],
    ] as const) {
      const r = await fx.request('GET', url);
      expectStatus(r, 200);
      assert.match(String(r.headers['content-type']), new RegExp(`^${type}`));
      assert.match(String(r.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
    }
    const page = (await fx.request('GET', '/admin')).raw;
    // Everything the page loads comes from this server: no CDN, no other origin.
    assert.doesNotMatch(page, /https?:\/\//);
    assert.match(page, /src="\/admin\/admin\.js"/);
    assert.match(page, /href="\/admin\/admin\.css"/);
    // No data in the public shell.
    assert.doesNotMatch(page, /Knuth|Algorithms/);
    assert.doesNotMatch((await fx.request('GET', '/admin/admin.js')).raw, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });
});

describe('admin data endpoints are staff-only', () => {
  for (const url of DATA_ENDPOINTS) {
    it(`GET ${url}: 401 without a token, 403 with a student token`, async () => {
      expectError(await fx.request('GET', url), 401, 'UNAUTHENTICATED');
      expectError(await fx.request('GET', url, { token: fx.studentToken() }), 403, 'FORBIDDEN');
      expectError(await fx.request('GET', url, { token: 'not-a-jwt' }), 401, 'UNAUTHENTICATED');
    });
  }

  it('the feed refuses a token in the URL, even a valid staff token', async () => {
    const staff = fx.staffToken();
    for (const url of [`/admin/events?token=${staff}`, `/admin/events?token=${fx.studentToken()}`, '/admin/events?token=garbage', '/admin/events?token=']) {
      const r = await fx.request('GET', url);
      expectError(r, 401, 'UNAUTHENTICATED');
      assert.match(r.body.reason, /not accepted in URLs/);
    }
    // Not even beside a good header: the URL is where the leak is.
    expectError(await fx.request('GET', `/admin/events?token=${staff}`, { token: staff }), 401, 'UNAUTHENTICATED');
  });

  it('feed tickets: staff only, one use, short-lived, and dead with their token', async () => {
    expectError(await fx.request('POST', '/admin/feed-ticket'), 401, 'UNAUTHENTICATED');
    expectError(await fx.request('POST', '/admin/feed-ticket', { token: fx.studentToken() }), 403, 'FORBIDDEN');
    expectError(await fx.request('GET', '/admin/events?ticket=made-up'), 401, 'UNAUTHENTICATED');
    const base = await listen();
    const ticket = await ticketFor(fx.staffToken());
    const feed = await openFeed(`${base}/admin/events?ticket=${ticket}`);
    assert.equal(feed.res.status, 200);
    await feed.next((m) => m.event === 'ready');
    await feed.close();
    // Used once: worthless now.
    const again = await fetch(`${base}/admin/events?ticket=${ticket}`);
    assert.equal(again.status, 401);
    await again.body?.cancel();
    // Not used within its 30 s: worthless.
    const stale = await ticketFor(fx.staffToken());
    fx.clock.now += 31_000;
    expectError(await fx.request('GET', `/admin/events?ticket=${stale}`), 401, 'UNAUTHENTICATED');
  });

  it('the feed answers staff over a real connection, and keeps the token and ticket out of the logs', async () => {
    const base = await listen();
    const token = fx.staffToken();
    const none = await fetch(`${base}/admin/events`);
    assert.equal(none.status, 401);
    await none.body?.cancel();
    const ticket = await ticketFor(token);
    const feed = await openFeed(`${base}/admin/events?ticket=${ticket}`);
    assert.equal(feed.res.status, 200);
    assert.match(String(feed.res.headers.get('content-type')), /^text\/event-stream/);
    assert.ok(feed.res.headers.get('x-request-id'));
    await feed.next((m) => m.event === 'ready');
    await feed.close();
    assert.equal(fx.logs.some((l) => l.includes(token)), false);
    assert.equal(fx.logs.some((l) => l.includes(ticket)), false);
  });
});

describe('admin data', () => {
  it('lists every section with live numbers, and the departments', async () => {
    for (const s of [S.f1, S.f2, S.f3]) expectStatus(await enroll(s, C.algo1), 204);
    const r = await fx.request('GET', '/admin/api/sections', { token: fx.staffToken() });
    expectStatus(r, 200);
    assert.equal(r.body.sections.length, 9);
    assert.equal(r.body.flush_ms, 200);
    assert.deepEqual(r.body.departments.map((d: { id: number }) => d.id).sort(), [1, 2]);
    const algo = r.body.sections.find((s: { course_id: number; group_id: number }) => s.course_id === 101 && s.group_id === 1);
    assert.deepEqual(algo, {
      course_id: 101,
      group_id: 1,
      name: 'Algorithms',
      lecturer: 'Donald Knuth',
      department: 1,
      capacity: 2,
      registered_count: 2,
      reserve_capacity: 2,
      reserved_count: 1,
      sex_lock: null,
      closed: false,
      state: 'open.reserveOnly',
      seq: 4,
    });
  });

  it('shows one section with its reserve queue in order and its transitions, newest first', async () => {
    for (const s of [S.f1, S.f2, S.f3, S.f4]) expectStatus(await enroll(s, C.algo1), 204);
    const r = await fx.request('GET', '/admin/api/sections/101/1?limit=3', { token: fx.staffToken() });
    expectStatus(r, 200);
    assert.equal(r.body.section.state, 'open.full');
    assert.deepEqual(r.body.registered, [S.f1, S.f2]);
    assert.deepEqual(r.body.queue, [S.f3, S.f4]);
    assert.deepEqual(
      r.body.transitions.map((t: { seq: number; type: string; student_id: number; actor: string }) => [t.seq, t.type, t.student_id, t.actor]),
      [
        [5, 'studentQueued', S.f4, `student:${S.f4}`],
        [4, 'studentQueued', S.f3, `student:${S.f3}`],
        [3, 'studentEnrolled', S.f2, `student:${S.f2}`],
      ],
    );
    expectError(await fx.request('GET', '/admin/api/sections/999/1', { token: fx.staffToken() }), 404, 'SECTION_NOT_FOUND');
    expectError(await fx.request('GET', '/admin/api/sections/101/1?limit=0', { token: fx.staffToken() }), 400, 'BAD_REQUEST');
  });

  it('serves the machine as Mermaid text', async () => {
    const r = await fx.request('GET', '/admin/machine.mmd', { token: fx.staffToken() });
    expectStatus(r, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain/);
    assert.match(r.raw, /^stateDiagram-v2$/m);
    assert.match(r.raw, /countingSeats --> reserveOnly : \[queueHasRoom\]/);
    assert.match(r.raw, /seatsAvailable --> countingSeats : enroll \[admitted\] \/ takeSeat/);
    assert.doesNotMatch(r.raw, /handle|replay|always/);
  });
});

describe('admin live feed', () => {
  it('sends the section after an enroll', async () => {
    const base = await listen();
    const feed = await openFeed(`${base}/admin/events`, { authorization: `Bearer ${fx.staffToken()}` });
    try {
      await feed.next((m) => m.event === 'ready');
      expectStatus(await enroll(S.alice, C.algo1), 204);
      const m = await feed.next((x) => x.event === 'sections');
      assert.deepEqual(
        (m.data as { sections: { course_id: number; group_id: number; registered_count: number; state: string }[] }).sections.map((s) => [
          s.course_id,
          s.group_id,
          s.registered_count,
          s.state,
        ]),
        [[101, 1, 1, 'open.seatsAvailable']],
      );
    } finally {
      await feed.close();
    }
  });

  it('coalesces a burst of changes into few messages carrying the latest numbers', async () => {
    const base = await listen();
    const feed = await openFeed(`${base}/admin/events?ticket=${await ticketFor(fx.staffToken())}`);
    try {
      await feed.next((m) => m.event === 'ready');
      const t0 = Date.now();
      const results = await Promise.all([S.f1, S.f2, S.f3, S.f4, S.alice].map((s) => enroll(s, C.algo1)));
      for (const r of results.slice(0, 4)) expectStatus(r, 204);
      expectStatus(await enroll(S.bea, C.compilers), 204);
      type Row = { course_id: number; registered_count: number; reserved_count: number; state: string; seq: number };
      const latest = (course: number): Row | undefined =>
        feed.messages
          .filter((m) => m.event === 'sections')
          .flatMap((m) => (m.data as { sections: Row[] }).sections)
          .filter((s) => s.course_id === course)
          .at(-1);
      await feed.next(() => latest(101)?.state === 'open.full' && latest(103)?.registered_count === 1);
      const algo = latest(101)!;
      assert.deepEqual([algo.registered_count, algo.reserved_count, algo.seq], [2, 2, 5]);
      const sent = feed.messages.filter((m) => m.event === 'sections');
      // Six changes within a few milliseconds: at most one message per flush period (plus the first).
      const periods = Math.ceil((Date.now() - t0) / 200) + 1;
      assert.ok(sent.length <= periods, `${sent.length} messages in ${periods} periods`);
      // Each message names a section at most once.
      for (const m of sent) {
        const keys = (m.data as { sections: { course_id: number; group_id: number }[] }).sections.map((s) => `${s.course_id}/${s.group_id}`);
        assert.equal(new Set(keys).size, keys.length);
      }
    } finally {
      await feed.close();
    }
  });

  it('ends open feeds when the app closes', async () => {
    const base = await listen();
    const feed = await openFeed(`${base}/admin/events?ticket=${await ticketFor(fx.staffToken())}`);
    await feed.next((m) => m.event === 'ready');
    const closed = await Promise.race([
      fx.app.close().then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
    ]);
    assert.equal(closed, true, 'app.close() finished with a feed open');
    await feed.close();
  });
});

describe('admin live feed limits (issue 11)', () => {
  it("closes the stream at the token's expiry, with an expired event", async () => {
    await fx.close();
    fx = await createHttpFixture({ app: { tokenTtlSeconds: 2 } });
    const login = await fx.request('POST', '/login', { body: { user: STAFF, password: PASSWORD, staff: true } });
    expectStatus(login, 200);
    const base = await listen();
    const feed = await openFeed(`${base}/admin/events?ticket=${await ticketFor(login.body.token)}`);
    await feed.next((m) => m.event === 'ready');
    // The server ends the stream by itself; the test only waits for it (no timing asserted).
    const m = await feed.next((x) => x.event === 'expired', 10_000);
    assert.match(String((m.data as { reason: string }).reason), /expired/);
    await feed.ended;
    assert.equal((fx.app.server.listening), true);
  });

  it('closes the stream when its token is revoked, at the next message', async () => {
    await fx.close();
    // Judged by the fixture's clock, as the app judges tokens.
    const revocations = createMemoryRevocations(() => fx.clock.now);
    fx = await createHttpFixture({ app: { revocations } });
    const token = fx.staffToken();
    const base = await listen();
    const feed = await openFeed(`${base}/admin/events?ticket=${await ticketFor(token)}`);
    await feed.next((m) => m.event === 'ready');
    const c = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as { jti: string; exp: number };
    revocations.revoke({ jti: c.jti, until: c.exp });
    expectStatus(await enroll(S.alice, C.algo1), 204);
    await feed.next((x) => x.event === 'expired');
    await feed.ended;
    assert.equal(feed.messages.some((x) => x.event === 'sections'), false);
  });

  it(`caps feeds per staff member at ${MAX_FEEDS_PER_USER}: the next gets 429 TOO_MANY_FEEDS with Retry-After, others are unaffected`, async () => {
    const base = await listen();
    const token = fx.staffToken();
    const feeds = [];
    for (let i = 0; i < MAX_FEEDS_PER_USER; i++) {
      const f = await openFeed(`${base}/admin/events?ticket=${await ticketFor(token)}`);
      assert.equal(f.res.status, 200);
      await f.next((m) => m.event === 'ready');
      feeds.push(f);
    }
    const over = await fetch(`${base}/admin/events?ticket=${await ticketFor(token)}`);
    assert.equal(over.status, 429);
    assert.equal(over.headers.get('retry-after'), '10');
    assert.equal(((await over.json()) as { code: string }).code, 'TOO_MANY_FEEDS');
    // The same person with another token (another login) is the same person.
    const header = await fetch(`${base}/admin/events`, { headers: { authorization: `Bearer ${fx.staffToken()}` } });
    assert.equal(header.status, 429);
    await header.body?.cancel();
    // Another staff member still gets a feed.
    const other = await openFeed(`${base}/admin/events?ticket=${await ticketFor(fx.staffToken(OTHER_STAFF))}`);
    assert.equal(other.res.status, 200);
    await other.close();
    // Closing one frees a slot.
    await feeds.pop()!.close();
    let reopened: Awaited<ReturnType<typeof openFeed>> | null = null;
    for (let i = 0; i < 50 && reopened === null; i++) {
      const f = await openFeed(`${base}/admin/events?ticket=${await ticketFor(token)}`);
      if (f.res.status === 200) reopened = f;
      else {
        await f.close();
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    assert.ok(reopened, 'a slot was freed');
    await reopened.close();
    for (const f of feeds) await f.close();
  });

  it('HEAD /admin/events is answered at once with the head a GET gets, no body, and takes no feed slot', async () => {
    const base = await listen();
    const auth = { authorization: `Bearer ${fx.staffToken()}` };
    // Over a real socket, more HEADs than the per-person cap.
    for (let i = 0; i < MAX_FEEDS_PER_USER + 1; i++) {
      const h = await rawHead(base, '/admin/events', auth);
      assert.equal(h.status, 200);
      assert.match(h.headers['content-type'] ?? '', /^text\/event-stream/);
      assert.equal(h.headers['cache-control'], 'no-store');
      assert.ok(h.headers['x-request-id']);
      assert.equal(h.rest, '', 'no body after the head');
    }
    // Several at once through app.inject as well.
    const heads = await Promise.all(Array.from({ length: MAX_FEEDS_PER_USER }, () => fx.app.inject({ method: 'HEAD', url: '/admin/events', headers: auth })));
    for (const h of heads) {
      assert.equal(h.statusCode, 200);
      assert.equal(h.body, '');
    }
    // The staff member's real feeds all still open.
    const feeds = [];
    for (let i = 0; i < MAX_FEEDS_PER_USER; i++) {
      const f = await openFeed(`${base}/admin/events`, auth);
      assert.equal(f.res.status, 200, `feed ${i + 1} after the HEADs`);
      await f.next((m) => m.event === 'ready');
      feeds.push(f);
    }
    // The GET's refusals, as heads without a body.
    const over = await rawHead(base, '/admin/events', auth);
    assert.equal(over.status, 429);
    assert.equal(over.rest, '');
    assert.equal((await rawHead(base, '/admin/events')).status, 401);
    assert.equal((await rawHead(base, '/admin/events', { authorization: `Bearer ${fx.studentToken()}` })).status, 403);
    for (const f of feeds) await f.close();
  });
});

describe('admin routes in the OpenAPI document', () => {
  it('documents every admin route, with response schemas', async () => {
    const doc = (await fx.request('GET', '/docs/json')).body;
    for (const path of [
      '/admin',
      '/admin/admin.js',
      '/admin/admin.css',
      '/admin/machine.mmd',
      '/admin/api/machine',
      '/admin/api/sections',
      '/admin/api/sections/{courseId}/{groupId}',
      '/admin/events',
    ]) {
      const op = doc.paths[path]?.get;
      assert.ok(op, `${path} is documented`);
      assert.deepEqual(op.tags, ['admin']);
      assert.ok(op.responses['200'], `${path} documents its 200`);
    }
    for (const path of ['/admin/api/machine', '/admin/api/sections', '/admin/api/sections/{courseId}/{groupId}']) {
      assert.ok(doc.paths[path].get.responses['200'].content['application/json'].schema, path);
      assert.deepEqual(doc.paths[path].get.security, [{ bearerAuth: [] }]);
    }
  });
});
