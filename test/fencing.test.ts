import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { AmqpLog, createFenceFilter, type LogMessage } from '../src/persistence/amqp-log.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import { createLeaseManager } from '../src/persistence/leases.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { shardOfCourse, type DomainEvent } from '../src/persistence/types.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Issue 14: the lease (epoch = fencing token) and the rule every reader applies to the log: an
 * events message published under an epoch older than a fence that precedes it is ignored.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function department(id: number): DomainEvent {
  return { type: 'departmentCreated', seq: 1, department: { id, name: `D${id}` }, cause: { requestId: `r${id}`, actor: 'system', at: 0 } };
}

describe('fence filter', () => {
  test('admits messages of the current or a newer epoch, ignores older ones, per shard', () => {
    const f = createFenceFilter();
    assert.ok(f.admits({}), 'a message without epochs (before issue 14) is admitted');
    assert.ok(f.admits({ epochs: { 0: 1 } }), 'no fence yet');
    assert.equal(f.fence({ shard: 0, epoch: 2, owner: 'b' }), true);
    assert.ok(!f.admits({ epochs: { 0: 1 } }), 'older epoch after the fence');
    assert.ok(f.admits({ epochs: { 0: 2 } }) && f.admits({ epochs: { 0: 3 } }));
    assert.ok(f.admits({ epochs: { 1: 1 } }), 'another shard is not fenced');
    assert.ok(!f.admits({ epochs: { 1: 1, 0: 1 } }), 'one stale shard makes the whole message stale');
    assert.equal(f.fence({ shard: 0, epoch: 1, owner: 'a' }), false, 'a lower fence does not lower the epoch');
    assert.ok(!f.admits({ epochs: { 0: 1 } }));
  });

  test('the shard function keeps every group of a course together and spreads courses', () => {
    assert.equal(shardOfCourse(40101, 1), 0);
    const seen = new Set<number>();
    for (let c = 1000; c < 1200; c++) {
      const s = shardOfCourse(c, 8);
      assert.ok(s >= 0 && s < 8);
      seen.add(s);
    }
    assert.equal(seen.size, 8, 'two hundred courses reach every one of 8 shards');
  });
});

describe('leases and fences (real PostgreSQL and RabbitMQ)', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  let db: SqlClient;
  const prefix = uniqueName('fence_test');
  const stream = streamNames(prefix).stream;

  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
    db = createPgClient(tdb.url, { max: 4 });
    await migrate(db);
  });
  after(async () => {
    if (skip) return;
    await db.close();
    const n = streamNames(prefix);
    await deleteQueues([n.stream, n.dead]);
    await tdb.drop();
  });

  test('one owner at a time; a second takes over only after expiry (or release), with a higher epoch and a fence', { skip, timeout: 60_000 }, async () => {
    const fences: { owner: string; epoch: number }[] = [];
    const make = (name: string) =>
      createLeaseManager({
        db,
        logName: `${stream}.leases-test`,
        shards: 1,
        instanceId: name,
        address: `http://${name}`,
        ttlMs: 1000,
        logger,
        publishFence: async (f) => {
          fences.push({ owner: f.owner, epoch: f.epoch });
        },
        onChange: () => undefined,
      });
    const a = make('a');
    const b = make('b');
    await a.start();
    await b.start();
    assert.ok(a.canWrite(0) && !b.canWrite(0), 'the first one owns the shard');
    assert.deepEqual(b.route(0), { self: false, address: 'http://a' }, 'the other routes writes to its address');
    const first = a.epochOf(0) as number;
    await sleep(1500);
    assert.ok(a.canWrite(0) && !b.canWrite(0), 'renewed: still the same owner after longer than the lease');
    // The owner stops renewing (as if cut off): its own deadline passes before the other takes over.
    await a.stop();
    const stoppedAt = performance.now();
    while (a.canWrite(0)) await sleep(10);
    const refusedAfter = performance.now() - stoppedAt;
    while (!b.canWrite(0)) {
      assert.ok(performance.now() - stoppedAt < 10_000, 'b took over');
      await sleep(20);
    }
    const tookAfter = performance.now() - stoppedAt;
    assert.ok(refusedAfter < tookAfter, `a stopped acknowledging (${Math.round(refusedAfter)} ms) before b could own (${Math.round(tookAfter)} ms)`);
    assert.ok((b.epochOf(0) as number) > first, 'the new owner has a higher epoch');
    assert.deepEqual(fences.at(-1), { owner: 'b', epoch: b.epochOf(0) }, 'and published its fence');
    // A graceful release lets the next one take over at its next round, without waiting for expiry.
    const c = make('c');
    await c.start();
    assert.ok(!c.canWrite(0));
    await b.stop();
    await b.release();
    const releasedAt = performance.now();
    while (!c.canWrite(0)) await sleep(20);
    assert.ok(performance.now() - releasedAt < 1000, 'taken within a lease round of the release');
    await c.stop();
  });

  test('renewed(): a deadline passed only because this process was busy is renewed under the same epoch (a late confirm may be acknowledged); a lease another took is not', { skip, timeout: 60_000 }, async () => {
    const logName = `${stream}.renewed-test`;
    const make = (name: string) =>
      createLeaseManager({ db, logName, shards: 1, instanceId: name, address: `http://${name}`, ttlMs: 1000, logger, publishFence: async () => undefined, onChange: () => undefined });
    const a = make('a');
    const b = make('b');
    try {
      await a.start();
      const epoch = a.epochOf(0) as number;
      assert.ok(a.canWrite(0));
      // Busy (a long synchronous stretch, a loaded machine): no round runs, the own deadline passes.
      const busyUntil = performance.now() + 1100;
      while (performance.now() < busyUntil) {
        /* the event loop is held */
      }
      assert.equal(a.canWrite(0), false, 'past its own deadline');
      assert.equal(await a.renewed({ 0: epoch }, 1000), true, 'renewed under the same epoch: nobody took it');
      assert.ok(a.canWrite(0) && a.epochOf(0) === epoch);
      // Another instance takes it while this one is stopped (cut off): renewed() says so, at once or after its wait.
      await a.stop();
      await b.start();
      while (!b.canWrite(0)) await sleep(20);
      assert.equal(await a.renewed({ 0: epoch }, 500), false, 'a lease another instance took is not renewed');
      assert.equal(await b.renewed({ 0: epoch }, 100), false, 'nor is an epoch that is not the holder\'s');
      assert.equal(await b.renewed({ 0: b.epochOf(0) as number }, 100), true);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  test('renewed(): a deadline passed while a round is still running (its heartbeat slowed by the database) is renewed by that round', { skip, timeout: 60_000 }, async () => {
    let slow = false;
    // The project's own SqlClient interface: the heartbeat write waits 900 ms while `slow`, the renewal does not.
    const slowDb: SqlClient = {
      ...db,
      query: (async (text: string, params?: unknown[]) => {
        if (slow && text.includes('INSERT INTO engine_instances')) await sleep(900);
        return db.query(text, params);
      }) as SqlClient['query'],
    };
    const m = createLeaseManager({ db: slowDb, logName: `${stream}.running-round`, shards: 1, instanceId: 'a', address: 'http://a', ttlMs: 1000, logger, publishFence: async () => undefined, onChange: () => undefined });
    try {
      await m.start();
      const epoch = m.epochOf(0) as number;
      slow = true;
      const since = performance.now();
      while (m.canWrite(0)) {
        assert.ok(performance.now() - since < 5000, 'the deadline passed');
        await sleep(10);
      }
      assert.equal(m.behind, false, 'the round is running on time, not overdue');
      slow = false;
      assert.equal(await m.renewed({ 0: epoch }, 2000), true, 'the running round renewed it under the same epoch');
      assert.ok(m.canWrite(0));
    } finally {
      await m.stop();
    }
  });

  test('SHARDS=1024 on one instance with a 500 ms lease: it owns every shard and keeps them, round after round (one statement per round, not one per shard)', { skip, timeout: 60_000 }, async () => {
    // The full store's own lease pool: two connections, a connection wait of half the lease.
    const TTL = 500;
    const leaseDb = createPgClient(tdb.url, { max: 2, connectionTimeoutMillis: TTL / 2, queryTimeoutMillis: TTL * 0.8 });
    let fences = 0;
    const m = createLeaseManager({
      db: leaseDb,
      logName: `${stream}.many-shards`,
      shards: 1024,
      instanceId: 'solo',
      address: 'http://solo',
      ttlMs: TTL,
      logger,
      publishFence: async () => void (fences += 1),
      onChange: () => undefined,
    });
    try {
      await m.start();
      assert.ok(m.ownsAll(), `owns every shard after its first round (holds ${m.owned().size})`);
      assert.equal(fences, 1024, 'one fence per shard won');
      // Many rounds (every 100 ms): none fails, and every shard stays writable.
      for (let i = 0; i < 20; i++) {
        await sleep(100);
        assert.equal(m.roundFailing, false, `round ${i} failed`);
        const lapsed = [...Array(1024).keys()].filter((k) => !m.canWrite(k));
        assert.deepEqual(lapsed.slice(0, 5), [], `${lapsed.length} shards past their deadline after ${(i + 1) * 100} ms`);
      }
    } finally {
      await m.stop();
      await leaseDb.close();
    }
  });

  test('a deferred start with a live peer takes no lease and writes no heartbeat until join(); alone, it takes its leases at once', { skip, timeout: 60_000 }, async () => {
    const logName = `${stream}.join-test`;
    const make = (name: string) =>
      createLeaseManager({
        db,
        logName,
        shards: 2,
        instanceId: name,
        address: `http://${name}`,
        ttlMs: 1000,
        logger,
        publishFence: async () => undefined,
        onChange: () => undefined,
      });
    const a = make('a');
    const b = make('b');
    try {
      // Alone (no live peer): the deferred start changes nothing, the first round takes every shard.
      await a.start({ deferIfPeers: true });
      assert.ok(a.joined, 'alone, it joins at its start');
      assert.ok(a.canWrite(0) && a.canWrite(1), 'and owns both shards from its first round');
      // A live peer: b follows the routes only (its server would not listen yet).
      await b.start({ deferIfPeers: true });
      assert.equal(b.joined, false);
      assert.deepEqual(b.route(0), { self: false, address: 'http://a' }, 'writes it is asked for go to the owner');
      assert.equal(b.peers, 1, 'it counts the owner as a peer');
      // Several of a's rounds: b is no live instance to a, so a keeps its share (no shard given up to b).
      await sleep(1500);
      const instances = await db.query<{ instance: string }>('SELECT instance FROM engine_instances WHERE log_name = $1 AND expires_at > now() ORDER BY instance', [logName]);
      assert.deepEqual(instances.rows.map((r) => r.instance), ['a'], 'no heartbeat of b before it joined');
      assert.equal(a.peers, 0);
      assert.ok(a.canWrite(0) && a.canWrite(1) && b.owned().size === 0, 'b owns nothing before join()');
      // Listening now: b registers, a gives a surplus shard up, b takes it.
      b.join();
      await waitUntil(() => b.owned().size === 1, 10_000, 'b to take a share after joining');
      assert.ok(b.joined);
      await waitUntil(() => a.owned().size === 1, 10_000, 'a to hold one shard');
    } finally {
      await a.stop();
      await b.stop();
      await a.release();
      await b.release();
    }
  });

  test('a fourth instance joining three that hold 2 of 6 shards each gets a share (2/2/1/1), one shard moved at a time; a stopping instance counts for no share', { skip, timeout: 90_000 }, async () => {
    // Probe M: the upper share ceil(6/4) = 2 was the only bound, so the fourth instance got nothing.
    const logName = `${stream}.share-test`;
    /** Every takeover publishes a fence: counting them shows shards moving. */
    let takeovers = 0;
    const make = (name: string) =>
      createLeaseManager({
        db,
        logName,
        shards: 6,
        instanceId: name,
        address: `http://${name}`,
        ttlMs: 1000,
        logger,
        publishFence: async () => {
          takeovers += 1;
        },
        onChange: () => undefined,
      });
    const managers = ['a', 'b', 'c'].map(make);
    const sizes = () => managers.map((m) => m.owned().size);
    const all = () => sizes().reduce((x, y) => x + y, 0);
    try {
      for (const m of managers) await m.start();
      await waitUntil(() => sizes().every((n) => n === 2), 20_000, 'three instances holding 2 shards each');
      const d = make('d');
      managers.push(d);
      await d.start();
      await waitUntil(() => d.owned().size >= 1 && all() === 6 && sizes().every((n) => n >= 1 && n <= 2), 20_000, `a share for the fourth (${String(sizes())})`);
      // Settled: several rounds later nothing moves back and forth.
      const settled = sizes().join();
      let moves = takeovers;
      await sleep(2500);
      assert.equal(sizes().join(), settled, 'the shares stay as they are');
      assert.equal(takeovers, moves, 'no shard moved once settled');
      assert.deepEqual([...sizes()].sort(), [1, 1, 2, 2]);
      // d stops acquiring (a SIGTERM's hand-over) and releases: the others take its shards, and give none to it.
      d.stopAcquiring();
      await d.release();
      await waitUntil(() => managers.slice(0, 3).every((m) => m.owned().size === 2), 20_000, `the three to hold 2 each again (${String(sizes())})`);
      moves = takeovers;
      await sleep(2500);
      assert.deepEqual(sizes(), [2, 2, 2, 0], 'no shard given to the stopping instance');
      assert.equal(takeovers, moves, 'no shard moved for the stopping instance');
    } finally {
      for (const m of managers) await m.stop();
      for (const m of managers) await m.release();
    }
  });

  test("heartbeat rows of instances dead for over an hour are swept at a manager's start; recent ones and other logs' stay", { skip, timeout: 60_000 }, async () => {
    const logName = `${stream}.sweep-test`;
    await db.query(
      `INSERT INTO engine_instances (log_name, instance, address, expires_at) VALUES
         ($1, 'dead-long-ago', 'http://x', now() - interval '2 hours'),
         ($1, 'dead-recently', 'http://y', now() - interval '5 minutes'),
         ($2, 'other-log', 'http://z', now() - interval '2 hours')`,
      [logName, `${logName}.other`],
    );
    const m = createLeaseManager({
      db,
      logName,
      shards: 1,
      instanceId: 'sweeper',
      address: 'http://sweeper',
      ttlMs: 1000,
      logger,
      publishFence: async () => undefined,
      onChange: () => undefined,
    });
    await m.start();
    try {
      const rows = await db.query<{ log_name: string; instance: string }>(
        'SELECT log_name, instance FROM engine_instances WHERE log_name IN ($1, $2) ORDER BY instance',
        [logName, `${logName}.other`],
      );
      assert.deepEqual(
        rows.rows.map((r) => r.instance),
        ['dead-recently', 'other-log', 'sweeper'],
      );
    } finally {
      await m.release();
      await m.stop();
    }
  });

  test('a lease round that cannot reach the database marks the manager as failing, and the next one that can clears it', { skip, timeout: 60_000 }, async () => {
    const u = new URL(tdb.url);
    const proxy = await TcpProxy.start(u.hostname, Number(u.port || 5432));
    const viaProxy = createPgClient(proxy.rewrite(tdb.url), { max: 2, connectionTimeoutMillis: 500, queryTimeoutMillis: 500 });
    const m = createLeaseManager({
      db: viaProxy,
      logName: `${stream}.round-failing-test`,
      shards: 1,
      instanceId: 'r',
      address: 'http://r',
      ttlMs: 1000,
      logger,
      publishFence: async () => undefined,
      onChange: () => undefined,
    });
    try {
      await m.start();
      assert.equal(m.roundFailing, false);
      proxy.cut();
      await waitUntil(() => m.roundFailing, 10_000, 'a failed round');
      proxy.resume();
      await waitUntil(() => !m.roundFailing, 10_000, 'a round that reached the database again');
    } finally {
      await m.stop();
      await viaProxy.close().catch(() => undefined);
      await proxy.close();
    }
  });

  test('while shards drain for a hand-over nothing new is admitted, except a write a draining home holds, until the drain has seen its writes answered', { skip, timeout: 60_000 }, async () => {
    const p = uniqueName('admit');
    const store = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix: p, logger, batchMaxEvents: 100, runBatcher: false, shards: 2, forwarding: true });
    try {
      await store.load();
      assert.ok(store.decides(0) && store.decides(1), 'alone, this instance owns and decides both shards');
      const held = store.admitWrite(0);
      assert.ok(held, 'a write admitted before the hand-over');
      const handing = store.handOver();
      await sleep(50);
      assert.equal(store.admitWrite(0), null, 'no new write once the hand-over began');
      assert.equal(store.admitWrite(1), null);
      const fromHome = store.admitWrite(0, { forDrainingHome: true });
      assert.ok(fromHome, 'a write a draining home holds is still taken while the drain waits for a write of that shard');
      assert.equal(store.admitWrite(1, { forDrainingHome: true }), null, 'not for a shard with nothing left to drain');
      held();
      fromHome();
      assert.equal(store.admitWrite(0, { forDrainingHome: true }), null, 'once every admitted write of the shard is answered, nothing more gets in');
      await handing;
      assert.ok(!store.decides(0) && !store.decides(1), 'the shards were given up');
    } finally {
      await store.close();
      const n = streamNames(p);
      await deleteQueues([n.stream, n.dead]);
    }
  });

  test('replay and batcher ignore a deposed owner\'s messages after a newer fence, also after a restart', { skip, timeout: 60_000 }, async () => {
    const log = new AmqpLog({ url: AMQP_URL, stream, logger });
    await log.connect();
    const publish = (m: LogMessage) => log.publish(m);
    await publish({ events: [department(1)], owner: 'old', epochs: { 0: 5 } });
    await publish({ fence: { shard: 0, epoch: 6, owner: 'new' } });
    await publish({ events: [department(2)], owner: 'old', epochs: { 0: 5 } }); // stale: after the fence
    await publish({ events: [department(3)], owner: 'new', epochs: { 0: 6 } });

    const open = () => createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger, batchMaxEvents: 100, runBatcher: true });
    const s1 = await open();
    const loaded = await s1.load();
    assert.deepEqual(loaded.departments.map((d) => d.id).sort(), [1, 3], 'the replay ignored the stale message');
    const inDb = async () => (await db.query<{ id: number }>('SELECT id FROM departments ORDER BY id')).rows.map((r) => Number(r.id));
    for (let i = 0; i < 200 && JSON.stringify(await inDb()) !== '[1,3]'; i++) await sleep(50);
    assert.deepEqual(await inDb(), [1, 3], 'the batcher ignored it too');
    const f = await db.query<{ epoch: number }>('SELECT epoch FROM log_fences WHERE log_name = $1 AND shard = 0', [stream]);
    assert.ok(Number(f.rows[0]?.epoch) >= 6, 'the batcher recorded the fence with the batch');
    // The lease table started at 0 while the log holds a fence at 6: this owner took an epoch above
    // it, so its own writes are not ignored.
    await s1.append([department(4)]);
    await s1.close();

    // After the restart the database offset is past the fence: the fence is known from log_fences.
    await publish({ events: [department(5)], owner: 'old', epochs: { 0: 5 } }); // still stale
    await log.close();
    const s2 = await open();
    const again = await s2.load();
    assert.deepEqual(again.departments.map((d) => d.id).sort(), [1, 3, 4]);
    for (let i = 0; i < 200 && JSON.stringify(await inDb()) !== '[1,3,4]'; i++) await sleep(50);
    await sleep(300);
    assert.deepEqual(await inDb(), [1, 3, 4], 'a batcher restarted after the fence still ignores stale messages');
    await s2.close();
  });
});
