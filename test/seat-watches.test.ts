import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Notice } from '../src/notices/notices.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { S, STAFF } from './support/http-fixture.js';
import { openSse, quietLogger, startNoticesWorld } from './support/notices-world.js';

/** Seat watches on the embedded store (in-memory PGlite), through the real server. */

describe('seat watches', { timeout: 120_000 }, () => {
  test('watchers of a full section are told in watch order, one per free place, with a notice that is not a seat', async () => {
    const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
    await store.migrate();
    const w = await startNoticesWorld({ persistence: store, seed: true, hub: { maxWatchesPerStudent: 2, maxWatchersPerSection: 3 } });
    const told: Notice[] = [];
    w.hub.onWatchNotices((ns) => told.push(...ns.filter((n) => n.kind === 'seatAvailable')));
    const tiny = { course_id: 106, group_id: 1 }; // 1 seat, no reserve
    assert.equal((await w.call('PUT', '/student/course', w.token(S.f1), tiny)).status, 204);

    // Refusals, each a 4xx with a reason, changing nothing.
    const refusals: [number, string, number, unknown][] = [
      [S.alice, 'WATCH_NOT_NEEDED', 409, { course_id: 101, group_id: 2 }], // free seats
      [S.f1, 'ALREADY_IN_SECTION', 409, tiny],
      [S.alice, 'SECTION_CLOSED', 409, { course_id: 105, group_id: 1 }],
      [S.alice, 'SECTION_NOT_FOUND', 404, { course_id: 999, group_id: 1 }],
      [S.alice, 'BAD_REQUEST', 400, { course_id: 'x', group_id: 1 }],
      [S.alice, 'BAD_REQUEST', 400, { course_id: 106 }],
    ];
    for (const [who, code, status, body] of refusals) {
      const r = await w.call('POST', '/me/watches', w.token(who), body);
      assert.equal(r.status, status, `${code}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, code);
      assert.ok(r.body.reason.length > 0);
    }
    assert.equal((await w.call('POST', '/me/watches', w.token(STAFF, 'staff'), tiny)).status, 403);

    // Three watchers, in this order; a fourth is over the section's bound, a repeat is refused.
    const sse = await openSse(`${w.base}/me/events`, { authorization: `Bearer ${w.token(S.bea)}` });
    await sse.waitFor((e) => e.some((x) => x.event === 'ready'));
    for (const [i, who] of [S.alice, S.bea, S.f3].entries()) {
      const r = await w.call('POST', '/me/watches', w.token(who), tiny);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.position, i + 1);
    }
    const again = await w.call('POST', '/me/watches', w.token(S.alice), tiny);
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 'ALREADY_WATCHING');
    const fourth = await w.call('POST', '/me/watches', w.token(S.f4), tiny);
    assert.equal(fourth.status, 429);
    assert.equal(fourth.body.code, 'TOO_MANY_WATCHES');
    // Per-student bound (2 here): alice fills a second full section, then a third is refused.
    assert.equal((await w.call('PUT', '/student/course', w.token(S.f2), { course_id: 107, group_id: 1 })).status, 204);
    assert.equal((await w.call('PATCH', '/sections/107/1', w.token(STAFF, 'staff'), { capacity: 1, reserve_capacity: 0 })).status, 200);
    assert.equal((await w.call('POST', '/me/watches', w.token(S.alice), { course_id: 107, group_id: 1 })).status, 201);
    assert.equal((await w.call('PUT', '/student/course', w.token(S.f4), { course_id: 108, group_id: 1 })).status, 204);
    assert.equal((await w.call('PATCH', '/sections/108/1', w.token(STAFF, 'staff'), { capacity: 1, reserve_capacity: 0 })).status, 200);
    const third = await w.call('POST', '/me/watches', w.token(S.alice), { course_id: 108, group_id: 1 });
    assert.equal(third.status, 429);
    assert.match(third.body.reason, /at most 2/);
    const mine = await w.call('GET', '/me/watches', w.token(S.alice));
    assert.deepEqual(mine.body.watches.map((x: { course_id: number }) => x.course_id), [106, 107]);

    // One seat opens: only the first watcher is told; the others keep watching and move up.
    assert.equal((await w.call('DELETE', '/student/course?course_id=106', w.token(S.f1))).status, 204);
    await waitUntil(() => told.length >= 1);
    assert.deepEqual(told.map((n) => n.studentId), [S.alice]);
    assert.match(told[0]!.message, /not a seat/);
    assert.match(told[0]!.message, /whoever enrolls first/);
    const beaWatches = await w.call('GET', '/me/watches', w.token(S.bea));
    assert.equal(beaWatches.body.watches[0].position, 1);

    // The seat is not held for alice: dan takes it. Then capacity grows by two: bea, then f3.
    assert.equal((await w.call('PUT', '/student/course', w.token(S.dan), tiny)).status, 204);
    assert.equal((await w.call('PATCH', '/sections/106/1', w.token(STAFF, 'staff'), { capacity: 3 })).status, 200);
    await waitUntil(() => told.length >= 3);
    assert.deepEqual(told.map((n) => n.studentId), [S.alice, S.bea, S.f3], 'told in the order they started watching');
    await sse.waitFor((e) => e.some((x) => x.data?.kind === 'seatAvailable'), 15_000, 'seatAvailable on the stream');
    assert.equal(sse.notices().find((n) => n.kind === 'seatAvailable').course_id, 106);

    // Stopping a watch; stopping one that is not there is a 404.
    assert.equal((await w.call('DELETE', '/me/watches/107/1', w.token(S.alice))).status, 204);
    const gone = await w.call('DELETE', '/me/watches/107/1', w.token(S.alice));
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, 'NOT_WATCHING');
    sse.close();

    // Watches are durable: a new hub over the same store still has them (bea and f3 were told; none left on 106).
    await w.stop();
    const w2 = await startNoticesWorld({ persistence: store, seed: false });
    assert.deepEqual((await w2.call('GET', '/me/watches', w2.token(S.alice))).body.watches, []);
    assert.equal((await w2.call('POST', '/me/watches', w2.token(S.f3), { course_id: 108, group_id: 1 })).status, 201);
    await w2.stop();
    const w3 = await startNoticesWorld({ persistence: store, seed: false });
    assert.equal((await w3.call('GET', '/me/watches', w3.token(S.f3))).body.watches.length, 1);
    await w3.stop();
    await store.close();
  });
});

async function waitUntil(pred: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
