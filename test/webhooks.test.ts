import assert from 'node:assert/strict';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { ConfigError, loadConfig } from '../src/config.js';
import { createAmqpDeliveryQueue, createDatabaseDeliveryQueue, deliveryQueueNames } from '../src/persistence/delivery-queue.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { batcherThreadFactory } from '../src/persistence/batcher-thread.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import { deleteQueues } from './support/amqp.js';
import { S, STAFF } from './support/http-fixture.js';
import { createTestOutbox, quietLogger, startNoticesWorld, type NoticesWorld } from './support/notices-world.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';
import { expectedSignature, startWebhookReceiver, type Received } from './support/webhook-receiver.js';

/**
 * Webhooks to a real local HTTP receiver: full mode (PostgreSQL + RabbitMQ queues with a unique
 * prefix per run) with retries, backoff and dead-lettering observed, and embedded mode (PGlite,
 * deliveries queued in the database). The test verifies each signature itself.
 */

/** A receiver: `/flaky` fails its first two requests with 500, `/down` always answers 503, `/ok` 204. */
function startReceiver() {
  let flaky = 0;
  return startWebhookReceiver((path) => {
    if (path === '/flaky') return ++flaky <= 2 ? 500 : 200;
    return path === '/down' ? 503 : 204;
  });
}

function verify(secret: string, r: Received): void {
  const t = r.headers['x-enrollment-timestamp'] as string;
  const sig = r.headers['x-enrollment-signature'] as string;
  assert.match(t, /^\d+$/);
  assert.equal(sig, expectedSignature(secret, r), 'HMAC-SHA256 over "<timestamp>.<body>" with the shared secret');
  assert.ok(Math.abs(Date.now() / 1000 - Number(t)) < 300, 'timestamp is current');
}

async function until(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** f1 and f2 take Algorithms' two seats, alice queues, f1 leaves: alice is promoted (one notice). */
async function promoteAlice(w: NoticesWorld): Promise<void> {
  for (const id of [S.f1, S.f2, S.alice]) assert.equal((await w.call('PUT', '/student/course', w.token(id), { course_id: 101, group_id: 1 })).status, 204);
  assert.equal((await w.call('DELETE', '/student/course?course_id=101', w.token(S.f1))).status, 204);
}

test('WEBHOOK_MAX_ACTIVE: 20 by default, a whole number from 1, anything else a configuration problem', () => {
  assert.equal(loadConfig({}).webhookMaxActive, 20);
  assert.equal(loadConfig({ WEBHOOK_MAX_ACTIVE: '5' }).webhookMaxActive, 5);
  for (const bad of ['0', '-1', 'many', '2.5']) {
    assert.throws(
      () => loadConfig({ WEBHOOK_MAX_ACTIVE: bad }),
      (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('WEBHOOK_MAX_ACTIVE')),
      bad,
    );
  }
});

test('WEBHOOK_IN_FLIGHT_PER_WEBHOOK (1-64, default 4) and WEBHOOK_WAITING_PER_WEBHOOK (0-10000, default 60)', () => {
  const d = loadConfig({});
  assert.equal(d.webhookInFlightPerWebhook, 4);
  assert.equal(d.webhookWaitingPerWebhook, 60);
  const c = loadConfig({ WEBHOOK_IN_FLIGHT_PER_WEBHOOK: '8', WEBHOOK_WAITING_PER_WEBHOOK: '0' });
  assert.equal(c.webhookInFlightPerWebhook, 8);
  assert.equal(c.webhookWaitingPerWebhook, 0);
  for (const [name, bad] of [['WEBHOOK_IN_FLIGHT_PER_WEBHOOK', '0'], ['WEBHOOK_IN_FLIGHT_PER_WEBHOOK', '65'], ['WEBHOOK_WAITING_PER_WEBHOOK', '-1'], ['WEBHOOK_WAITING_PER_WEBHOOK', 'lots']] as const) {
    assert.throws(
      () => loadConfig({ [name]: bad }),
      (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes(name)),
      `${name}=${bad}`,
    );
  }
});

const SECRET_A = 'flaky-endpoint-secret-0123456789';
const SECRET_B = 'down-endpoint-secret-0123456789';

// The batcher on the server's thread, and on its own worker thread (BATCHER_THREAD, default worker),
// where deliveries are recorded by the worker's outbox and the sender is woken across threads.
for (const batcherThread of ['main', 'worker'] as const) {
describe(`webhooks, full mode (PostgreSQL + RabbitMQ, BATCHER_THREAD=${batcherThread})`, { timeout: 180_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  let w: NoticesWorld;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let dropDb: () => Promise<void> = async () => undefined;
  let retryQueues: () => string[] = () => [];
  let queue: Awaited<ReturnType<typeof createAmqpDeliveryQueue>> | null = null;
  let notices: NonNullable<Awaited<ReturnType<typeof createFullStore>>['notices']>;
  const prefix = uniqueName('notices');
  const names = deliveryQueueNames(prefix);

  before(async () => {
    if (skip) return;
    const db = await createTestDatabase();
    dropDb = db.drop;
    const { outbox, wake } = createTestOutbox();
    const onWorker =
      batcherThread === 'worker'
        ? {
            batcherFactory: batcherThreadFactory({
              entry: join(import.meta.dirname, '..', 'src', 'cli', 'batcher-worker'),
              logLevel: 'silent',
              onRecorded: () => wake.fn?.(),
            }),
          }
        : {};
    const store = await createFullStore({ databaseUrl: db.url, rabbitmqUrl: AMQP_URL, prefix, logger: quietLogger, batchMaxEvents: 500, runBatcher: true, outbox, ...onWorker });
    await store.migrate();
    receiver = await startReceiver();
    w = await startNoticesWorld({
      persistence: store,
      seed: true,
      queue: async () => {
        const q = await createAmqpDeliveryQueue({ url: AMQP_URL, prefix, logger: quietLogger, reconnectMs: 200 });
        retryQueues = () => q.retryQueues();
        queue = q;
        return q;
      },
      // The sweep is called by the test itself (timer far off); grace 0: anything due is overdue.
      // New deliveries are queued when the outbox records them (the periodic feed is far off too).
      // The receiver listens on 127.0.0.1: refused unless private targets are allowed (they are off by default).
      webhooks: { maxAttempts: 3, baseDelayMs: 300, sweepMs: 3_600_000, sweepGraceMs: 0, feedMs: 3_600_000, allowPrivateTargets: true },
      outboxWake: wake,
    });
    notices = store.notices!;
    // Stop the world's store with it.
    const stop = w.stop;
    w.stop = async () => {
      await stop();
      await store.close();
    };
  });
  after(async () => {
    if (skip) return;
    await w.stop();
    await receiver.close();
    await deleteQueues([...Object.values(streamNames(prefix)), names.work, names.dead, ...retryQueues()]);
    await dropDb();
  });

  test('staff register endpoints; bad input is a 4xx with a reason', { skip }, async () => {
    const staff = w.token(STAFF, 'staff');
    const bad: [unknown, number][] = [
      [{ url: 'ftp://example.org/x', secret: SECRET_A }, 400],
      [{ url: 'not a url at all', secret: SECRET_A }, 400],
      [{ url: `${receiver.url}/x`, secret: 'short' }, 400],
      [{ url: `${receiver.url}/x`, secret: SECRET_A, kinds: ['nonsense'] }, 400],
      [{ url: 'http://user:pw@example.org/x', secret: SECRET_A }, 400],
    ];
    for (const [body, status] of bad) {
      const r = await w.call('POST', '/webhooks', staff, body);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.ok(typeof r.body.reason === 'string' && r.body.reason.length > 0);
    }
    assert.equal((await w.call('POST', '/webhooks', w.token(S.alice), { url: `${receiver.url}/x`, secret: SECRET_A })).status, 403);
    assert.equal((await w.call('GET', '/webhooks/99999/deliveries', staff)).status, 404);
    assert.equal((await w.call('GET', '/webhooks', staff)).body.webhooks.length, 0, 'nothing was registered by a refusal');
  });

  test('deliveries are signed, retried with backoff until they succeed, and dead-lettered after the limit', { skip }, async () => {
    const staff = w.token(STAFF, 'staff');
    const a = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/flaky`, secret: SECRET_A, kinds: ['promoted'] });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    assert.equal(a.body.secret, undefined, 'the secret is never returned');
    const b = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/down`, secret: SECRET_B });
    assert.equal(b.status, 201);

    await promoteAlice(w);

    // Flaky endpoint: 500, 500, 200 -> delivered on the third attempt, after 300 ms and 600 ms pauses.
    await until(async () => {
      const r = await w.call('GET', `/webhooks/${a.body.id}/deliveries`, staff);
      return r.body.deliveries[0]?.status === 'delivered';
    }, 'the flaky delivery to succeed');
    const flakyGot = receiver.got.filter((r) => r.path === '/flaky');
    assert.equal(flakyGot.length, 3);
    for (const r of flakyGot) verify(SECRET_A, r);
    assert.equal(new Set(flakyGot.map((r) => r.headers['x-enrollment-delivery'])).size, 1, 'one delivery id across attempts (receivers dedupe on it)');
    assert.deepEqual(flakyGot.map((r) => r.headers['x-enrollment-attempt']), ['1', '2', '3']);
    assert.ok(flakyGot[1]!.at - flakyGot[0]!.at >= 300 - 5, 'first pause is at least the base delay');
    assert.ok(flakyGot[2]!.at - flakyGot[1]!.at >= 600 - 5, 'second pause is at least twice the base delay');
    const body = JSON.parse(flakyGot[2]!.body);
    assert.equal(body.type, 'notice');
    assert.equal(body.notice.kind, 'promoted');
    assert.equal(body.notice.student_id, S.alice);
    assert.equal(body.notice.course_id, 101);
    const listed = (await w.call('GET', `/webhooks/${a.body.id}/deliveries`, staff)).body.deliveries;
    assert.equal(listed.length, 1);
    assert.equal(listed[0].attempts, 3);
    assert.deepEqual(listed[0].attempt_log.map((x: { status_code: number }) => x.status_code), [500, 500, 200]);
    assert.equal(listed[0].attempt_log[0].error, 'HTTP 500');

    // Always-down endpoint (every kind): three attempts, then dead, and parked in the dead-letter queue.
    await until(async () => {
      const r = await w.call('GET', `/webhooks/${b.body.id}/deliveries`, staff);
      return r.body.deliveries.length > 0 && r.body.deliveries.every((d: { status: string }) => d.status === 'dead');
    }, 'the down deliveries to be dead-lettered');
    const dead = (await w.call('GET', `/webhooks/${b.body.id}/deliveries`, staff)).body.deliveries;
    for (const d of dead) {
      assert.equal(d.attempts, 3);
      assert.deepEqual(d.attempt_log.map((x: { status_code: number }) => x.status_code), [503, 503, 503]);
    }
    for (const r of receiver.got.filter((x) => x.path === '/down')) verify(SECRET_B, r);
    const conn = await amqp.connect(AMQP_URL);
    const ch = await conn.createChannel();
    const q = await ch.checkQueue(names.dead);
    assert.equal(q.messageCount, dead.length, 'each dead delivery is in the dead-letter queue');
    await conn.close();
    // The promotion also moved nobody else here, so the only notice to alice is `promoted`: one delivery each.
    assert.ok(dead.some((d: { kind: string }) => d.kind === 'promoted'));

    // A stopped webhook gets nothing more.
    assert.equal((await w.call('DELETE', `/webhooks/${a.body.id}`, staff)).status, 204);
    assert.equal((await w.call('DELETE', '/staff/force-std?std_id=1&course_id=101&group_id=1', staff)).status, 204);
    await until(async () => (await w.call('GET', `/webhooks/${b.body.id}/deliveries`, staff)).body.deliveries.length > dead.length, 'the next notice to b');
    assert.equal((await w.call('GET', `/webhooks/${a.body.id}/deliveries`, staff)).body.deliveries.length, 1);
  });
  test('a delivery whose job never reached the broker is queued again by the sweep', { skip }, async () => {
    const staff = w.token(STAFF, 'staff');
    const c = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/ok`, secret: SECRET_A });
    assert.equal(c.status, 201);
    // Recorded and claimed for queueing, but (as when the broker was away, or the instance died,
    // at that moment) never published.
    const [id] = await notices.insertDeliveries([{ webhookId: c.body.id, noticeKey: 'sweep-test', kind: 'promoted', studentId: S.alice, body: '{"type":"notice"}' }]);
    assert.ok(id !== undefined);
    assert.ok((await notices.claimNewDeliveries(1000)).includes(id));
    assert.ok((await w.webhooks!.sweep()) >= 1);
    await until(async () => (await w.call('GET', `/webhooks/${c.body.id}/deliveries`, staff)).body.deliveries.some((d: { id: number; status: string }) => d.id === id && d.status === 'delivered'), 'the swept delivery');
    assert.ok(receiver.got.some((r) => r.path === '/ok' && r.headers['x-enrollment-delivery'] === String(id)));
  });

  test('the bound on active webhooks holds for concurrent registrations (PostgreSQL): exactly as many as fit are stored', { skip }, async () => {
    const active = (await notices.listWebhooks()).filter((h) => h.active).length;
    const max = active + 2;
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => notices.createWebhook({ url: `${receiver.url}/cap-${i}`, secret: SECRET_A, kinds: ['seatAvailable'], createdBy: STAFF }, max)),
    );
    const made = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as { code?: string; statusCode?: number }] : []));
    assert.equal(made.length, 2, 'two fit under the bound');
    assert.equal(refused.length, 6);
    for (const e of refused) {
      assert.equal(e.code, 'TOO_MANY_WEBHOOKS');
      assert.equal(e.statusCode, 429);
    }
    assert.equal((await notices.listWebhooks()).filter((h) => h.active).length, max);
    // Stopped again: the later tests see the webhooks they had.
    for (const h of made) await notices.deactivateWebhook(h.id);
  });

  test('the delivery queue reconnects after its broker connection is closed, and deliveries go on', { skip }, async () => {
    const ctl = promisify(execFile);
    let pid: string | undefined;
    try {
      const { stdout } = await ctl('rabbitmqctl', ['-q', 'list_connections', 'pid', 'client_properties'], { timeout: 30_000 });
      pid = stdout.split('\n').find((l) => l.includes(`"${names.work}"`))?.split('\t')[0];
    } catch (err) {
      if (process.env.CI) throw err;
      return; // rabbitmqctl not usable here: nothing to observe
    }
    assert.ok(pid, 'the delivery queue names its connection');
    await ctl('rabbitmqctl', ['-q', 'close_connection', pid, 'test: broker connection lost'], { timeout: 30_000 });
    await until(() => queue!.connected === false, 'the loss to be seen', 15_000);
    await until(() => queue!.connected, 'the reconnect', 30_000);
    const staff = w.token(STAFF, 'staff');
    const hooks = (await w.call('GET', '/webhooks', staff)).body.webhooks as { id: number; url: string; active: boolean }[];
    const ok = hooks.find((h) => h.url.endsWith('/ok') && h.active)!;
    const before = (await w.call('GET', `/webhooks/${ok.id}/deliveries`, staff)).body.deliveries.length;
    // A new notice after the reconnect: staff close Algorithms, whose members are told.
    assert.equal((await w.call('POST', '/sections/101/1/close', staff)).status, 200);
    await until(async () => {
      const ds = (await w.call('GET', `/webhooks/${ok.id}/deliveries`, staff)).body.deliveries as { kind: string; status: string }[];
      return ds.length > before && ds.filter((d) => d.kind === 'sectionClosed').every((d) => d.status === 'delivered');
    }, 'deliveries after the reconnect');
  });
});
}

/**
 * An embedded store, a receiver and a seeded world over them, as main.ts wires embedded mode: the
 * active webhooks kept by the outbox, read again when one is registered; deliveries queued in PGlite.
 */
async function startEmbedded(thread: 'main' | 'worker', webhooks?: { maxAttempts?: number; baseDelayMs?: number; maxActive?: number }) {
  const { outbox, wake } = createTestOutbox({ cacheWebhooks: true });
  const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1, outbox, thread });
  await store.migrate();
  const receiver = await startReceiver();
  const w = await startNoticesWorld({
    persistence: store,
    seed: true,
    queue: (p) => createDatabaseDeliveryQueue({ store: p.notices!, logger: quietLogger, pollMs: 100 }),
    // The receiver listens on 127.0.0.1: refused unless private targets are allowed (they are off by default).
    webhooks: { ...webhooks, allowPrivateTargets: true },
    outboxWake: wake,
  });
  const stop = async () => {
    await w.stop();
    await receiver.close();
    await store.close();
  };
  return { w, receiver, stop };
}

// PGlite on the engine's thread, and on its own worker thread, where the outbox's step of a group
// commit runs back on the engine's thread inside the worker's transaction (pglite-thread.ts).
for (const thread of ['main', 'worker'] as const)
describe(`webhooks, embedded mode (deliveries queued in PGlite, PGLITE_THREAD=${thread})`, { timeout: 120_000 }, () => {
  test('a notice is delivered, signed, and listed with its attempt', async () => {
    const { w, receiver, stop } = await startEmbedded(thread, { maxAttempts: 3, baseDelayMs: 100 });
    const staff = w.token(STAFF, 'staff');
    const hook = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/flaky`, secret: SECRET_A });
    assert.equal(hook.status, 201);
    await promoteAlice(w);
    await until(async () => (await w.call('GET', `/webhooks/${hook.body.id}/deliveries`, staff)).body.deliveries[0]?.status === 'delivered', 'delivery');
    const got = receiver.got.filter((r) => r.path === '/flaky');
    assert.equal(got.length, 3);
    for (const r of got) verify(SECRET_A, r);
    assert.ok(got[2]!.at - got[1]!.at >= 200 - 5, 'backoff doubles');
    await stop();
  });

  test("a webhook's deliveries page back with `before` and filter by `status` (probe N: past the newest 500, dead deliveries could not be reached)", async () => {
    const { w, receiver, stop } = await startEmbedded(thread, { maxAttempts: 1, baseDelayMs: 100 });
    const staff = w.token(STAFF, 'staff');
    // Its first two requests fail (500): with one attempt each, two deliveries end dead, the rest delivered.
    const hook = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/flaky`, secret: SECRET_A });
    assert.equal(hook.status, 201);
    await promoteAlice(w); // one notice (alice promoted); alice and f2 now hold Algorithms
    for (const name of ['Algorithms I', 'Algorithms II', 'Algorithms III']) {
      assert.equal((await w.call('PATCH', '/sections/101/1', staff, { name })).status, 200); // a sectionChanged to each member
    }
    type D = { id: number; status: string };
    const list = async (query: string): Promise<D[]> => {
      const r = await w.call('GET', `/webhooks/${hook.body.id}/deliveries${query}`, staff);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.deliveries as D[];
    };
    await until(async () => {
      const all = await list('');
      return all.length === 7 && all.every((d) => d.status === 'delivered' || d.status === 'dead');
    }, 'seven finished deliveries');
    const all = await list('');
    assert.deepEqual(all.map((d) => d.id), [...all.map((d) => d.id)].sort((a, b) => b - a), 'newest first');
    const dead = await list('?status=dead');
    assert.equal(dead.length, 2, JSON.stringify(all));
    assert.ok(dead.every((d) => d.status === 'dead'));
    const delivered = await list('?status=delivered');
    assert.equal(delivered.length, 5);
    // Pages of three: no delivery twice, none left out.
    const pages: D[][] = [await list('?limit=3')];
    for (;;) {
      const last = pages.at(-1) as D[];
      if (last.length < 3) break;
      pages.push(await list(`?limit=3&before=${(last.at(-1) as D).id}`));
    }
    assert.deepEqual(pages.flat().map((d) => d.id), all.map((d) => d.id));
    assert.deepEqual((await list(`?status=delivered&before=${(delivered[0] as D).id}`)).map((d) => d.id), delivered.slice(1).map((d) => d.id));
    assert.equal((await w.call('GET', `/webhooks/${hook.body.id}/deliveries?status=lost`, staff)).status, 400);
    assert.equal((await w.call('GET', `/webhooks/${hook.body.id}/deliveries?before=0`, staff)).status, 400);
    await stop();
  });

  test('deleting a webhook stops its deliveries: the one retrying is cancelled and not sent again', async () => {
    const { w, receiver, stop } = await startEmbedded(thread, { maxAttempts: 8, baseDelayMs: 300 });
    const staff = w.token(STAFF, 'staff');
    const hook = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/down`, secret: SECRET_B });
    assert.equal(hook.status, 201);
    await promoteAlice(w);
    const deliveries = async () => (await w.call('GET', `/webhooks/${hook.body.id}/deliveries`, staff)).body.deliveries;
    await until(async () => (await deliveries())[0]?.status === 'retrying', 'a failed first attempt');
    assert.equal((await w.call('DELETE', `/webhooks/${hook.body.id}`, staff)).status, 204);
    const sentAtDelete = receiver.got.filter((r) => r.path === '/down').length;
    const d = (await deliveries())[0];
    assert.equal(d.status, 'cancelled', JSON.stringify(d));
    assert.ok(d.finished_at, 'a cancelled delivery is finished');
    // Backoff 300, 600, 1,200 ms: three more attempts would have come by now.
    await new Promise((r) => setTimeout(r, 2_500));
    const sentAfter = receiver.got.filter((r) => r.path === '/down').length;
    // An attempt already running when the webhook was deleted may still land; nothing after it.
    assert.ok(sentAfter <= sentAtDelete + 1, `attempts after the delete: ${sentAfter - sentAtDelete}`);
    assert.equal((await deliveries())[0].status, 'cancelled');
    await stop();
  });

  test('at most WEBHOOK_MAX_ACTIVE webhooks are active: one more is 429 TOO_MANY_WEBHOOKS and stores nothing; deleted ones do not count', async () => {
    const { w, receiver, stop } = await startEmbedded(thread, { maxActive: 3 });
    try {
      const staff = w.token(STAFF, 'staff');
      const register = (path: string) => w.call('POST', '/webhooks', staff, { url: `${receiver.url}${path}`, secret: SECRET_A });
      const ids: number[] = [];
      for (const path of ['/a', '/b', '/c']) {
        const r = await register(path);
        assert.equal(r.status, 201, JSON.stringify(r.body));
        ids.push(r.body.id);
      }
      const over = await register('/d');
      assert.equal(over.status, 429, JSON.stringify(over.body));
      assert.equal(over.body.code, 'TOO_MANY_WEBHOOKS');
      assert.match(over.body.reason, /3 active webhooks, the most allowed \(WEBHOOK_MAX_ACTIVE=3\); delete one/);
      const listed = async () => (await w.call('GET', '/webhooks', staff)).body.webhooks as { url: string; active: boolean }[];
      assert.equal((await listed()).length, 3, 'nothing was stored');
      assert.ok(!(await listed()).some((h) => h.url.endsWith('/d')));
      // A deleted webhook frees its place; concurrent registrations for one place: one gets it.
      assert.equal((await w.call('DELETE', `/webhooks/${ids[0]}`, staff)).status, 204);
      const burst = await Promise.all(['/e', '/f', '/g', '/h'].map(register));
      assert.deepEqual(burst.map((r) => r.status).sort(), [201, 429, 429, 429], JSON.stringify(burst.map((r) => r.body)));
      const now = await listed();
      assert.equal(now.filter((h) => h.active).length, 3);
      assert.equal(now.length, 4, 'the deleted one is kept (inactive), the refused ones are not stored');
      // A notice fans out to the active ones only: three deliveries.
      await promoteAlice(w);
      await until(() => receiver.got.length >= 3, 'the deliveries');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(receiver.got.length, 3);
    } finally {
      await stop();
    }
  });

  test('a fired seat watch is delivered: its delivery is recorded with the watch marked fired', async () => {
    const { w, receiver, stop } = await startEmbedded(thread);
    const staff = w.token(STAFF, 'staff');
    const hook = await w.call('POST', '/webhooks', staff, { url: `${receiver.url}/ok`, secret: SECRET_A, kinds: ['seatAvailable'] });
    assert.equal(hook.status, 201);
    const tiny = { course_id: 106, group_id: 1 }; // 1 seat, no reserve
    assert.equal((await w.call('PUT', '/student/course', w.token(S.f1), tiny)).status, 204);
    assert.equal((await w.call('POST', '/me/watches', w.token(S.alice), tiny)).status, 201);
    assert.equal((await w.call('DELETE', '/student/course?course_id=106', w.token(S.f1))).status, 204);
    await until(async () => (await w.call('GET', `/webhooks/${hook.body.id}/deliveries`, staff)).body.deliveries[0]?.status === 'delivered', 'the seatAvailable delivery');
    const got = receiver.got.filter((r) => r.path === '/ok');
    assert.equal(got.length, 1);
    verify(SECRET_A, got[0]!);
    const n = JSON.parse(got[0]!.body).notice;
    assert.equal(n.kind, 'seatAvailable');
    assert.equal(n.student_id, S.alice);
    assert.equal((await w.call('GET', '/me/watches', w.token(S.alice))).body.watches.length, 0, 'the watch ended');
    await stop();
  });
});
