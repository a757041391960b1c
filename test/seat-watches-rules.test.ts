import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Notice } from '../src/notices/notices.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import type { Persistence } from '../src/persistence/types.js';
import { S, STAFF } from './support/http-fixture.js';
import { quietLogger, startNoticesWorld, type NoticesWorld } from './support/notices-world.js';

/**
 * Which watchers a seat opening tells (probe findings 3, 4 and 6), on the embedded store through the
 * real server: one watcher per place the batch added, also when the section had room already; a
 * watcher who got a place in the section since is not told and their watch ends; a watcher the sex
 * lock excludes is passed over (and cannot start a watch there); a restart does not tell again an
 * opening that was announced already.
 */

const tiny = { course_id: 106, group_id: 1 }; // 1 seat, no reserve

async function world(): Promise<{ store: Persistence; w: NoticesWorld; told: Notice[] }> {
  const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
  await store.migrate();
  const w = await startNoticesWorld({ persistence: store, seed: true });
  const told: Notice[] = [];
  w.hub.onWatchNotices((ns) => told.push(...ns.filter((n) => n.kind === 'seatAvailable')));
  return { store, w, told };
}

async function ok(w: NoticesWorld, method: string, path: string, who: number, body?: unknown, role: 'student' | 'staff' = 'student'): Promise<void> {
  const r = await w.call(method, path, w.token(who, role), body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${path} by ${who}: ${r.status} ${JSON.stringify(r.body)}`);
}

async function watching(w: NoticesWorld, who: number): Promise<{ course_id: number; position: number }[]> {
  const r = await w.call('GET', '/me/watches', w.token(who));
  assert.equal(r.status, 200);
  return r.body.watches;
}

async function waitUntil(pred: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Lets the hub run what the last batches queued (notices are derived after the reply). */
const settle = () => new Promise((r) => setTimeout(r, 500));

type FireWatches = NonNullable<Persistence['notices']>['fireWatches'];

/**
 * The store with its notice store's `fireWatches` replaced by `wrap(original)` (the project's own
 * NoticeStore interface; everything else passes through).
 */
function withFireWatches(store: Persistence, wrap: (original: FireWatches) => FireWatches): Persistence {
  const inner = store.notices as NonNullable<Persistence['notices']>;
  const fire = wrap(inner.fireWatches.bind(inner));
  const notices = new Proxy(inner, {
    get(t, p) {
      if (p === 'fireWatches') return fire;
      const v = Reflect.get(t, p) as unknown;
      return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(t) : v;
    },
  });
  return new Proxy(store, {
    get(t, p) {
      if (p === 'notices') return notices;
      const v = Reflect.get(t, p) as unknown;
      return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(t) : v;
    },
  });
}

describe('seat watches: who is told', { timeout: 120_000 }, () => {
  test('a second seat freed while the first is still free is announced to the next watcher', async () => {
    const { store, w, told } = await world();
    await ok(w, 'PUT', '/student/course', S.f1, tiny);
    await ok(w, 'PATCH', '/sections/106/1', STAFF, { capacity: 2 }, 'staff');
    await ok(w, 'PUT', '/student/course', S.f2, tiny);
    for (const s of [S.alice, S.bea, S.f3]) await ok(w, 'POST', '/me/watches', s, tiny);

    await ok(w, 'DELETE', '/student/course?course_id=106', S.f1);
    await waitUntil(() => told.length >= 1, 'the first opening');
    await ok(w, 'DELETE', '/student/course?course_id=106', S.f2);
    await waitUntil(() => told.length >= 2, 'the second opening (two seats free now)');
    await settle();
    assert.deepEqual(told.map((n) => n.studentId), [S.alice, S.bea], 'one watcher per freed seat, in watch order');
    assert.deepEqual((await watching(w, S.f3)).map((x) => x.position), [1]);
    await w.stop();
    await store.close();
  });

  test('a watcher who got a place in the section is not told, the next one is, and their watch ends', async () => {
    const { store, w, told } = await world();
    await ok(w, 'PUT', '/student/course', S.f1, tiny);
    for (const s of [S.alice, S.bea]) await ok(w, 'POST', '/me/watches', s, tiny);
    // Staff force-enroll alice (the full section grows by one seat: no place opens).
    await ok(w, 'PUT', '/staff/force-std', STAFF, { std_id: S.alice, ...tiny }, 'staff');
    assert.deepEqual(await watching(w, S.alice), [], 'a watch of a section the student holds a place in is not listed');
    assert.deepEqual((await watching(w, S.bea)).map((x) => x.position), [1], 'bea is first among those who could take a place');

    await ok(w, 'DELETE', '/student/course?course_id=106', S.f1);
    await waitUntil(() => told.length >= 1, 'the opening');
    await settle();
    assert.deepEqual(told.map((n) => n.studentId), [S.bea], 'the seat is announced to bea, not to alice who holds one');
    const left = await store.notices!.activeWatches();
    assert.deepEqual(left, [], 'alice\'s watch ended, bea\'s fired');
    await w.stop();
    await store.close();
  });

  test('a watcher the sex lock excludes is passed over, and cannot start a watch on a locked section', async () => {
    const { store, w, told } = await world();
    await ok(w, 'PUT', '/student/course', S.bea, tiny);
    await ok(w, 'POST', '/me/watches', S.alice, tiny); // male
    await ok(w, 'POST', '/me/watches', S.eve, tiny); // female
    await ok(w, 'PATCH', '/sections/106/1', STAFF, { sex_lock: 'female' }, 'staff');

    // Refused like the enroll (SPEC rule 3), whatever else holds.
    const refused = await w.call('POST', '/me/watches', w.token(S.f3), tiny);
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.code, 'SEX_LOCK');
    const enroll = await w.call('PUT', '/student/course', w.token(S.f3), tiny);
    assert.equal(enroll.body.code, 'SEX_LOCK', 'the same code as the enroll');

    await ok(w, 'DELETE', '/student/course?course_id=106', S.bea);
    await waitUntil(() => told.length >= 1, 'the opening');
    await settle();
    assert.deepEqual(told.map((n) => n.studentId), [S.eve], 'the place is announced to eve, not to alice whom the lock excludes');
    assert.deepEqual((await watching(w, S.alice)).map((x) => x.course_id), [106], "alice's watch is kept (the lock may be lifted)");
    await w.stop();
    await store.close();
  });

  test('a restart does not announce again an opening that was announced', async () => {
    const { store, w, told } = await world();
    await ok(w, 'PUT', '/student/course', S.f1, tiny);
    await ok(w, 'PATCH', '/sections/106/1', STAFF, { capacity: 2 }, 'staff');
    await ok(w, 'PUT', '/student/course', S.f2, tiny);
    for (const s of [S.alice, S.bea, S.f3]) await ok(w, 'POST', '/me/watches', s, tiny);
    await ok(w, 'DELETE', '/student/course?course_id=106', S.f1);
    await waitUntil(() => told.length >= 1, 'the opening');
    await settle();
    await w.stop();

    for (let i = 0; i < 2; i++) {
      const again = await startNoticesWorld({ persistence: store, seed: false });
      await settle();
      assert.deepEqual((await watching(again, S.bea)).map((x) => x.position), [1], `restart ${i + 1}: bea still watches, untold`);
      assert.deepEqual((await watching(again, S.f3)).map((x) => x.position), [2]);
      await again.stop();
    }
    const fired = (await store.notices!.firedWatchesAfter(S.bea, 0)).length;
    assert.equal(fired, 0, 'bea was never told');
    await store.close();
  });
});

describe('seat watches: what an opening costs', { timeout: 60_000 }, () => {
  test('embedded mode (one process): an opening of a section nobody watches reads nothing from the database; a watch put into the store by other means is picked up by the refresh', async () => {
    const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
    await store.migrate();
    const inner = store.notices as NonNullable<Persistence['notices']>;
    let reads = 0;
    // Counting the opening's reads.
    const persistence = withFireWatches(store, (fire) => (...a) => ((reads += 1), fire(...a)));
    const w = await startNoticesWorld({ persistence, seed: true, hub: { watchedRefreshMs: 100, singleInstance: true } });
    const told: Notice[] = [];
    w.hub.onWatchNotices((ns) => told.push(...ns.filter((n) => n.kind === 'seatAvailable')));
    try {
      // Every drop frees a place: openings of a section nobody watches.
      for (const s of [S.f1, S.f2, S.f3, S.f4]) {
        await ok(w, 'PUT', '/student/course', s, tiny);
        await ok(w, 'DELETE', '/student/course?course_id=106', s);
      }
      await settle();
      assert.equal(reads, 0, 'no database read for openings of an unwatched section');
      // The section fills; a watch appears in the store without this hub (a restore, an operator).
      await ok(w, 'PUT', '/student/course', S.bea, tiny);
      await inner.addWatch(S.alice, tiny.course_id, tiny.group_id, () => ({ end: [] }));
      await new Promise((r) => setTimeout(r, 400)); // a few refreshes
      await ok(w, 'DELETE', '/student/course?course_id=106', S.bea);
      await waitUntil(() => told.length >= 1, 'the opening told to the watch the refresh found');
      assert.deepEqual(told.map((n) => n.studentId), [S.alice]);
      assert.ok(reads >= 1);
    } finally {
      await w.stop();
      await store.close();
    }
  });
});

describe('seat watches: openings while the database fails', { timeout: 60_000 }, () => {
  test('each opening that cannot be evaluated is not an error line of its own: one warning, then one line when it works again', async () => {
    const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
    await store.migrate();
    let failing = true;
    let attempts = 0;
    // Failing the opening's evaluation as a database that is away does.
    const persistence = withFireWatches(store, (fire) => (...a) => {
      attempts += 1;
      return failing ? Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5432')) : fire(...a);
    });
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
    // Not single-instance (full mode's rule): every opening is evaluated against the store.
    const w = await startNoticesWorld({ persistence, seed: true, hub: { logger } });
    try {
      for (const s of [S.f1, S.f2, S.f3, S.f4, S.f1, S.f2]) {
        await ok(w, 'PUT', '/student/course', s, tiny);
        await ok(w, 'DELETE', '/student/course?course_id=106', s);
      }
      await settle();
      assert.ok(attempts >= 6, `every opening was tried (${attempts})`);
      const about = lines.filter((l) => /seat-watch opening/.test(l.msg));
      assert.equal(about.length, 1, `one line for ${attempts} failures: ${JSON.stringify(about)}`);
      assert.equal(about[0]!.level, 40, 'a warning, not an error per opening');
      failing = false;
      await ok(w, 'PUT', '/student/course', S.f3, tiny);
      await ok(w, 'DELETE', '/student/course?course_id=106', S.f3);
      await settle();
      assert.ok(lines.some((l) => l.level === 30 && l.msg === 'seat-watch openings are announced again'), 'the recovery is told once');
      assert.ok(!lines.some((l) => l.level >= 50), 'no error lines');
    } finally {
      await w.stop();
      await store.close();
    }
  });
});
