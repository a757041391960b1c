import assert from 'node:assert/strict';
import net from 'node:net';
import { listenOnLoopback, throughProxy } from './support/tcp-proxy.js';
import { after, before, describe, test } from 'node:test';
import amqp from 'amqplib';
import { pino } from 'pino';
import { createEngine, type Engine } from '../src/engine/engine.js';
import { TokenService } from '../src/http/auth.js';
import { buildApp, type App } from '../src/http/app.js';
import { decodeMessage, offsetOf, type LogMessage } from '../src/persistence/amqp-log.js';
import { createBatcher } from '../src/persistence/batcher.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { loadState } from '../src/persistence/state-store.js';
import type { LoadedState } from '../src/persistence/types.js';
import { deleteQueues } from './support/amqp.js';
import { C, S, SECRET, seedData, T0, TTL_SECONDS, WINDOW_MS, type Reply } from './support/http-fixture.js';
import { createTestDatabase } from './support/pg.js';
import { normalize } from './support/scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';
import { inject } from './support/store-harness.js';

/**
 * Regression (probe E, finding 1): a publish whose confirm timed out (answered 503, "outcome
 * unknown") may still reach the stream after the engine has reconnected and reloaded. Before the
 * fix the engine kept its lease epoch and published no fence, so that late message carried the
 * same epoch and the same section sequence number as the next change the engine decided and
 * acknowledged; readers keep the first event per (stream, seq) and lost the acknowledged one.
 *
 * Full mode in process, over the real PostgreSQL and RabbitMQ: the engine's broker connection goes
 * through a proxy that can hold every byte the engine sends on the connections open at that moment
 * (without closing them, as a blackholed path does), lets new connections through, and later
 * delivers the held bytes of the old connection to the broker. The batcher has a direct connection.
 *
 * 1. hold the engine's broker connection; student A enrolls in a section of capacity 1: 503 after
 *    the confirm timeout (the engine gives the connection up);
 * 2. another write (elsewhere) makes the engine reload on a new connection and is acknowledged;
 * 3. the held bytes are delivered: A's enrollment lands in the stream, after the reload;
 * 4. student B enrolls in the same section: the engine (which rolled A back) acknowledges it;
 * 5. once the batcher has applied the whole stream: B's acknowledged enrollment must be in the
 *    database and in an engine restarted from storage, capacity holds, and A's late message (in
 *    doubt, decided on a state the engine has since abandoned) must not be applied on top.
 *
 * Fails until the fix lands (src/persistence/full-store.ts, leases.ts: a reload after an in-doubt
 * append fences the old connection's messages).
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
/** Small, so the 503 comes quickly; far below the heartbeat (5 s) and the lease (30 s). */
const CONFIRM_TIMEOUT_MS = 800;
const TINY = C.tiny; // capacity 1, no reserve queue
const OTHER = C.algo2; // capacity 30: the write that makes the engine reload
const A = S.alice;
const B = S.bea;
const RELOADER = S.f1;

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** Bytes from the client not yet passed on (while held); null: passing through. */
  held: Buffer[] | null;
  /** Kept open when the client goes away (held, or released and not yet finished). */
  retained: boolean;
  clientGone: boolean;
}

/**
 * A TCP proxy that can hold what clients send on the connections open now (the broker's replies
 * still pass, nothing is closed; a connection the client closes meanwhile keeps its broker side
 * open), while new connections pass normally; `release` later delivers the held bytes to the
 * broker, `finish` then ends those broker connections whose client is gone.
 */
class HoldingProxy {
  private readonly server: net.Server;
  private readonly pairs = new Set<Pair>();
  accepted = 0;

  private constructor(
    private readonly host: string,
    private readonly targetPort: number,
  ) {
    this.server = net.createServer((c) => this.onClient(c));
  }

  static async start(url: string): Promise<HoldingProxy> {
    const u = new URL(url);
    const p = new HoldingProxy(u.hostname, Number(u.port || 5672));
    await listenOnLoopback(p.server);
    return p;
  }

  rewrite(url: string): string {
    return throughProxy(url, this.server);
  }

  /** Holds the client-to-broker bytes of every open connection; returns how many it holds. */
  hold(): number {
    let n = 0;
    for (const p of this.pairs) {
      if (p.clientGone) continue;
      p.held = [];
      p.retained = true;
      n++;
    }
    return n;
  }

  heldBytes(): number {
    let n = 0;
    for (const p of this.pairs) for (const b of p.held ?? []) n += b.length;
    return n;
  }

  heldClientsGone(): number {
    return [...this.pairs].filter((p) => p.held !== null && p.clientGone).length;
  }

  /** Delivers the held bytes to the broker (resolves once written to the socket); they pass through from now on. */
  async release(): Promise<void> {
    const writes: Promise<void>[] = [];
    for (const p of this.pairs) {
      if (p.held === null) continue;
      const data = Buffer.concat(p.held);
      p.held = null;
      if (data.length > 0) writes.push(new Promise<void>((resolve, reject) => p.upstream.write(data, (err) => (err ? reject(err) : resolve()))));
    }
    await Promise.all(writes);
  }

  /** Ends (FIN) the broker side of released connections whose client is gone. */
  finish(): void {
    for (const p of this.pairs) {
      if (!p.retained || p.held !== null) continue;
      p.retained = false;
      if (p.clientGone) p.upstream.end();
    }
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onClient(client: net.Socket): void {
    this.accepted++;
    client.setNoDelay(true);
    const upstream = net.connect({ host: this.host, port: this.targetPort });
    upstream.setNoDelay(true);
    const p: Pair = { client, upstream, held: null, retained: false, clientGone: false };
    this.pairs.add(p);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    client.on('data', (d: Buffer) => {
      if (p.held) p.held.push(d);
      else upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!p.clientGone) client.write(d);
    });
    client.on('close', () => {
      p.clientGone = true;
      if (!p.retained) upstream.destroy();
    });
    upstream.on('close', () => {
      this.pairs.delete(p);
      client.destroy();
    });
  }
}

interface Seen {
  offset: number;
  m: LogMessage;
}

/** Reads the stream from its first message on its own direct connection, to see where each message landed. */
async function observeStream(stream: string) {
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.prefetch(1000);
  const seen: Seen[] = [];
  const waiters = new Set<() => void>();
  await ch.consume(
    stream,
    (msg) => {
      if (!msg) return;
      ch.ack(msg);
      seen.push({ offset: offsetOf(msg), m: decodeMessage(msg.content) });
      for (const w of [...waiters]) w();
    },
    { noAck: false, arguments: { 'x-stream-offset': 'first' } },
  );
  return {
    seen,
    /** The first message matching `pred` (already seen or to come). */
    waitFor(pred: (s: Seen) => boolean, timeoutMs: number, what: string): Promise<Seen> {
      return new Promise<Seen>((resolve, reject) => {
        const check = () => {
          const hit = seen.find(pred);
          if (!hit) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} in the stream`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async close() {
      await ch.close().catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
  };
}

/** An events message with `studentId`'s enrollment in `section`. */
function enrolls(studentId: number, [courseId, groupId]: readonly [number, number]) {
  return (s: Seen) =>
    'events' in s.m && s.m.events.some((e) => e.type === 'studentEnrolled' && e.studentId === studentId && e.courseId === courseId && e.groupId === groupId);
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function section(state: LoadedState, [courseId, groupId]: readonly [number, number]) {
  const s = state.sections.find((x) => x.info.courseId === courseId && x.info.groupId === groupId);
  assert.ok(s, `section ${courseId}-${groupId} exists`);
  return s;
}

const is2xx = (r: Reply) => r.status >= 200 && r.status < 300;

describe('a publish answered 503 (confirm timeout) that reaches the stream after the reload (full mode, real PostgreSQL and RabbitMQ)', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  let db: SqlClient;
  const prefix = uniqueName('late_publish');
  const names = streamNames(prefix);

  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
    db = createPgClient(tdb.url, { max: 2 });
  });
  after(async () => {
    if (skip) return;
    await db.close().catch(() => undefined);
    await deleteQueues([names.stream, names.dead]).catch(() => undefined);
    await tdb.drop();
  });

  test('the acknowledged change wins: it is in the database and after a restart, and the late message is not applied on top', { skip, timeout: 90_000 }, async () => {
    const clock = { now: T0 + 5 * 60_000 };
    const signer = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => clock.now });
    const proxy = await HoldingProxy.start(AMQP_URL);
    const open = (rabbitmqUrl: string, runBatcher: boolean): Promise<FullStore> =>
      createFullStore({
        databaseUrl: tdb.url,
        rabbitmqUrl,
        prefix,
        logger,
        batchMaxEvents: 500,
        runBatcher,
        // The batcher reads the stream on a direct connection: only the engine's publishes go through the proxy.
        batcherFactory: (o) => createBatcher({ ...o, amqpUrl: AMQP_URL }),
        brokerConfirmTimeoutMs: CONFIRM_TIMEOUT_MS,
        // Long: this test is about the broker, not about leases (a loaded machine must not lose them).
        leaseTtlMs: 30_000,
      });
    const start = async (store: FullStore): Promise<{ engine: Engine; app: App }> => {
      const engine = createEngine({ persistence: store, cluster: store, logger, enrollmentWindowMs: WINDOW_MS, now: () => clock.now });
      await engine.start();
      const app = await buildApp({ engine, logger, jwtSecret: SECRET, tokenTtlSeconds: TTL_SECONDS, readiness: () => store.readiness(), now: () => clock.now });
      return { engine, app };
    };
    const enroll = (app: App, student: number, [courseId, groupId]: readonly [number, number]) =>
      inject(app, 'PUT', '/student/course', { token: signer.issue({ id: student, role: 'student' }), body: { course_id: courseId, group_id: groupId } });

    let store: FullStore | null = null;
    let engine: Engine | null = null;
    let app: App | null = null;
    let observer: Awaited<ReturnType<typeof observeStream>> | null = null;
    try {
      store = await open(proxy.rewrite(AMQP_URL), true);
      await store.migrate();
      ({ engine, app } = await start(store));
      await engine.importBatch(seedData(), { requestId: 'seed', actor: 'system' });
      observer = await observeStream(names.stream);
      const seedMsg = await observer.waitFor((s) => 'events' in s.m && s.m.events.length > 0, 20_000, 'the seed');
      assert.equal(proxy.accepted, 1, 'one broker connection through the proxy (the engine publishes on it)');

      // 1. The engine's connection is held: A's enrollment is published into it and never confirmed.
      assert.equal(proxy.hold(), 1, 'the engine connection is held');
      const refused = await enroll(app, A, TINY);
      assert.equal(refused.status, 503, `A's enrollment is answered 503 (outcome unknown): ${refused.raw}`);
      assert.ok(proxy.heldBytes() > 0, 'its publish is held in the proxy');
      await waitUntil(async () => proxy.heldClientsGone() === 1, 10_000, 'the engine to give the held connection up');

      // 2. A write elsewhere: the engine reloads (new connection, passes) and acknowledges it.
      let reloads = 0;
      engine.onReloaded(() => reloads++);
      const other = await enroll(app, RELOADER, OTHER);
      assert.ok(is2xx(other), `a write after the 503 is acknowledged: ${other.status} ${other.raw}`);
      assert.ok(reloads >= 1, 'the engine reloaded its state before deciding it');
      assert.ok(proxy.accepted >= 2, 'on a new broker connection');
      const afterReload = await observer.waitFor(enrolls(RELOADER, OTHER), 20_000, 'the write after the reload');
      const tinyAfterReload = section(engine.dumpState(), TINY);
      assert.deepEqual(tinyAfterReload.registered, [], 'the engine rolled A back: the section is empty');

      // 3. The old connection's held bytes reach the broker: A's enrollment lands after the reload's messages.
      await proxy.release();
      const late = await observer.waitFor(enrolls(A, TINY), 20_000, "A's held publish");
      proxy.finish();
      assert.ok(late.offset > afterReload.offset && late.offset > seedMsg.offset, `the late message (offset ${late.offset}) landed after the reload (offset ${afterReload.offset})`);

      // 4. B's enrollment in the same section: the engine's memory has it empty, so it is acknowledged.
      const acked = await enroll(app, B, TINY);
      assert.ok(is2xx(acked), `B's enrollment is acknowledged: ${acked.status} ${acked.raw}`);
      const ackedMsg = await observer.waitFor(enrolls(B, TINY), 20_000, "B's enrollment");
      assert.ok(ackedMsg.offset > late.offset);

      // 5. The batcher applies everything up to B's message.
      await waitUntil(
        async () => {
          const r = await db.query<{ next_offset: string }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [names.stream]);
          return Number(r.rows[0]?.next_offset ?? 0) > ackedMsg.offset;
        },
        30_000,
        'the batcher to apply the stream up to the acknowledged enrollment',
      );
      const live = engine.dumpState();
      const rows = await db.query<{ student_id: string; reserved: boolean }>(
        'SELECT student_id, reserved FROM enrolled_courses WHERE course_id = $1 AND group_id = $2 ORDER BY id',
        [TINY[0], TINY[1]],
      );
      const inDb = rows.rows.map((r) => `${Number(r.student_id)}${r.reserved ? ' (queued)' : ''}`);
      const dbState = await loadState(db);

      // Restart: a new store and engine over the same database and stream.
      await app.close();
      app = null;
      engine.stop();
      engine = null;
      await store.close();
      store = await open(AMQP_URL, false);
      ({ engine, app } = await start(store));
      const restarted = engine.dumpState();

      const tinySection = `${TINY[0]}-${TINY[1]}`;
      const problems: string[] = [];
      if (!inDb.includes(String(B))) problems.push(`acknowledged enrollment of student ${B} in ${tinySection} is not in enrolled_courses (rows: [${inDb.join(', ')}])`);
      if (inDb.includes(String(A))) problems.push(`student ${A}'s enrollment (answered 503, published late) is applied in enrolled_courses`);
      if (rows.rows.length > 1) problems.push(`enrolled_courses holds ${rows.rows.length} students in ${tinySection} (capacity 1)`);
      const r = section(restarted, TINY);
      if (!r.registered.includes(B)) problems.push(`after a restart, acknowledged student ${B} is not registered in ${tinySection} (registered: [${r.registered.join(', ')}])`);
      if (r.registered.includes(A)) problems.push(`after a restart, student ${A} (503, late message) is registered in ${tinySection}`);
      for (const s of restarted.sections) {
        if (s.registered.length > s.capacity) problems.push(`after a restart, ${s.info.courseId}-${s.info.groupId} has ${s.registered.length} registered > capacity ${s.capacity}`);
      }
      if (JSON.stringify(normalize(dbState)) !== JSON.stringify(normalize(live))) problems.push('the database differs from the engine that acknowledged the changes');
      if (JSON.stringify(normalize(restarted)) !== JSON.stringify(normalize(live))) problems.push('an engine restarted from storage differs from the engine that acknowledged the changes');
      assert.deepEqual(problems, [], 'every acknowledged change is durable, and the late in-doubt message is not applied on top');
    } finally {
      await app?.close().catch(() => undefined);
      engine?.stop();
      await store?.close().catch(() => undefined);
      await observer?.close();
      await proxy.close();
    }
  });
});
