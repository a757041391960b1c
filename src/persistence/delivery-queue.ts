import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
import { createRepeatedFailureLog } from '../repeated-failure.js';
import { amqpPrefetch, withHeartbeat } from './amqp-log.js';
import type { DeliveryJob, DeliveryQueue, NoticeStore } from './notice-types.js';

/**
 * The two places webhook deliveries wait between attempts (see notice-types.ts).
 *
 * Full mode, RabbitMQ: `<prefix>.webhooks` holds jobs due now; a failed attempt is published (with a
 * confirm) to `<prefix>.webhooks.retry.<delay>ms`, a queue whose message TTL is that delay and whose
 * dead-letter target is the work queue, so the job comes back after the delay. One retry queue per
 * delay, because RabbitMQ expires messages only at a queue's head: delays mixed in one queue would
 * wait for each other. A job is acknowledged only after its attempt was recorded and its next step
 * (retry or dead letter) confirmed, so a crash repeats an attempt rather than losing it (at least
 * once). After the last attempt the job goes to `<prefix>.webhooks.dead`.
 *
 * Embedded mode, database: the delivery row's `next_attempt_at` is the queue; a poller hands due
 * rows to the worker, and a restart finds them where they were.
 */

export function deliveryQueueNames(prefix: string): { work: string; dead: string; retry: (delayMs: number) => string } {
  return { work: `${prefix}.webhooks`, dead: `${prefix}.webhooks.dead`, retry: (d) => `${prefix}.webhooks.retry.${d}ms` };
}

export async function createAmqpDeliveryQueue(opts: {
  url: string;
  prefix: string;
  logger: Logger;
  /**
   * Jobs handed to the worker at once (unacknowledged; default 1280, 20 webhooks' shares). The worker bounds each
   * webhook's share of them (src/notices/webhooks.ts, `deliveryPrefetch`), so this must leave room
   * for every active webhook's share: with 16, one receiver that never answered held all of them.
   */
  prefetch?: number;
  /** First pause before reconnecting after the broker was lost (doubles up to 10 s; default 500 ms). */
  reconnectMs?: number;
}): Promise<DeliveryQueue & { retryQueues(): string[]; readonly connected: boolean }> {
  const log = opts.logger.child({ module: 'webhook-queue' });
  const names = deliveryQueueNames(opts.prefix);
  const retryQueues = new Map<string, number>();
  let conn: ChannelModel | null = null;
  let pub: ConfirmChannel | null = null;
  let consumer: ConfirmChannel | null = null;
  let consumerTag: string | null = null;
  let handler: ((job: DeliveryJob) => Promise<void>) | null = null;
  let closed = false;
  let reconnectWait = opts.reconnectMs ?? 500;
  const inflight = new Set<Promise<void>>();
  /** ack/nack on a channel closed meanwhile (shutdown, broker lost) throws; the broker redelivers then. */
  const settle = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      log.debug({ err }, 'webhook job not settled: its channel is closed; the broker redelivers it');
    }
  };
  const unavailable = (err: unknown) =>
    new EngineError('UNAVAILABLE', 'the message broker is unreachable', { cause: err instanceof Error ? err.message : String(err) });

  const consume = async (c: ChannelModel, handle: (job: DeliveryJob) => Promise<void>): Promise<void> => {
    const ch = await c.createConfirmChannel();
    await ch.prefetch(amqpPrefetch(opts.prefetch ?? 1280));
    consumer = ch;
    const r = await ch.consume(names.work, (msg: ConsumeMessage | null) => {
      if (msg === null) return;
      let job: DeliveryJob;
      try {
        job = JSON.parse(msg.content.toString('utf8')) as DeliveryJob;
      } catch (err) {
        log.error({ err }, 'unreadable webhook job; dropped');
        settle(() => ch.ack(msg));
        return;
      }
      const run = handle(job).then(
        () => settle(() => ch.ack(msg)),
        (err: unknown) => {
          // Storage or broker away: the job goes back to the queue after a pause, never lost.
          log.warn({ err, deliveryId: job.deliveryId }, 'webhook job failed; requeued');
          setTimeout(() => {
            if (!closed) settle(() => ch.nack(msg, false, true));
          }, 1000).unref();
        },
      );
      inflight.add(run);
      void run.finally(() => inflight.delete(run));
    });
    consumerTag = r.consumerTag;
  };

  /** Connects, declares the queues, and consumes again if started; on loss, tries again with a growing pause. */
  const connect = async (): Promise<void> => {
    // Named, so an operator (or a test) can tell this connection from the event log's.
    const c = await amqp.connect(withHeartbeat(opts.url), { timeout: 3000, clientProperties: { connection_name: names.work } });
    try {
      const ch = await c.createConfirmChannel();
      await ch.assertQueue(names.work, { durable: true });
      await ch.assertQueue(names.dead, { durable: true });
      for (const [q, delay] of retryQueues) await ch.assertQueue(q, retryArgs(names.work, delay));
      if (handler) await consume(c, handler);
      pub = ch;
    } catch (err) {
      await c.close().catch(() => undefined);
      throw err;
    }
    conn = c;
    reconnectWait = opts.reconnectMs ?? 500;
    c.on('error', (err: unknown) => log.error({ err }, 'webhook broker connection error'));
    c.on('close', () => {
      conn = null;
      pub = null;
      consumer = null;
      if (closed) return;
      log.error('webhook broker connection lost; reconnecting');
      scheduleReconnect();
    });
  };
  const scheduleReconnect = (): void => {
    setTimeout(() => {
      if (closed) return;
      connect().then(
        () => log.info('webhook broker connection restored'),
        (err: unknown) => {
          log.warn({ err, waitMs: reconnectWait }, 'webhook broker still unreachable');
          reconnectWait = Math.min(10_000, reconnectWait * 2);
          scheduleReconnect();
        },
      );
    }, reconnectWait).unref();
  };

  try {
    await connect();
  } catch (err) {
    throw unavailable(err);
  }

  const publish = async (queue: string, job: DeliveryJob): Promise<void> => {
    const ch = pub;
    if (!ch) throw new EngineError('UNAVAILABLE', 'the message broker is unreachable; reconnecting');
    try {
      ch.sendToQueue(queue, Buffer.from(JSON.stringify(job)), { persistent: true, contentType: 'application/json' });
      await ch.waitForConfirms();
    } catch (err) {
      throw unavailable(err);
    }
  };

  return {
    kind: 'amqp',
    retryQueues: () => [...retryQueues.keys()],
    get connected() {
      return pub !== null;
    },
    async schedule(job, delayMs) {
      if (delayMs <= 0) return publish(names.work, job);
      const q = names.retry(delayMs);
      if (!retryQueues.has(q)) {
        const ch = pub;
        if (!ch) throw new EngineError('UNAVAILABLE', 'the message broker is unreachable; reconnecting');
        await ch.assertQueue(q, retryArgs(names.work, delayMs)).catch((err: unknown) => {
          throw unavailable(err);
        });
        retryQueues.set(q, delayMs);
      }
      return publish(q, job);
    },
    deadLetter: (job) => publish(names.dead, job),
    async start(handle) {
      handler = handle;
      if (conn) await consume(conn, handle);
    },
    async close() {
      const ch = consumer as ConfirmChannel | null;
      if (ch && consumerTag !== null) await ch.cancel(consumerTag).catch(() => undefined);
      await Promise.allSettled([...inflight]);
      closed = true;
      const c = conn as ChannelModel | null;
      await c?.close().catch(() => undefined);
    },
  };
}

/** A retry queue: messages wait `delayMs`, then go back to the work queue. */
function retryArgs(work: string, delayMs: number) {
  return { durable: true, arguments: { 'x-message-ttl': delayMs, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': work } };
}

export function createDatabaseDeliveryQueue(opts: { store: NoticeStore; logger: Logger; pollMs?: number; now?: () => number }): DeliveryQueue {
  const log = opts.logger.child({ module: 'webhook-queue' });
  const now = opts.now ?? Date.now;
  const pollMs = opts.pollMs ?? 500;
  const inflight = new Set<number>();
  let handler: ((job: DeliveryJob) => Promise<void>) | null = null;
  let timer: NodeJS.Timeout | null = null;
  let polling = false;
  let closed = false;
  // Polled every 500 ms: while the database is away, logged when it starts, every 15 s while it
  // lasts and once when it is back, not on every poll.
  const pollFailures = createRepeatedFailureLog(log, { message: 'reading due webhook deliveries failed', recovered: 'reading due webhook deliveries works again' });

  const poll = async (): Promise<void> => {
    if (polling || closed || handler === null) return;
    polling = true;
    try {
      // Rows already handed over (attempts in flight, jobs waiting for their webhook's slot) are due
      // too: read past them, or a webhook whose receiver hangs would hide every other's rows.
      const due = await opts.store.dueDeliveries(now(), 64 + inflight.size);
      for (const id of due) {
        if (inflight.has(id)) continue;
        inflight.add(id);
        const h = handler;
        void h({ deliveryId: id, attempt: 0 })
          .catch((err: unknown) => log.warn({ err, deliveryId: id }, 'webhook job failed; it stays due'))
          .finally(() => inflight.delete(id));
      }
      pollFailures.succeeded();
    } catch (err) {
      pollFailures.failed(err);
    } finally {
      polling = false;
    }
  };
  const poke = (delayMs: number): void => {
    if (closed) return;
    setTimeout(() => void poll(), Math.max(0, delayMs) + 5).unref();
  };

  return {
    kind: 'database',
    // The row's next_attempt_at (written with the attempt) is the queue; this only wakes the poller.
    async schedule(_job, delayMs) {
      poke(delayMs);
    },
    async deadLetter() {
      // The row's status `dead` is the dead-letter list (GET /webhooks/{id}/deliveries shows it).
    },
    async start(handle) {
      handler = handle;
      timer = setInterval(() => void poll(), pollMs);
      timer.unref();
      poke(0);
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      while (inflight.size > 0) await new Promise((r) => setTimeout(r, 10));
    },
  };
}
