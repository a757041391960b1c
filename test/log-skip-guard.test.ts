import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { pino } from 'pino';
import { encodeMessage, streamArguments, UnreadableMessageError } from '../src/persistence/amqp-log.js';
import { retryStorageAtStart } from '../src/persistence/start-retry.js';
import { SkipRefusedError, skipLogMessage } from '../src/persistence/log-skip.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe T, finding 1: `--skip` took any message at the database's next offset, so with no batcher
 * running (not stalled, merely not applying) an operator skipped a readable message, an acknowledged
 * drop, and lost it. A skip now needs a batcher's recorded stall at that offset, or a message that
 * cannot be read at all (what stops an engine's replay when no batcher runs).
 */

const logger = pino({ level: 'silent' });

test('a readable message nobody is stopped at is not skipped; an unreadable one, or one a batcher stalled at, is', { timeout: 60_000 }, async (t) => {
  if ((await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL))) return t.skip('services');
  const tdb = await createTestDatabase();
  const db = createPgClient(tdb.url);
  const stream = `${uniqueName('skip-guard')}.events`;
  const dead = `${stream}.dead`;
  const conn = await amqp.connect(AMQP_URL);
  try {
    await migrate(db);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(stream, { durable: true, arguments: streamArguments(20e9) });
    const drop = {
      events: [{ type: 'studentDropped', courseId: 1, groupId: 1, seq: 2, studentId: 7, cause: { requestId: 'r', actor: 'student:7', at: 0 } }],
      owner: 'x',
      epochs: { 0: 1 },
    };
    ch.sendToQueue(stream, encodeMessage(drop as never), { persistent: true }); // offset 0: readable
    ch.sendToQueue(stream, Buffer.from('{not json'), { persistent: true }); // offset 1: unreadable
    ch.sendToQueue(stream, encodeMessage(drop as never), { persistent: true }); // offset 2: readable
    await ch.waitForConfirms();
    const skip = (offset: number) => skipLogMessage({ db, amqpUrl: AMQP_URL, stream, deadLetterQueue: dead, offset, by: 'test', reason: 'test', logger, readTimeoutMs: 5000 });

    await assert.rejects(skip(0), (e: unknown) => e instanceof SkipRefusedError && /message there is readable/.test(e.message));
    assert.equal((await db.query('SELECT 1 FROM log_skips')).rows.length, 0, 'nothing recorded');
    // Move the offset to 1 as a batcher applying message 0 would, then skip the unreadable one: allowed.
    await db.query(`INSERT INTO log_offsets (log_name, next_offset) VALUES ($1, 1)`, [stream]);
    await skip(1);
    assert.equal(Number((await db.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [stream])).rows[0]?.next_offset), 2);
    // A readable message a batcher recorded a stall at (it could not apply it): the operator may skip it.
    await assert.rejects(skip(2), SkipRefusedError);
    await db.query(`INSERT INTO log_stalls (log_name, stream_offset, reason) VALUES ($1, 2, 'cannot be applied (23505)')`, [stream]);
    await skip(2);
    assert.deepEqual((await db.query<{ stream_offset: number }>('SELECT stream_offset FROM log_skips ORDER BY stream_offset')).rows.map((r) => Number(r.stream_offset)), [1, 2]);
  } finally {
    await conn.close().catch(() => undefined);
    await deleteQueues([stream, dead]).catch(() => undefined);
    await db.close();
    await tdb.drop();
  }
});

test('a start that cannot load past an unreadable message says which and how to move on, not "storage unavailable"', async () => {
  const lines: { level: number; msg: string; offset?: number }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string; offset?: number }) });
  let tries = 0;
  await retryStorageAtStart(log, async () => {
    tries += 1;
    if (tries === 1) throw new UnreadableMessageError('x.events', 41);
  });
  assert.equal(tries, 2, 'it keeps trying (the skip lets it go on by itself)');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.level, 50);
  assert.equal(lines[0]!.offset, 41);
  assert.match(lines[0]!.msg, /^cannot load: unreadable message at x\.events offset 41; .*npm run batcher -- --skip 41/);
  assert.doesNotMatch(lines[0]!.msg, /storage unavailable/);
});
