import amqp from 'amqplib';
import type { Logger } from 'pino';
import { decodeMessage, offsetOf, streamArguments } from './amqp-log.js';
import type { SqlClient } from './sql-client.js';
import { isKnownEvent } from './types.js';

/**
 * The operator's way past a message the batcher stopped at (`npm run batcher -- --skip <offset>`).
 * The batcher never skips by itself, because every message was acknowledged to a client; moving
 * past one loses that change, so it is a decision a person makes and the project records:
 *
 * 1. only the message at the database's next offset (where the batcher stopped) can be skipped, and
 *    only if a batcher recorded a stall there or the message cannot be read at all (what stops an
 *    engine's replay when no batcher runs): a readable message at the next offset is merely not
 *    applied yet (no batcher running), and skipping it lost an acknowledged change (probe T);
 * 2. it is copied, broker-confirmed, to the dead-letter queue with who/why headers;
 * 3. one transaction moves the offset past it (only if still there), records the skip in
 *    `log_skips` (who, why, when, the message) and clears the stall.
 *
 * The running batcher picks the new offset up at its next retry.
 */
export interface SkipOptions {
  db: SqlClient;
  amqpUrl: string;
  stream: string;
  deadLetterQueue: string;
  offset: number;
  /** Who skips (recorded). */
  by: string;
  /** Why (recorded). */
  reason: string;
  logger: Logger;
  /** How long to wait for the message to arrive from the stream. Default 10 s. */
  readTimeoutMs?: number;
}

export class SkipRefusedError extends Error {
  override name = 'SkipRefusedError';
}

/** Reads the one message at `offset` of a stream. */
async function readOne(amqpUrl: string, stream: string, offset: number, timeoutMs: number): Promise<Buffer> {
  const conn = await amqp.connect(amqpUrl, { timeout: 3000 });
  try {
    const ch = await conn.createChannel();
    await ch.assertQueue(stream, { durable: true, arguments: streamArguments(20e9) });
    await ch.prefetch(100);
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new SkipRefusedError(`no message at ${stream} offset ${offset} (beyond the end of the stream, or no longer retained)`)), timeoutMs);
      ch.on('close', () => reject(new Error('the broker closed the channel')));
      ch.consume(
        stream,
        (msg) => {
          if (!msg) return;
          ch.ack(msg);
          const at = offsetOf(msg);
          if (at < offset) return;
          clearTimeout(timer);
          if (at !== offset) reject(new SkipRefusedError(`no message at ${stream} offset ${offset} (the stream continues at ${at})`));
          else resolve(msg.content);
        },
        { noAck: false, arguments: { 'x-stream-offset': offset } },
      ).catch(reject);
    });
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** Whether a batcher (and an engine's replay) can read the message: it decodes, and every event's type is known here. */
function readable(content: Buffer): boolean {
  try {
    const m = decodeMessage(content);
    return !('events' in m) || m.events.every((e) => isKnownEvent(e));
  } catch {
    return false;
  }
}

/** Skips the message the batcher is stopped at; throws SkipRefusedError when that is not `offset`. */
export async function skipLogMessage(opts: SkipOptions): Promise<void> {
  const log = opts.logger.child({ module: 'log-skip' });
  const r = await opts.db.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [opts.stream]);
  const next = r.rows[0] ? Number(r.rows[0].next_offset) : 0;
  if (next !== opts.offset) {
    throw new SkipRefusedError(`the batcher of ${opts.stream} is at offset ${next}, not ${opts.offset}: only the message it is stopped at can be skipped`);
  }
  const content = await readOne(opts.amqpUrl, opts.stream, opts.offset, opts.readTimeoutMs ?? 10_000);
  const stall = await opts.db.query<{ stream_offset: number }>('SELECT stream_offset FROM log_stalls WHERE log_name = $1', [opts.stream]);
  const stalledHere = stall.rows[0] !== undefined && Number(stall.rows[0].stream_offset) === opts.offset;
  if (!stalledHere && readable(content)) {
    throw new SkipRefusedError(
      `no batcher is stopped at ${opts.stream} offset ${opts.offset} and the message there is readable: it is only not applied yet ` +
        `(start the batcher and it applies it). Skipping it would lose a change acknowledged to a client; nothing was skipped`,
    );
  }

  const conn = await amqp.connect(opts.amqpUrl, { timeout: 3000 });
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(opts.deadLetterQueue, { durable: true });
    ch.sendToQueue(opts.deadLetterQueue, content, {
      persistent: true,
      headers: { 'x-stream': opts.stream, 'x-stream-offset': opts.offset, 'x-skipped-by': opts.by, 'x-reason': opts.reason.slice(0, 1000) },
    });
    await ch.waitForConfirms();
  } finally {
    await conn.close().catch(() => undefined);
  }

  await opts.db.transaction(async (tx) => {
    const moved = await tx.query(
      `INSERT INTO log_offsets (log_name, next_offset) VALUES ($1, $2 + 1)
       ON CONFLICT (log_name) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
       WHERE log_offsets.next_offset = $2`,
      [opts.stream, opts.offset],
    );
    if (moved.rowCount !== 1) throw new SkipRefusedError(`the batcher of ${opts.stream} moved on meanwhile; nothing was skipped`);
    await tx.query(
      'INSERT INTO log_skips (log_name, stream_offset, skipped_by, reason, message) VALUES ($1, $2, $3, $4, $5)',
      [opts.stream, opts.offset, opts.by, opts.reason, content],
    );
    await tx.query('DELETE FROM log_stalls WHERE log_name = $1', [opts.stream]);
  });
  log.warn({ stream: opts.stream, offset: opts.offset, by: opts.by, reason: opts.reason, bytes: content.length }, 'message skipped by an operator and copied to the dead-letter queue');
}
