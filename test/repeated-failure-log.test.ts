import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../src/logger.js';
import { WebhookService } from '../src/notices/webhooks.js';
import { createLeaseManager } from '../src/persistence/leases.js';
import { migrate } from '../src/persistence/migrations.js';
import type { DeliveryQueue, NoticeStore } from '../src/persistence/notice-types.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { createRepeatedFailureLog } from '../src/repeated-failure.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe O2, finding 3: with PostgreSQL cut, a full-mode instance logged about 8 warnings a second
 * (91 x "queueing new webhook deliveries failed" with no webhook configured, 45 x "lease round
 * failed" in 22 s). A failure a loop meets on every retry is logged when it starts, at most once per
 * period while it lasts (with the number of failures it stands for), and once (info) when it ends.
 * The failing dependency is injected at the project's own interfaces (NoticeStore, SqlClient).
 */

type Line = { level: number; msg: string; failures?: number; failingForMs?: number; err?: unknown };
const WARN = 40;
const INFO = 30;

function capture(): { lines: Line[]; logger: ReturnType<typeof createLogger> } {
  const lines: Line[] = [];
  return { lines, logger: createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l) as Line) }) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('createRepeatedFailureLog', () => {
  test('1,000 failures over a minute: one warning at once, then one per period with the count, one info line at recovery', () => {
    const { lines, logger } = capture();
    const clock = { now: 0 };
    const f = createRepeatedFailureLog(logger, { message: 'thing failed', recovered: 'thing works again', everyMs: 15_000, now: () => clock.now });
    for (let i = 0; i < 1000; i++) {
      f.failed(new Error('database unreachable'));
      clock.now += 60;
    }
    const warns = lines.filter((l) => l.level === WARN);
    // t = 0, then at 15 s, 30 s, 45 s (the last failure is at 59.94 s).
    assert.equal(warns.length, 4, warns.map((w) => w.msg).join(' | '));
    assert.equal(warns[0]?.msg, 'thing failed');
    assert.ok(warns[0]?.err, 'the first line carries the error under `err`');
    for (const w of warns.slice(1)) {
      assert.equal(w.msg, 'thing failed (still failing)');
      assert.equal(w.failures, 250, 'the failures since the previous line');
      assert.ok(w.err);
    }
    assert.equal(f.failing, true);
    f.succeeded();
    f.succeeded();
    const infos = lines.filter((l) => l.level === INFO);
    assert.equal(infos.length, 1, 'one line when it recovers, none for later successes');
    assert.equal(infos[0]?.msg, 'thing works again');
    assert.equal(infos[0]?.failures, 1000);
    assert.equal(infos[0]?.failingForMs, 60_000);
    assert.equal(f.failing, false);
    // A new outage is told at once again.
    f.failed(new Error('again'));
    assert.equal(lines.filter((l) => l.level === WARN).length, 5);
  });
});

describe('the webhook feed while the database is away', () => {
  test('200 failed feed rounds log one warning; the first round that works logs one info line', async () => {
    const { lines, logger } = capture();
    const db = { up: false, claims: 0 };
    const store = {
      async claimNewDeliveries() {
        db.claims += 1;
        if (!db.up) throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
        return [];
      },
    } as unknown as NoticeStore;
    const queue: DeliveryQueue = {
      kind: 'amqp',
      schedule: async () => undefined,
      deadLetter: async () => undefined,
      start: async () => undefined,
      close: async () => undefined,
    };
    // No timers started (start() is not called): the test drives the feed with wake(), as the outbox does.
    const webhooks = new WebhookService({ store, queue, logger });
    for (let i = 0; i < 200; i++) {
      webhooks.wake();
      while (db.claims <= i) await new Promise((r) => setImmediate(r));
    }
    await sleep(10);
    const failed = lines.filter((l) => l.level === WARN && l.msg.startsWith('queueing new webhook deliveries failed'));
    assert.equal(db.claims, 200);
    assert.equal(failed.length, 1, `${failed.length} warnings for 200 failed rounds`);
    db.up = true;
    webhooks.wake();
    webhooks.wake();
    await sleep(20);
    await webhooks.close();
    const back = lines.filter((l) => l.level === INFO && l.msg === 'queueing new webhook deliveries works again');
    assert.equal(back.length, 1);
    assert.equal(back[0]?.failures, 200);
  });
});

describe('lease rounds while the database is away (real PostgreSQL)', async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  let real: SqlClient;
  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
    real = createPgClient(tdb.url, { max: 2 });
    await migrate(real);
  });
  after(async () => {
    if (skip) return;
    await real.close();
    await tdb.drop();
  });

  test('rounds every 100 ms failing for 3 s log one warning, and one info line once they work again', { skip, timeout: 30_000 }, async () => {
    const { lines, logger } = capture();
    // The project's SqlClient, cut at will: every statement fails as a refused connection does.
    const cut = { on: false, failures: 0 };
    const refuse = () => {
      cut.failures += 1;
      return Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'));
    };
    const db: SqlClient = {
      query: (text, params) => (cut.on ? refuse() : real.query(text, params)),
      transaction: (fn) => (cut.on ? refuse() : real.transaction(fn)),
      exec: (sql) => (cut.on ? refuse().then(() => undefined) : real.exec(sql)),
      close: async () => undefined,
    };
    const name = uniqueName('leases');
    const leases = createLeaseManager({
      db,
      logName: `${name}.events`,
      shards: 1,
      instanceId: name,
      address: 'http://127.0.0.1:18399',
      ttlMs: 500,
      logger,
      publishFence: async () => undefined,
      onChange: () => undefined,
    });
    await leases.start();
    try {
      cut.on = true;
      await sleep(3000);
      assert.ok(leases.roundFailing);
      const rounds = cut.failures;
      assert.ok(rounds >= 10, `only ${rounds} failed statements`);
      const warned = lines.filter((l) => l.level === WARN && l.msg.startsWith('lease round failed'));
      assert.equal(warned.length, 1, `${warned.length} warnings for ${rounds} failed statements in 3 s`);
      cut.on = false;
      const t0 = performance.now();
      while (leases.roundFailing && performance.now() - t0 < 5000) await sleep(50);
      assert.equal(leases.roundFailing, false);
      const back = lines.filter((l) => l.level === INFO && l.msg === 'lease rounds succeed again; leases are renewed');
      assert.equal(back.length, 1);
      assert.ok((back[0]?.failures ?? 0) >= 10, `the info line counts the failed rounds (${back[0]?.failures})`);
    } finally {
      await leases.stop();
      await leases.release().catch(() => undefined);
    }
  });
});
