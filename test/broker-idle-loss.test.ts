import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createEngine, type Engine } from '../src/engine/engine.js';
import { TokenService } from '../src/http/auth.js';
import { buildApp, type App } from '../src/http/app.js';
import { AmqpLog } from '../src/persistence/amqp-log.js';
import { createBatcher } from '../src/persistence/batcher.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { deleteQueues } from './support/amqp.js';
import { C, S, SECRET, seedData, T0, TTL_SECONDS, WINDOW_MS, type Reply } from './support/http-fixture.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';
import { inject } from './support/store-harness.js';
import { TcpProxy } from './support/tcp-proxy.js';

/**
 * Regression (registration-day probe): full mode, one instance. The broker connection is cut while
 * no write is in flight, and restored; once `/ready` says the broker is connected again, the next
 * write must be acknowledged on the new connection, with no reload and no new lease epoch. Before
 * the fix, losing the connection always marked a publish "possibly lost" (AmqpLog.failedSince),
 * even with every publish confirmed, so that write was refused 503 ("the message broker was lost;
 * the engine is recovering"), the engine rolled back, raised its epoch and reloaded everything.
 *
 * The second test keeps the safety property: a publish whose connection closes before its
 * confirm is still in doubt, so the engine fences (new epoch) and reloads before the next write.
 * The third: only events count; a marker (a read copy's catch-up) or a fence whose confirm is
 * lost changes no one's state, so it puts nothing in doubt (before, it did, and the owner's next
 * write was refused 503 and everything reloaded).
 *
 * Full mode in process over the real PostgreSQL and RabbitMQ; the engine's broker connection goes
 * through a TCP proxy the test cuts (the shared broker is never touched); the in-process batcher
 * reads the stream on a direct connection.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const is2xx = (r: Reply) => r.status >= 200 && r.status < 300;

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the broker connection lost and restored (full mode, real PostgreSQL and RabbitMQ)', { concurrency: false }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  const prefix = uniqueName('broker_idle_loss');
  const names = streamNames(prefix);
  const clock = { now: T0 + 5 * 60_000 };
  const signer = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => clock.now });
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  let db: SqlClient;
  let proxy: TcpProxy;
  let store: FullStore;
  let engine: Engine;
  let app: App;
  let reloads = 0;

  const enroll = (student: number, [courseId, groupId]: readonly [number, number]) =>
    inject(app, 'PUT', '/student/course', { token: signer.issue({ id: student, role: 'student' }), body: { course_id: courseId, group_id: groupId } });
  const epoch = async () => {
    const r = await db.query<{ epoch: string }>('SELECT epoch FROM shard_leases WHERE log_name = $1 AND shard = 0', [names.stream]);
    return Number(r.rows[0]?.epoch);
  };
  const ready = () => inject(app, 'GET', '/ready');
  /** Cuts the engine's broker link until `/ready` says the broker is gone, keeps it cut a while, restores it, waits for `/ready`. */
  async function outage(holdMs: number): Promise<void> {
    proxy.cut();
    await waitUntil(async () => (await ready()).body?.checks?.broker?.ok === false, 10_000, '/ready to report the broker lost');
    await sleep(holdMs);
    proxy.resume();
    await waitUntil(
      async () => {
        const r = await ready();
        return r.status === 200 && r.body?.checks?.broker?.ok === true;
      },
      20_000,
      '/ready to report the broker connected and the engine ready',
    );
  }

  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
    db = createPgClient(tdb.url, { max: 2 });
    const u = new URL(AMQP_URL);
    proxy = await TcpProxy.start(u.hostname, Number(u.port || 5672));
    store = await createFullStore({
      databaseUrl: tdb.url,
      rabbitmqUrl: proxy.rewrite(AMQP_URL),
      prefix,
      logger,
      batchMaxEvents: 500,
      runBatcher: true,
      batcherFactory: (o) => createBatcher({ ...o, amqpUrl: AMQP_URL }),
      // Long: this test is about the broker, not about leases (a loaded machine must not lose them).
      leaseTtlMs: 30_000,
    });
    await store.migrate();
    engine = createEngine({ persistence: store, cluster: store, logger, enrollmentWindowMs: WINDOW_MS, now: () => clock.now });
    await engine.start();
    app = await buildApp({ engine, logger, jwtSecret: SECRET, tokenTtlSeconds: TTL_SECONDS, readiness: () => store.readiness(), now: () => clock.now });
    await engine.importBatch(seedData(), { requestId: 'seed', actor: 'system' });
    engine.onReloaded(() => reloads++);
  });
  after(async () => {
    if (skip) return;
    await app?.close().catch(() => undefined);
    engine?.stop();
    await store?.close().catch(() => undefined);
    await proxy?.close();
    await db?.close().catch(() => undefined);
    await deleteQueues([names.stream, names.dead]).catch(() => undefined);
    await tdb?.drop();
  });

  test('cut while idle: once /ready says the broker is back, the next write is acknowledged, with no reload and no new epoch', { skip, timeout: 60_000 }, async () => {
    const warm = await enroll(S.f1, C.algo2);
    assert.ok(is2xx(warm), `a write before the outage is acknowledged: ${warm.status} ${warm.raw}`);
    const epochBefore = await epoch();
    const acceptedBefore = proxy.accepted;
    reloads = 0;

    await outage(1500);
    assert.ok(proxy.accepted > acceptedBefore, 'the engine is on a new broker connection');

    const first = await enroll(S.f2, C.algo2);
    assert.ok(is2xx(first), `the first write after the broker is back is acknowledged: ${first.status} ${first.raw}`);
    assert.equal(reloads, 0, 'no reload: nothing was in doubt');
    assert.equal(await epoch(), epochBefore, 'the lease epoch is unchanged (no fence needed)');
    const second = await enroll(S.f3, C.algo2);
    assert.ok(is2xx(second), `and the one after it: ${second.status} ${second.raw}`);
    const registered = engine.dumpState().sections.find((s) => s.info.courseId === C.algo2[0] && s.info.groupId === C.algo2[1])?.registered ?? [];
    for (const id of [S.f1, S.f2, S.f3]) assert.ok(registered.includes(id), `student ${id} is registered`);
  });

  test('a marker or a fence whose connection closes before its confirm puts nothing in doubt; events do', { skip, timeout: 60_000 }, async () => {
    const u = new URL(AMQP_URL);
    const own = await TcpProxy.start(u.hostname, Number(u.port || 5672));
    const stream = uniqueName('broker_marker_loss');
    const log = new AmqpLog({ url: own.rewrite(AMQP_URL), stream, logger });
    try {
      const lostBeforeItsConfirm = async (m: Parameters<AmqpLog['publish']>[0]) => {
        await waitUntil(async () => log.connect().then(() => true, () => false), 20_000, 'a broker connection');
        own.stall();
        const pending = log.publish(m).then(() => 'confirmed', () => 'refused');
        await sleep(200);
        own.cut();
        own.flow();
        assert.equal(await pending, 'refused');
        own.resume();
      };
      await lostBeforeItsConfirm({ marker: 'read-copy-catch-up' });
      assert.equal(log.failedSince, null, 'a lost marker put the log in doubt');
      await lostBeforeItsConfirm({ fence: { shard: 0, epoch: 7, owner: 'test' } });
      assert.equal(log.failedSince, null, 'a lost fence put the log in doubt');
      await lostBeforeItsConfirm({ events: [], owner: 'test', epochs: {} } as never);
      assert.notEqual(log.failedSince, null, 'a lost events message must put the log in doubt');
    } finally {
      await log.close().catch(() => undefined);
      await own.close();
      await deleteQueues([stream]).catch(() => undefined);
    }
  });

  test('a connection attempt that finishes after close() leaves no connection open (it would keep the process alive)', { skip, timeout: 60_000 }, async () => {
    const u = new URL(AMQP_URL);
    const own = await TcpProxy.start(u.hostname, Number(u.port || 5672));
    const stream = uniqueName('broker_close_race');
    const log = new AmqpLog({ url: own.rewrite(AMQP_URL), stream, logger });
    try {
      own.stall();
      // A write stops waiting for the attempt; the attempt goes on in the background.
      await assert.rejects(log.connect({ waitMs: 100 }));
      await log.close();
      own.flow();
      // The attempt completes now (the broker answers): it must close what it opened.
      await waitUntil(async () => own.openConnections === 0, 10_000, 'the late connection to be closed');
      await sleep(500);
      assert.equal(own.openConnections, 0, 'a connection opened after close() stayed open');
      assert.equal(log.connected, false);
    } finally {
      await own.close();
      await deleteQueues([stream]).catch(() => undefined);
    }
  });

  test('a publish whose connection closes before its confirm is still in doubt: the engine fences and reloads before the next write', { skip, timeout: 60_000 }, async () => {
    const epochBefore = await epoch();
    reloads = 0;
    // The link hangs: the publish leaves the engine but reaches no broker; then the connection is reset.
    proxy.stall();
    const pending = enroll(S.alice, C.tiny);
    await sleep(300);
    proxy.cut();
    proxy.flow();
    const refused = await pending;
    assert.equal(refused.status, 503, `the write whose confirm never came is answered 503: ${refused.raw}`);
    // In doubt (its message may be in the stream): the reason says so, in the words every such 503 uses.
    assert.match(String(refused.body?.reason), /its outcome is unknown, check before retrying/, `the 503 says its outcome is unknown: ${refused.raw}`);
    await waitUntil(async () => (await ready()).body?.checks?.broker?.ok === false, 10_000, '/ready to report the broker lost');
    await sleep(500);
    proxy.resume();
    await waitUntil(async () => (await ready()).body?.checks?.broker?.ok === true, 20_000, 'the broker connected again');

    const next = await enroll(S.bea, C.tiny);
    assert.ok(is2xx(next), `the next write is acknowledged after the reload: ${next.status} ${next.raw}`);
    assert.ok(reloads >= 1, 'the engine reloaded its state before deciding it');
    assert.ok((await epoch()) > epochBefore, 'the lease epoch was raised and fenced (the old publish is in doubt)');
    const tiny = engine.dumpState().sections.find((s) => s.info.courseId === C.tiny[0] && s.info.groupId === C.tiny[1]);
    assert.deepEqual(tiny?.registered, [S.bea], 'the refused enrollment is not there; the acknowledged one is (capacity 1)');
  });
});
