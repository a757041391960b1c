import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { createBatcher } from '../src/persistence/batcher.js';
import { batcherThreadFactory } from '../src/persistence/batcher-thread.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import { persistenceRegistry } from '../src/persistence/metrics.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { loadState } from '../src/persistence/state-store.js';
import { deleteQueues } from './support/amqp.js';
import { crashMarker } from './support/crashing-batcher-worker.js';
import { createTestDatabase } from './support/pg.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { NOW, normalize, scenario } from './support/scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * The batcher on its own worker thread (BATCHER_THREAD=worker, the default in full mode): the
 * server's thread mirrors its leadership and lag, and a thread that dies is started again and
 * resumes where the database says. The stall mirror is in log-stall.test.ts, the webhook wake-up
 * in webhooks.test.ts (both run with the batcher on each thread).
 */
async function waitFor(what: string, cond: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function gauge(name: string): Promise<number | undefined> {
  return (await persistenceRegistry.getMetricsAsJSON()).find((m) => m.name === name)?.values[0]?.value;
}

describe('the batcher on a worker thread', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  const prefix = uniqueName('enroll_bthread');
  const names = streamNames(prefix);

  before(async () => {
    if (skip) return;
    tdb = await createTestDatabase();
  });
  after(async () => {
    if (skip) return;
    rmSync(crashMarker(names.stream), { force: true });
    await deleteQueues([names.stream, names.dead]);
    await tdb.drop();
  });

  test('a thread that dies is started again and the batcher resumes; the server reads its leadership and lag', { skip, timeout: 60_000 }, async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    const store = await createFullStore({
      databaseUrl: tdb.url,
      rabbitmqUrl: AMQP_URL,
      prefix,
      logger,
      batchMaxEvents: 100,
      runBatcher: true,
      batcherFactory: batcherThreadFactory({ entry: join(import.meta.dirname, 'support', 'crashing-batcher-worker'), logLevel: 'silent', restartMs: 100 }),
    });
    const db = createPgClient(tdb.url);
    const engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
    try {
      await store.migrate();
      await engine.start();
      await scenario(engine);
      const live = normalize(engine.dumpState());
      // Everything acknowledged reaches the database, written by the second thread.
      await waitFor('the database to catch up', async () => JSON.stringify(normalize(await loadState(db))) === JSON.stringify(live));
      assert.ok(existsSync(crashMarker(names.stream)), 'the first thread died at its start');
      assert.ok(
        lines.some((l) => l.includes('the batcher thread stopped; starting it again')),
        'the death is logged as an error',
      );
      const batcher = store.batcher!;
      await waitFor('the mirror to catch up', () => batcher.isLeader && batcher.appliedEvents > 0);
      assert.ok(batcher.appliedOffset > 0, 'the applied offset is mirrored');
      assert.deepEqual((await store.readiness()).checks.batcher, { ok: true, detail: 'active' });
      assert.equal((await store.readiness()).ready, true);
      await waitFor('the lag gauge to read 0', async () => (await gauge('enrollment_batcher_lag_messages')) === 0);
      assert.equal(await gauge('enrollment_batcher_lag_seconds'), 0);
      assert.equal(await gauge('enrollment_batcher_leader'), 1);
    } finally {
      engine.stop();
      await store.close();
      await db.close();
    }
    // Stopped: the thread is gone (close resolved only once it exited) and no longer counted.
    assert.equal(store.batcher?.isLeader, false);
    assert.equal(await gauge('enrollment_batcher_leader'), 0);
  });

  test('a leading batcher without its broker connection is not counted as applying the stream (gauge 0, /ready says why), and is again once it reconnects', { skip, timeout: 60_000 }, async () => {
    const logger = pino({ level: 'silent' });
    const proxy = await TcpProxy.start('127.0.0.1', Number(new URL(AMQP_URL).port || 5672));
    const p = `${prefix}_broker`;
    const store = await createFullStore({
      databaseUrl: tdb.url,
      rabbitmqUrl: AMQP_URL,
      prefix: p,
      logger,
      batchMaxEvents: 100,
      runBatcher: true,
      // Only the batcher's broker connection goes through the proxy.
      batcherFactory: (o) => createBatcher({ ...o, amqpUrl: proxy.rewrite(o.amqpUrl) }),
    });
    try {
      await store.migrate();
      await store.load();
      const batcher = store.batcher!;
      await waitFor('the batcher to lead and consume', async () => batcher.isConsuming && (await gauge('enrollment_batcher_leader')) === 1);
      assert.deepEqual((await store.readiness()).checks.batcher, { ok: true, detail: 'active' });
      proxy.cut();
      await waitFor('the batcher to notice', async () => !batcher.isConsuming && (await gauge('enrollment_batcher_leader')) === 0);
      assert.equal(batcher.isLeader, true, 'it keeps the lead (the database is there)');
      const check = (await store.readiness()).checks.batcher;
      assert.equal(check?.ok, false);
      assert.match(check?.detail ?? '', /not reading the stream/);
      proxy.resume();
      await waitFor('the batcher to consume again', async () => batcher.isConsuming && (await gauge('enrollment_batcher_leader')) === 1);
    } finally {
      await store.close();
      await proxy.close();
      const n = streamNames(p);
      await deleteQueues([n.stream, n.dead]);
    }
  });

  test('on the server thread too, the leader gauge reads 1 while the batcher leads, 0 while another leads, and 0 once it stopped', { skip, timeout: 60_000 }, async () => {
    const logger = pino({ level: 'silent' });
    const open = () =>
      createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix: `${prefix}_main`, logger, batchMaxEvents: 100, runBatcher: true });
    const a = await open();
    let b: Awaited<ReturnType<typeof open>> | null = null;
    try {
      await a.migrate();
      await a.load();
      await waitFor('the first batcher to lead', async () => a.batcher?.isLeader === true && (await gauge('enrollment_batcher_leader')) === 1);
      // A second one in standby (the advisory lock is taken) adds nothing.
      b = await open();
      await b.load();
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(b.batcher?.isLeader, false);
      assert.equal(await gauge('enrollment_batcher_leader'), 1);
    } finally {
      await b?.close();
      await a.close();
      const n = streamNames(`${prefix}_main`);
      await deleteQueues([n.stream, n.dead]);
    }
    assert.equal(await gauge('enrollment_batcher_leader'), 0);
  });
});
