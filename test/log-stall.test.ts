import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import amqp from 'amqplib';
import { pino } from 'pino';
import { createEngine, type Engine } from '../src/engine/engine.js';
import { batcherThreadFactory } from '../src/persistence/batcher-thread.js';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { persistenceRegistry } from '../src/persistence/metrics.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { NOW, scenario } from './support/scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Issue 13, item 1: an acknowledged event is never skipped. A message the batcher cannot apply
 * (well-formed, but breaking a foreign key) and one nobody can read (not JSON) are injected into
 * the real stream between real changes; the batcher must apply everything before, nothing after,
 * stop there (log_stalls, /ready, gauge), and move on only through the operator's command.
 */
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const meta = (requestId: string) => ({ requestId, actor: 'staff:1' });

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function runSkip(dbUrl: string, prefix: string, offset: number, by: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli/batcher.ts', '--skip', String(offset), '--by', by, '--reason', 'injected by the test'], {
      env: { ...process.env, DATABASE_URL: dbUrl, RABBITMQ_URL: AMQP_URL, AMQP_PREFIX: prefix, JWT_SECRET: 'log-stall-secret-0123456789-abcdefghij', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    p.stdout.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (output += d.toString()));
    p.on('exit', (code) => resolve({ code, output }));
  });
}

async function closedOf(db: SqlClient, courseId: number): Promise<boolean | undefined> {
  return (await db.query<{ closed: boolean }>('SELECT closed FROM courses WHERE course_id = $1 AND group_id = 1', [courseId])).rows[0]?.closed;
}

async function metricValue(name: string, stream: string, reader: string): Promise<number | undefined> {
  const m = (await persistenceRegistry.getMetricsAsJSON()).find((x) => x.name === name);
  return m?.values.find((v) => v.labels.stream === stream && v.labels.reader === reader)?.value;
}

/** The batcher on a worker thread (BATCHER_THREAD=worker, the default): what the server shows of it is mirrored. */
const onWorker = batcherThreadFactory({ entry: join(import.meta.dirname, '..', 'src', 'cli', 'batcher-worker'), logLevel: process.env.TEST_LOG_LEVEL ?? 'silent' });

// 'unknown-type': an event type this version does not know (a newer version's, during a rolling upgrade).
for (const [kind, thread] of [['unappliable', 'main'], ['unreadable', 'main'], ['unappliable', 'worker'], ['unreadable', 'worker'], ['unknown-type', 'main']] as const) {
  describe(`an ${kind} message mid-stream stops the batcher (on the ${thread} thread) until an operator skips it`, async () => {
    const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
    let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
    const prefix = uniqueName('enroll_stall');
    const names = streamNames(prefix);
    const open = (runBatcher: boolean): Promise<FullStore> =>
      createFullStore({
        databaseUrl: tdb.url,
        rabbitmqUrl: AMQP_URL,
        prefix,
        logger,
        batchMaxEvents: 100,
        runBatcher,
        batcherStallRetryMs: 100,
        ...(thread === 'worker' ? { batcherFactory: onWorker } : {}),
      });

    before(async () => {
      if (skip) return;
      tdb = await createTestDatabase();
    });
    after(async () => {
      if (skip) return;
      await deleteQueues([names.stream, names.dead]);
      await tdb.drop();
    });

    test('nothing after it is applied, readiness and the gauge say where, the skip command moves on and records it', { skip, timeout: 90_000 }, async () => {
      const store = await open(true);
      await store.migrate();
      let engine: Engine = createEngine({ persistence: store, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
      await engine.start();
      const db = createPgClient(tdb.url);
      const conn = await amqp.connect(AMQP_URL);
      let second: FullStore | null = null;
      try {
        await scenario(engine);
        // Before: a change acknowledged ahead of the poison.
        await engine.setClosed(20, 1, true, meta('before'));
        const poison =
          kind === 'unreadable'
            ? Buffer.from('not json at all')
            : kind === 'unknown-type'
              ? Buffer.from(JSON.stringify({ events: [{ type: 'studentRenamed', seq: 2, studentId: 100, name: 'x', cause: { requestId: 'poison', actor: 'test', at: NOW } }] }))
              : Buffer.from(JSON.stringify({ events: [{ type: 'studentEnrolled', courseId: 10, groupId: 1, seq: 999_999, studentId: 424_242, forced: false, movedIn: false, cause: { requestId: 'poison', actor: 'test', at: NOW } }] }));
        const ch = await conn.createConfirmChannel();
        ch.sendToQueue(names.stream, poison, { persistent: true });
        await ch.waitForConfirms();
        // After: acknowledged behind the poison; must not be applied while the batcher is stopped.
        await engine.setClosed(30, 1, true, meta('after'));

        const stall = await waitFor('the batcher to stop', async () => store.batcher?.stall ?? null);
        await waitFor('the change before the poison to land', async () => (await closedOf(db, 20)) === true);
        // The batcher knows it stopped a moment before its row is committed: wait for the row.
        const row = await waitFor(
          'the stall to be recorded in log_stalls',
          async () => (await db.query<{ stream_offset: number; reason: string }>('SELECT stream_offset, reason FROM log_stalls WHERE log_name = $1', [names.stream])).rows[0],
        );
        assert.equal(Number(row.stream_offset), stall.offset);
        // Several retries later, it is still stopped, and nothing behind the poison is in the database.
        const retriesFrom = Date.now();
        await waitFor('a few retries', async () => Date.now() - retriesFrom > 1500);
        assert.equal(store.batcher?.stall?.offset, stall.offset, 'still stopped at the same offset');
        assert.equal(await closedOf(db, 30), false, 'the change after the poison is not applied before it');
        assert.equal(Number((await db.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [names.stream])).rows[0]?.next_offset), stall.offset);

        const ready = await store.readiness();
        assert.equal(ready.ready, false);
        assert.match(ready.checks.log?.detail ?? '', new RegExp(`${names.stream.replace(/\./g, '\\.')} offset ${stall.offset}`));
        // The batcher's own check says why it reads nothing: the message, not the broker (which is fine).
        if (ready.checks.batcher?.ok === false) assert.doesNotMatch(ready.checks.batcher.detail ?? '', /broker is away/);
        assert.equal(await metricValue('enrollment_log_stalled', names.stream, 'batcher'), 1);
        assert.equal(await metricValue('enrollment_log_stalled_offset', names.stream, 'batcher'), stall.offset);
        // A newer version's event stops the batcher as one it cannot apply (not retried as an outage), naming why.
        if (kind === 'unknown-type') assert.match(row.reason, /UNKNOWN_EVENT_TYPE/);

        if (kind === 'unreadable') {
          // A restarting engine cannot replay past it either: its load fails naming the offset.
          second = await open(false);
          await assert.rejects(second.load(), (err: Error) => err.message.includes(`${names.stream} offset ${stall.offset}`));
          const r2 = await second.readiness();
          assert.equal(r2.ready, false);
          assert.match(r2.checks.replay?.detail ?? '', new RegExp(`offset ${stall.offset}`));
        }

        // The operator command refuses any other offset, and changes nothing then.
        const wrong = await runSkip(tdb.url, prefix, stall.offset + 1, 'someone');
        assert.equal(wrong.code, 1, wrong.output);
        assert.equal((await db.query('SELECT 1 FROM log_skips')).rows.length, 0);

        const deadBefore = (await ch.checkQueue(names.dead)).messageCount;
        const ok = await runSkip(tdb.url, prefix, stall.offset, 'test-operator');
        assert.equal(ok.code, 0, ok.output);
        const skipped = (await db.query<{ stream_offset: number; skipped_by: string; message: Buffer }>('SELECT stream_offset, skipped_by, message FROM log_skips WHERE log_name = $1', [names.stream])).rows;
        assert.equal(skipped.length, 1);
        assert.equal(Number(skipped[0]?.stream_offset), stall.offset);
        assert.equal(skipped[0]?.skipped_by, 'test-operator');
        assert.deepEqual(skipped[0]?.message, poison, 'the skipped message is the injected one');
        // A copy is in the dead-letter queue, with who and where.
        assert.equal((await ch.checkQueue(names.dead)).messageCount, deadBefore + 1);
        const dead = await waitFor('the dead letter', async () => (await ch.get(names.dead, { noAck: true })) || null);
        assert.deepEqual(dead.content, poison);
        assert.equal(dead.properties.headers?.['x-skipped-by'], 'test-operator');
        assert.equal(Number(dead.properties.headers?.['x-stream-offset']), stall.offset);
        await ch.close();

        // The batcher moves on: the change after the poison lands, the stall is gone everywhere.
        await waitFor('the change after the poison to land', async () => (await closedOf(db, 30)) === true);
        await waitFor('the stall to clear', async () => store.batcher?.stall === null);
        assert.equal((await store.readiness()).ready, true);
        assert.equal(await metricValue('enrollment_log_stalled', names.stream, 'batcher'), 0);
        assert.equal((await db.query('SELECT 1 FROM log_stalls')).rows.length, 0);
        if (kind === 'unappliable') {
          assert.equal((await db.query('SELECT 1 FROM enrolled_courses WHERE student_id = 424242')).rows.length, 0);
        }

        // A restart replays nothing it cannot read, and loses neither side of the poison.
        const live = engine.dumpState();
        engine.stop();
        second ??= await open(false);
        engine = createEngine({ persistence: second, logger, enrollmentWindowMs: 3_600_000, now: () => NOW });
        await engine.start();
        const reloaded = engine.dumpState();
        assert.deepEqual(reloaded.sections.find((s) => s.info.courseId === 20)?.closed, true);
        assert.deepEqual(reloaded.sections.find((s) => s.info.courseId === 30)?.closed, true);
        assert.equal(reloaded.students.length, live.students.length);
        assert.equal((await second.readiness()).checks.replay, undefined);
      } finally {
        engine.stop();
        await conn.close().catch(() => undefined);
        await second?.close();
        await store.close();
        await db.close();
      }
    });
  });
}
