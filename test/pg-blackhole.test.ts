import assert from 'node:assert/strict';
import net from 'node:net';
import { listenOnLoopback, throughProxy } from './support/tcp-proxy.js';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import amqp from 'amqplib';
import pg from 'pg';
import { pino } from 'pino';
import { createEngine, type Engine } from '../src/engine/engine.js';
import { decodeMessage, offsetOf } from '../src/persistence/amqp-log.js';
import { createBatcher, type Batcher, type BatcherOptions } from '../src/persistence/batcher.js';
import { batcherThreadFactory } from '../src/persistence/batcher-thread.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { EngineError } from '../src/errors.js';
import { createPgClient, DatabaseTimeoutError } from '../src/persistence/pg-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { loadState } from '../src/persistence/state-store.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { NOW, meta, normalize, scenario } from './support/scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * PostgreSQL blackholed under the batcher: a TCP path that silently drops every byte on the
 * connections already open (no RST, no FIN, either way), as a firewall or NAT that lost its state
 * does, while PostgreSQL itself stays up. Found by a black-box probe: the batcher's statements had
 * no client-side bound, so a batch sent into the hole waited for ever ("idle in transaction" on the
 * server), nothing failed, and the tables stopped following the stream; its leader session believed
 * it led for ever. A real pause of PostgreSQL recovered, since its sockets stay intact.
 *
 * The proxy below sits between the batcher and the real PostgreSQL (the engine that publishes the
 * changes talks to PostgreSQL and RabbitMQ directly) and models the hole faithfully: bytes on a
 * blackholed connection are read and dropped, and neither side's FIN or close reaches the other, so
 * the server keeps the batcher's sessions (holding the batch's row lock and the advisory lock) as
 * zombies. Healing lets new connections through; the blackholed ones stay dead, their bytes lost.
 */
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
/** The batcher's statement bound in these tests (DATABASE_QUERY_TIMEOUT_MS, default 30 s). */
const QUERY_TIMEOUT_MS = 1000;
const noop = () => undefined;

interface Pair {
  client: net.Socket;
  upstream: net.Socket | null;
  /** Blackholed: nothing moves either way any more, ends and closes included. */
  dead: boolean;
  /** It forwarded before the hole opened (a connection the batcher was using). */
  wasLive: boolean;
  abandoned: boolean;
}

class BlackholeProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<Pair>();
  private black = false;
  private trigger: Buffer | null = null;
  /** performance.now() when the hole opened. */
  blackAt: number | null = null;
  /** performance.now() of each end or close the client sent on a connection that was live before the hole. */
  readonly abandonedAt: number[] = [];
  /** Connections the client opened while the hole was open (its retries). */
  attemptsWhileBlack = 0;

  private constructor(
    private readonly host: string,
    private readonly port: number,
  ) {
    this.server = net.createServer({ allowHalfOpen: true }, (c) => this.onClient(c));
  }

  static async start(url: string): Promise<BlackholeProxy> {
    const u = new URL(url);
    const p = new BlackholeProxy(u.hostname, Number(u.port || 5432));
    await listenOnLoopback(p.server);
    return p;
  }

  /** `url` through the proxy. */
  rewrite(url: string): string {
    return throughProxy(url, this.server);
  }

  /** Opens the hole the moment a client sends bytes holding `text` (those bytes are the first lost). */
  blackholeOn(text: string): void {
    this.trigger = Buffer.from(text);
  }

  blackhole(): void {
    if (this.black) return;
    this.black = true;
    this.blackAt = performance.now();
    for (const p of this.pairs) p.dead = true;
  }

  /** New connections go through again; the blackholed ones stay dead. */
  heal(): void {
    this.black = false;
  }

  get isBlack(): boolean {
    return this.black;
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream?.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onClient(client: net.Socket): void {
    client.on('error', noop);
    const pair: Pair = { client, upstream: null, dead: this.black, wasLive: !this.black, abandoned: false };
    this.pairs.add(pair);
    const abandon = () => {
      if (pair.dead && pair.wasLive && !pair.abandoned) {
        pair.abandoned = true;
        this.abandonedAt.push(performance.now());
      }
    };
    client.on('end', abandon);
    client.on('close', abandon);
    if (this.black) {
      // A connection attempt into the hole: accepted by nobody that answers.
      this.attemptsWhileBlack += 1;
      client.on('data', noop);
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ host: this.host, port: this.port, allowHalfOpen: true });
    upstream.setNoDelay(true);
    upstream.on('error', noop);
    pair.upstream = upstream;
    client.on('data', (d: Buffer) => {
      if (!pair.dead && this.trigger && d.includes(this.trigger)) {
        this.trigger = null;
        this.blackhole();
      }
      if (!pair.dead) upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!pair.dead) client.write(d);
    });
    client.on('end', () => {
      if (!pair.dead) upstream.end();
    });
    upstream.on('end', () => {
      if (!pair.dead) client.end();
    });
    client.on('close', () => {
      if (pair.dead) return;
      upstream.destroy();
      this.pairs.delete(pair);
    });
    upstream.on('close', () => {
      if (pair.dead) return;
      client.destroy();
      this.pairs.delete(pair);
    });
  }
}

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, ms: number): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves with the step's outcome, or 'timed out' after `ms` (a step stuck on the hole must not hold the test). */
function bounded<T>(p: Promise<T>, ms: number): Promise<T | 'timed out'> {
  return Promise.race([p, new Promise<'timed out'>((r) => setTimeout(() => r('timed out'), ms).unref())]);
}

/** Every message on the stream: the offset after the last one, and how many events they carry. */
async function streamContents(stream: string): Promise<{ end: number; events: number }> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    await ch.prefetch(1000);
    let end = 0;
    let events = 0;
    let last = performance.now();
    await ch.consume(
      stream,
      (msg) => {
        if (!msg) return;
        end = Math.max(end, offsetOf(msg) + 1);
        const m = decodeMessage(msg.content);
        if ('events' in m) events += m.events.length;
        last = performance.now();
        ch.ack(msg);
      },
      { noAck: false, arguments: { 'x-stream-offset': 'first' } },
    );
    while (end === 0 || performance.now() - last < 700) await new Promise((r) => setTimeout(r, 100));
    return { end, events };
  } finally {
    await conn.close().catch(noop);
  }
}

/** More changes of every common kind on the scenario's sections (each one succeeds and is logged). */
async function moreChanges(engine: Engine, round: number, n = 20): Promise<void> {
  for (let i = 0; i < n; i++) {
    const k = round * 100 + i;
    await Promise.allSettled([
      engine.changeCapacity(20, 1, 4 + (k % 3), meta('staff:1')),
      engine.setClosed(30, 1, k % 2 === 0, meta('staff:1')),
      engine.updateSection(10, 2, { reserveCapacity: 2 + (k % 4), sexLock: null }, meta('staff:1')),
    ]);
  }
}

interface World {
  /** Run at the end, last registered first (batchers stop before the database is dropped). */
  cleanup(fn: () => Promise<unknown> | unknown): void;
  db: SqlClient;
  dbUrl: string;
  proxy: BlackholeProxy;
  store: FullStore;
  engine: Engine;
  stream: string;
  dead: string;
}

/** A fresh database and stream, an engine publishing to it (directly), and the proxy in front of PostgreSQL. */
async function world(t: { after: (fn: () => Promise<void>) => void }): Promise<World> {
  const tdb = await createTestDatabase();
  const prefix = uniqueName('enroll_hole');
  const names = streamNames(prefix);
  const proxy = await BlackholeProxy.start(tdb.url);
  const db = createPgClient(tdb.url);
  const store = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger, batchMaxEvents: 100, runBatcher: false });
  const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
  const steps: (() => Promise<unknown> | unknown)[] = [];
  t.after(async () => {
    for (const step of steps.reverse()) await Promise.resolve().then(step).catch(noop);
    engine.stop();
    await bounded(store.close(), 10_000);
    await proxy.close();
    await bounded(db.close(), 2000);
    await deleteQueues([names.stream, names.dead]);
    await tdb.drop();
  });
  await store.migrate();
  await engine.start();
  return { cleanup: (fn) => void steps.push(fn), db, dbUrl: tdb.url, proxy, store, engine, stream: names.stream, dead: names.dead };
}

async function dbOffset(w: World): Promise<number> {
  const r = await w.db.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [w.stream]);
  return Number(r.rows[0]?.next_offset ?? -1);
}

/** The tables equal the engine's state, and the recorded offset is the stream's end. */
async function caughtUp(w: World, end: number): Promise<boolean> {
  if ((await dbOffset(w)) !== end) return false;
  return JSON.stringify(normalize(await loadState(w.db))) === JSON.stringify(normalize(w.engine.dumpState()));
}

/** Each event of the stream is in `transitions` once, and the database is level with the engine and the stream. */
async function assertExactlyOnce(w: World, ms: number): Promise<{ end: number; events: number; ms: number }> {
  const t0 = performance.now();
  const { end, events } = await streamContents(w.stream);
  await waitFor('the database to catch up with the stream', () => caughtUp(w, end), ms);
  const n = Number((await w.db.query<{ n: number }>('SELECT count(*)::int AS n FROM transitions')).rows[0]?.n);
  assert.equal(n, events, 'every event of the stream is recorded once');
  assert.equal(await dbOffset(w), end, 'the recorded offset is the end of the stream');
  return { end, events, ms: Math.round(performance.now() - t0) };
}

function mainThreadBatcher(w: World, url: string, extra: Partial<BatcherOptions> = {}): { batcher: Batcher; db: SqlClient } {
  const db = createPgClient(url, { queryTimeoutMillis: QUERY_TIMEOUT_MS });
  const batcher = createBatcher({
    db,
    databaseUrl: url,
    amqpUrl: AMQP_URL,
    stream: w.stream,
    deadLetterQueue: w.dead,
    logger,
    maxEvents: 100,
    maxDelayMs: 10,
    queryTimeoutMs: QUERY_TIMEOUT_MS,
    ...extra,
  });
  return { batcher, db };
}

describe('PostgreSQL blackholed under the batcher', { concurrency: false, timeout: 300_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  const figures: string[] = [];
  after(() => {
    if (figures.length > 0) console.log(figures.map((f) => `[pg-blackhole] ${f}`).join('\n'));
  });

  test('any pool (the engine\'s too): a statement into the hole fails UNAVAILABLE within the timeout, its connection is destroyed, the transaction commits nothing, and the next works after the heal', { skip, timeout: 60_000 }, async () => {
    const tdb = await createTestDatabase();
    const proxy = await BlackholeProxy.start(tdb.url);
    const admin = new pg.Client({ connectionString: tdb.url });
    const pool = createPgClient(proxy.rewrite(tdb.url), { queryTimeoutMillis: QUERY_TIMEOUT_MS });
    try {
      await admin.connect();
      await admin.query('CREATE TABLE t (n int)');
      assert.equal((await pool.query('SELECT 1 AS one')).rows.length, 1);
      const t0 = performance.now();
      const failure = await pool
        .transaction(async (tx) => {
          await tx.query('INSERT INTO t VALUES (1)');
          proxy.blackhole();
          await tx.query('INSERT INTO t VALUES (2)');
        })
        .then(() => null, (err: unknown) => err);
      const ms = Math.round(performance.now() - t0);
      assert.ok(failure instanceof DatabaseTimeoutError, String(failure));
      assert.ok(failure instanceof EngineError && failure.code === 'UNAVAILABLE');
      // One bound, not two: no ROLLBACK is queued behind the statement that never returned.
      assert.ok(ms >= QUERY_TIMEOUT_MS && ms < QUERY_TIMEOUT_MS + 800, `failed after ${ms} ms`);
      await waitFor('the stuck connection to be destroyed', () => proxy.abandonedAt.length > 0, 2000);
      // A plain statement into the hole (a new connection cannot even be made) fails too, in bounded time.
      const q0 = performance.now();
      await assert.rejects(pool.query('SELECT 1'));
      const queryMs = Math.round(performance.now() - q0);
      assert.ok(queryMs < 5000, `failed after ${queryMs} ms`);
      proxy.heal();
      assert.equal((await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM t')).rows[0]?.n, 0, 'nothing of the cut-off transaction committed');
      // The server ends the zombie session (its client's end never reached it): its row locks go with it.
      await waitFor(
        'the server to end the session idle in transaction',
        async () => (await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'`)).rows[0].n === 0,
        5000,
      );
      figures.push(`pool: a transaction into the hole failed after ${ms} ms (timeout ${QUERY_TIMEOUT_MS} ms), a plain statement after ${queryMs} ms`);
    } finally {
      await bounded(pool.close(), 2000);
      await proxy.close();
      await admin.end().catch(noop);
      await tdb.drop();
    }
  });

  test('mid-batch, on its worker thread: the batcher aborts the dead connection within the query timeout, steps down, retries, and once the path heals applies every event exactly once', { skip, timeout: 90_000 }, async (t) => {
    const w = await world(t);
    const via = w.proxy.rewrite(w.dbUrl);
    // The production path (BATCHER_THREAD=worker): the worker makes its own pool from the options.
    const batcher = batcherThreadFactory({ entry: join(import.meta.dirname, '..', 'src', 'cli', 'batcher-worker'), logLevel: process.env.TEST_LOG_LEVEL ?? 'silent' })({
      db: w.db,
      databaseUrl: via,
      amqpUrl: AMQP_URL,
      stream: w.stream,
      deadLetterQueue: w.dead,
      logger,
      maxEvents: 100,
      maxDelayMs: 10,
      queryTimeoutMs: QUERY_TIMEOUT_MS,
    });
    w.cleanup(() => bounded(batcher.stop(), 15_000));
    batcher.start();
    await scenario(w.engine);
    await waitFor('the batcher to lead', () => batcher.isLeader, 20_000);
    await assertExactlyOnce(w, 20_000);

    // The next batch's UPDATE of log_offsets (after its events, under the row lock) goes into the hole.
    w.proxy.blackholeOn('UPDATE log_offsets');
    await moreChanges(w.engine, 1);
    await waitFor('the batch to reach the hole', () => w.proxy.isBlack, 10_000);
    const blackAt = w.proxy.blackAt as number;
    // Acknowledged changes keep coming while the hole is open: durable in the stream only.
    await moreChanges(w.engine, 2);

    // (a) Noticed within a bounded time: the dead connections are abandoned, leadership given up, and retried.
    await waitFor('the batcher to abandon its blackholed connections', () => w.proxy.abandonedAt.length > 0, 15_000);
    const abortMs = Math.round((w.proxy.abandonedAt[0] as number) - blackAt);
    await waitFor('the batcher to stop believing it leads', () => !batcher.isLeader, 15_000);
    const stepDownMs = Math.round(performance.now() - blackAt);
    await waitFor('the batcher to retry the database', () => w.proxy.attemptsWhileBlack > 0, 15_000);
    assert.ok(abortMs < 3 * QUERY_TIMEOUT_MS, `first dead connection abandoned ${abortMs} ms after the hole opened`);
    // The hole stays open a while longer: the batcher keeps retrying, and nothing is applied.
    const frozen = await dbOffset(w);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(await dbOffset(w), frozen, 'nothing is applied while the hole is open');
    assert.equal(batcher.isLeader, false);

    // (b) Healed: every event exactly once, the offset at the stream's end.
    w.proxy.heal();
    const healedAt = performance.now();
    await moreChanges(w.engine, 3);
    const r = await assertExactlyOnce(w, 30_000);
    await waitFor('the batcher to lead again', () => batcher.isLeader, 10_000);
    figures.push(
      `worker thread, query timeout ${QUERY_TIMEOUT_MS} ms: first blackholed connection abandoned after ${abortMs} ms, leadership given up after <= ${stepDownMs} ms, ` +
        `${w.proxy.attemptsWhileBlack} connection attempts into the hole; caught up ${Math.round(performance.now() - healedAt)} ms after the heal ` +
        `(${r.events} events, offset ${r.end})`,
    );
  });

  test('never healed: a second batcher takes over once the server ends the dead sessions, and the first stands down (bounded stop)', { skip, timeout: 90_000 }, async (t) => {
    const w = await world(t);
    const a = mainThreadBatcher(w, w.proxy.rewrite(w.dbUrl));
    const b = mainThreadBatcher(w, w.dbUrl);
    w.cleanup(async () => {
      await bounded(b.batcher.stop(), 10_000);
      await bounded(a.batcher.stop(), 10_000);
      await bounded(b.db.close(), 2000);
      await bounded(a.db.close(), 2000);
    });
    a.batcher.start();
    await waitFor('the first batcher to lead', () => a.batcher.isLeader, 20_000);
    b.batcher.start();
    await scenario(w.engine);
    await assertExactlyOnce(w, 20_000);
    assert.equal(b.batcher.isLeader, false, 'the second one stands by');

    w.proxy.blackholeOn('UPDATE log_offsets');
    await moreChanges(w.engine, 1);
    await waitFor('the batch to reach the hole', () => w.proxy.isBlack, 10_000);
    const blackAt = w.proxy.blackAt as number;
    await moreChanges(w.engine, 2);
    await waitFor('the first batcher to stand down', () => !a.batcher.isLeader, 15_000);
    const stepDownMs = Math.round(performance.now() - blackAt);
    // Its advisory lock is held by its zombie session until the server ends it (idle_session_timeout).
    await waitFor('the second batcher to take over', () => b.batcher.isLeader, 20_000);
    const takeoverMs = Math.round(performance.now() - blackAt);
    await moreChanges(w.engine, 3);
    const r = await assertExactlyOnce(w, 30_000);
    assert.equal(a.batcher.isLeader, false, 'the first batcher never believes it leads again while cut off');
    const t0 = performance.now();
    const stopped = await bounded(a.batcher.stop(), 15_000);
    const stopMs = Math.round(performance.now() - t0);
    assert.notEqual(stopped, 'timed out', 'the cut-off batcher stops');
    figures.push(
      `two batchers, never healed: first stood down after <= ${stepDownMs} ms, second took over after ${takeoverMs} ms, ` +
        `first stopped in ${stopMs} ms while cut off (${r.events} events, offset ${r.end})`,
    );
  });

  test('two batchers both believing they lead (the cut-off one never checks its session) apply every event exactly once: the offset check under the row lock', { skip, timeout: 90_000 }, async (t) => {
    const w = await world(t);
    // The leader check off: after the hole it goes on believing it leads.
    const a = mainThreadBatcher(w, w.proxy.rewrite(w.dbUrl), { leaderCheckMs: 1e9 });
    const b = mainThreadBatcher(w, w.dbUrl);
    w.cleanup(async () => {
      await bounded(b.batcher.stop(), 10_000);
      await bounded(a.batcher.stop(), 10_000);
      await bounded(b.db.close(), 2000);
      await bounded(a.db.close(), 2000);
    });
    a.batcher.start();
    await waitFor('the first batcher to lead', () => a.batcher.isLeader, 20_000);
    const admin = new pg.Client({ connectionString: w.dbUrl });
    await admin.connect();
    w.cleanup(() => admin.end());
    const holders = async () =>
      (
        await admin.query<{ pid: number }>(
          `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        )
      ).rows.map((x) => x.pid);
    const [leaderPid] = await holders();
    assert.ok(leaderPid, 'the first batcher holds the advisory lock');
    b.batcher.start();
    await scenario(w.engine);
    await assertExactlyOnce(w, 20_000);

    const holeOffset = await dbOffset(w);
    w.proxy.blackholeOn('UPDATE log_offsets');
    await moreChanges(w.engine, 1);
    await waitFor('the batch to reach the hole', () => w.proxy.isBlack, 10_000);
    // The server ends the first batcher's leader session (as its TCP keepalive would on a real
    // network); the end never reaches that batcher through the hole.
    await admin.query('SELECT pg_terminate_backend($1)', [leaderPid]);
    await waitFor('the second batcher to take over', () => b.batcher.isLeader, 20_000);
    w.proxy.heal();
    // Both now apply: the first reconnects its pool through the healed path, unaware it lost the lock.
    await waitFor('both batchers to apply at once', async () => {
      await moreChanges(w.engine, 2, 5);
      return a.batcher.isLeader && b.batcher.isLeader && a.batcher.appliedOffset > holeOffset && b.batcher.appliedOffset > holeOffset;
    }, 30_000);
    for (let round = 3; round < 6; round++) await moreChanges(w.engine, round, 10);
    const r = await assertExactlyOnce(w, 30_000);
    // Each event was new to the database in exactly one of the two batchers' transactions.
    await waitFor('both to report their last batch', () => a.batcher.appliedOffset === r.end && b.batcher.appliedOffset === r.end, 10_000).catch(noop);
    assert.equal(a.batcher.appliedEvents + b.batcher.appliedEvents, r.events, 'events applied by either, counted once');
    assert.ok(a.batcher.isLeader, 'the first batcher still believes it leads (no check)');
    figures.push(`two batchers applying at once: ${a.batcher.appliedEvents} + ${b.batcher.appliedEvents} = ${r.events} events, offset ${r.end}`);
  });
});
