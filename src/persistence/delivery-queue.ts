import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
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

export async function createAmqpDeliveryQueue(opts: { url: string; prefix: string; logger: Logger; prefetch?: number }): Promise<DeliveryQueue & { retryQueues(): string[] }> {
  const log = opts.logger.child({ module: 'webhook-queue' });
  const names = deliveryQueueNames(opts.prefix);
  let conn: ChannelModel;
  let pub: ConfirmChannel;
  try {
    conn = await amqp.connect(opts.url, { timeout: 3000 });
    pub = await conn.createConfirmChannel();
    await pub.assertQueue(names.work, { durable: true });
    await pub.assertQueue(names.dead, { durable: true });
  } catch (err) {
    throw new EngineError('UNAVAILABLE', 'the message broker is unreachable', { cause: err instanceof Error ? err.message : String(err) });
  }
  conn.on('error', (err: unknown) => log.error({ err }, 'webhook broker connection error'));
  const retryQueues = new Set<string>();
  let consumer: ConfirmChannel | null = null;
  let consumerTag: string | null = null;
  let closed = false;
  const inflight = new Set<Promise<void>>();
  /** ack/nack on a channel closed meanwhile (shutdown, broker lost) throws; the broker redelivers then. */
  const settle = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      log.debug({ err }, 'webhook job not settled: its channel is closed; the broker redelivers it');
    }
  };

  const publish = async (queue: string, job: DeliveryJob): Promise<void> => {
    pub.sendToQueue(queue, Buffer.from(JSON.stringify(job)), { persistent: true, contentType: 'application/json' });
    await pub.waitForConfirms();
  };

  return {
    kind: 'amqp',
    retryQueues: () => [...retryQueues],
    async schedule(job, delayMs) {
      if (delayMs <= 0) return publish(names.work, job);
      const q = names.retry(delayMs);
      if (!retryQueues.has(q)) {
        await pub.assertQueue(q, {
          durable: true,
          arguments: { 'x-message-ttl': delayMs, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': names.work },
        });
        retryQueues.add(q);
      }
      return publish(q, job);
    },
    deadLetter: (job) => publish(names.dead, job),
    async start(handle) {
      consumer = await conn.createConfirmChannel();
      await consumer.prefetch(opts.prefetch ?? 16);
      const ch = consumer;
      await ch.consume(names.work, (msg: ConsumeMessage | null) => {
        if (msg === null) return;
        let job: DeliveryJob;
        try {
          job = JSON.parse(msg.content.toString('utf8')) as DeliveryJob;
        } catch (err) {
          log.error({ err }, 'unreadable webhook job; parked in the dead-letter queue');
          void publish(names.dead, { deliveryId: -1, attempt: 0 })
            .catch(() => undefined)
            .finally(() => settle(() => ch.ack(msg)));
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
      }).then((r) => {
        consumerTag = r.consumerTag;
      });
    },
    async close() {
      if (consumer && consumerTag !== null) await consumer.cancel(consumerTag).catch(() => undefined);
      await Promise.allSettled([...inflight]);
      closed = true;
      await consumer?.close().catch(() => undefined);
      await pub.close().catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
  };
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

  const poll = async (): Promise<void> => {
    if (polling || closed || handler === null) return;
    polling = true;
    try {
      const due = await opts.store.dueDeliveries(now(), 64);
      for (const id of due) {
        if (inflight.has(id)) continue;
        inflight.add(id);
        const h = handler;
        void h({ deliveryId: id, attempt: 0 })
          .catch((err: unknown) => log.warn({ err, deliveryId: id }, 'webhook job failed; it stays due'))
          .finally(() => inflight.delete(id));
      }
    } catch (err) {
      log.warn({ err }, 'reading due webhook deliveries failed');
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
