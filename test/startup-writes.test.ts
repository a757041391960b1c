import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { generateDemoData } from '../src/demo/demo-data.js';
import { createEngine } from '../src/engine/engine.js';
import { EngineError, isEngineError } from '../src/errors.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { startupWrite, StartupWriteError } from '../src/startup-write.js';
import { deleteQueues } from './support/amqp.js';
import { Child, freePort, SECRET } from './support/fault-harness.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe K, finding 2: a full-mode first start on a new database with DEMO_DATA=true died with
 * "this instance does not hold the write lease" while loading the demo data, just after taking
 * that lease itself. The demo loader builds its 1,500 sections, 1,000 students and 2,681
 * enrollments in one synchronous stretch (about 0.4 s on an idle machine, seconds on a loaded one);
 * the lease's renewal timer cannot run meanwhile, so its own deadline (the last renewal sent + ttl
 * - margin) passes although nobody else can hold the lease, and the append that ends the stretch
 * was refused (NOT_OWNER). Here the stretch is made longer than the lease (the shortest
 * LEASE_TTL_MS, 500 ms) by a busy wait, so the ordering is forced on any machine.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const TTL_MS = 500;
const meta = { requestId: 'demo-data', actor: 'system' } as const;

/** The event loop busy for `ms` (a loaded machine, a long synchronous build): no timer runs. */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

async function withFirstStart(
  t: { after: (fn: () => Promise<void>) => void },
  body: (w: { store: FullStore; engine: ReturnType<typeof createEngine>; url: string; prefix: string; stream: string }) => Promise<void>,
): Promise<void> {
  const tdb = await createTestDatabase();
  const prefix = uniqueName('startup_writes');
  const { stream, dead } = streamNames(prefix);
  const opened: FullStore[] = [];
  t.after(async () => {
    for (const s of opened) await s.close().catch(() => undefined);
    await deleteQueues([stream, dead]);
    await tdb.drop();
  });
  // As src/main.ts makes it: the first load takes the leases (no live peer), the batcher runs here.
  const store = await createFullStore({
    databaseUrl: tdb.url,
    rabbitmqUrl: AMQP_URL,
    prefix,
    logger,
    batchMaxEvents: 512,
    runBatcher: true,
    leaseTtlMs: TTL_MS,
    joinWhenListening: true,
  });
  opened.push(store);
  await store.migrate();
  const engine = createEngine({ cluster: store, persistence: store, logger, enrollmentWindowMs: 60 * 60_000 });
  t.after(async () => engine.stop());
  await engine.start();
  assert.ok(engine.isEmpty(), 'a new database');
  assert.ok(store.decides(0), 'the first load took the lease and loaded under it');
  await body({ store, engine, url: tdb.url, prefix, stream });
}

/** What a second instance loads from the database and the stream (it takes no lease while one is held). */
async function loadedElsewhere(url: string, prefix: string): Promise<{ sections: number; students: number; staff: number }> {
  const other = await createFullStore({ databaseUrl: url, rabbitmqUrl: AMQP_URL, prefix, logger, batchMaxEvents: 512, runBatcher: false, leaseTtlMs: 60_000 });
  try {
    const s = await other.load();
    return { sections: s.sections.length, students: s.students.length, staff: s.staff.length };
  } finally {
    await other.close();
  }
}

async function leaseEpoch(url: string, stream: string): Promise<{ owner: string | null; epoch: number }> {
  const db = createPgClient(url, { max: 1 });
  try {
    const r = await db.query<{ owner: string | null; epoch: number }>('SELECT owner, epoch FROM shard_leases WHERE log_name = $1 AND shard = 0', [stream]);
    return { owner: r.rows[0]?.owner ?? null, epoch: Number(r.rows[0]?.epoch) };
  } finally {
    await db.close();
  }
}

describe('start-up writes and the lease just taken (real PostgreSQL and RabbitMQ)', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('the demo data is written although the event loop was busy past the lease\'s own deadline; the lease is the same one', { skip, timeout: 60_000 }, (t) =>
    withFirstStart(t, async ({ store, engine, url, prefix, stream }) => {
      const data = generateDemoData({ passwordHash: 'student-hash', staffPasswordHash: 'staff-hash', now: Date.now() });
      const before = await leaseEpoch(url, stream);
      // The renewal timer is due every 100 ms; for 1.5 lease lifetimes it cannot run. Then the
      // import goes on in the same stretch, up to its append.
      busy(TTL_MS * 1.5);
      await engine.importBatch(data, meta);
      assert.equal(engine.isEmpty(), false);
      assert.ok(store.decides(0), 'still the owner');
      const after = await leaseEpoch(url, stream);
      assert.equal(after.owner, store.instanceId);
      assert.equal(after.epoch, before.epoch, 'renewed, not taken again: no new fence, no reload');
      // Durable: another instance loads it from the stream and the database.
      const elsewhere = await loadedElsewhere(url, prefix);
      assert.deepEqual(elsewhere, { sections: data.sections.length, students: data.students.length, staff: data.staff.length });
    }),
  );

  test('fencing holds: a lease another instance took while this one was busy stays lost, and the write is refused', { skip, timeout: 60_000 }, (t) =>
    withFirstStart(t, async ({ engine, store, url, prefix, stream }) => {
      const data = generateDemoData({ passwordHash: 'student-hash', staffPasswordHash: 'staff-hash', now: Date.now(), sections: 20, students: 10 });
      // While this event loop is busy, another instance takes the shard once the database lets it
      // (the lease expired there): run synchronously in a separate process, as acquire() does it.
      const intruder = `
        import pg from 'pg';
        const c = new pg.Client({ connectionString: process.argv[1] });
        await c.connect();
        for (;;) {
          const r = await c.query(
            "UPDATE shard_leases SET owner = 'intruder', address = '', epoch = epoch + 1, expires_at = now() + interval '60 seconds' WHERE log_name = $1 AND shard = 0 AND (owner IS NULL OR expires_at < now()) RETURNING epoch",
            [process.argv[2]],
          );
          if (r.rowCount === 1) break;
          await new Promise((ok) => setTimeout(ok, 20));
        }
        await c.end();`;
      execFileSync(process.execPath, ['--input-type=module', '-e', intruder, url, stream], { cwd: ROOT, timeout: 20_000 });
      let refused: unknown = null;
      await engine.importBatch(data, meta).catch((err: unknown) => (refused = err));
      assert.ok(isEngineError(refused), `refused (got ${String(refused)})`);
      assert.equal((refused as EngineError).code, 'NOT_OWNER');
      assert.equal(store.decides(0), false);
      assert.equal((await leaseEpoch(url, stream)).owner, 'intruder');
      assert.deepEqual(await loadedElsewhere(url, prefix), { sections: 0, students: 0, staff: 0 }, 'nothing was published');
    }),
  );

  test('src/main.ts: a full-mode first start on a new database with DEMO_DATA=true and the shortest lease loads the demo data and serves', { skip, timeout: 90_000 }, async (t) => {
    const tdb = await createTestDatabase();
    const prefix = uniqueName('startup_main');
    const port = await freePort();
    const child = new Child('engine', 'src/main.ts', {
      DATABASE_URL: tdb.url,
      RABBITMQ_URL: AMQP_URL,
      AMQP_PREFIX: prefix,
      JWT_SECRET: SECRET,
      HOST: '127.0.0.1',
      PORT: String(port),
      DEMO_DATA: 'true',
      LEASE_TTL_MS: String(TTL_MS),
      WARMUP_REQUESTS: '0',
      LOG_LEVEL: 'info',
      SHUTDOWN_DRAIN_MS: '0',
    });
    t.after(async () => {
      await child.kill9();
      const n = streamNames(prefix);
      await deleteQueues([n.stream, n.dead, `${prefix}.webhooks`, `${prefix}.webhooks.dead`]);
      await tdb.drop();
    });
    const ready = child.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('enrollment engine ready'), 60_000);
    const outcome = await Promise.race([ready.then(() => 'ready'), child.exited.then((code) => `exited ${String(code)}`)]);
    assert.equal(outcome, 'ready', `the engine did not start:\n${child.output()}`);
    assert.ok(child.hasLog((l) => l.msg === 'demo data loaded'));
    await child.stop(10_000);
    assert.equal(child.exitCode, 0, child.output());
  });

  test('src/main.ts: two instances started at once on a new database, both with DEMO_DATA=true and BOOTSTRAP_STAFF_ID: both serve, the demo and the staff member written once', { skip, timeout: 150_000 }, async (t) => {
    const tdb = await createTestDatabase();
    const prefix = uniqueName('startup_pair');
    const env = async () => ({
      DATABASE_URL: tdb.url,
      RABBITMQ_URL: AMQP_URL,
      AMQP_PREFIX: prefix,
      JWT_SECRET: SECRET,
      HOST: '127.0.0.1',
      PORT: String(await freePort()),
      DEMO_DATA: 'true',
      BOOTSTRAP_STAFF_ID: '900',
      BOOTSTRAP_STAFF_PASSWORD: 'a-bootstrap-password-for-tests',
      WARMUP_REQUESTS: '0',
      LOG_LEVEL: 'info',
      SHUTDOWN_DRAIN_MS: '0',
    });
    const pair = [new Child('engine-a', 'src/main.ts', await env()), new Child('engine-b', 'src/main.ts', await env())];
    t.after(async () => {
      for (const c of pair) await c.kill9();
      const n = streamNames(prefix);
      await deleteQueues([n.stream, n.dead, `${prefix}.webhooks`, `${prefix}.webhooks.dead`]);
      await tdb.drop();
    });
    // Before, the instance that did not get every lease waited 30 s for them and then failed its start.
    const outcomes = await Promise.all(
      pair.map((child) =>
        Promise.race([
          child.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('enrollment engine ready'), 100_000).then(() => 'ready'),
          child.exited.then((code) => `exited ${String(code)}`),
        ]),
      ),
    );
    assert.deepEqual(outcomes, ['ready', 'ready'], pair.map((c) => c.output()).join('\n----\n'));
    const loads = pair.filter((c) => c.hasLog((l) => l.msg === 'demo data loaded')).length;
    assert.equal(loads, 1, 'the demo data was loaded by exactly one instance');
    const demo = generateDemoData({ passwordHash: 'h', staffPasswordHash: 'h', now: Date.now() });
    const seen = await loadedElsewhere(tdb.url, prefix);
    assert.equal(seen.sections, demo.sections.length);
    assert.equal(seen.students, demo.students.length);
    assert.equal(seen.staff, demo.staff.length + 1, 'the demo staff and the bootstrap staff member');
    for (const c of pair) await c.stop(10_000);
    for (const c of pair) assert.equal(c.exitCode, 0, c.output());
  });
});

describe('startupWrite (the helper main.ts runs its start-up writes through)', () => {
  const notOwner = () => new EngineError('NOT_OWNER', 'this instance does not hold the write lease');

  test('waits until this instance decides writes for the shards, then writes', async () => {
    let decided = false;
    setTimeout(() => (decided = true), 150);
    let calls = 0;
    const r = await startupWrite(
      'the demo data',
      async () => {
        calls++;
        if (!decided) throw notOwner();
        return 'done';
      },
      { cluster: { shards: 2, decides: () => decided }, log: logger, timeoutMs: 5000 },
    );
    assert.equal(r, 'done');
    assert.equal(calls, 1, 'not tried before the shards were decided here');
  });

  test('tries a NOT_OWNER or UNAVAILABLE refusal again, a bounded number of times', async () => {
    const refusals = [notOwner(), new EngineError('UNAVAILABLE', 'reloading')];
    let calls = 0;
    const r = await startupWrite(
      'the demo data',
      async () => {
        calls++;
        const e = refusals.shift();
        if (e) throw e;
        return calls;
      },
      { cluster: { shards: 1, decides: () => true }, log: logger, timeoutMs: 5000 },
    );
    assert.equal(r, 3);
    await assert.rejects(
      startupWrite('the demo data', () => Promise.reject(notOwner()), { cluster: { shards: 1, decides: () => true }, log: logger, timeoutMs: 300 }),
      (err: unknown) => err instanceof StartupWriteError && /the demo data could not be written within 0 s: this instance does not hold the write lease/.test(err.message),
    );
  });

  test('says clearly what could not be written when the shard never becomes this instance\'s; other errors pass at once', async () => {
    await assert.rejects(
      startupWrite('the BOOTSTRAP_STAFF_ID staff member', async () => 'never', { cluster: { shards: 1, decides: () => false }, log: logger, timeoutMs: 200 }),
      (err: unknown) => err instanceof StartupWriteError && /BOOTSTRAP_STAFF_ID staff member could not be written: this instance did not get to decide writes for shard\(s\) 0/.test(err.message),
    );
    let calls = 0;
    await assert.rejects(
      startupWrite(
        'the demo data',
        async () => {
          calls++;
          throw new EngineError('BAD_REQUEST', 'no');
        },
        { cluster: null, log: logger, timeoutMs: 5000 },
      ),
      (err: unknown) => isEngineError(err) && err.code === 'BAD_REQUEST',
    );
    assert.equal(calls, 1);
  });
});
