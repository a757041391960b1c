import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
import type { DeliveryJob, DeliveryQueue, NoticeStore, WebhookRow } from '../persistence/notice-types.js';

/**
 * Webhooks: the same notices as the students' event streams, POSTed to endpoints staff register.
 *
 * Deliveries are recorded by the webhook outbox (persistence/webhook-outbox.ts) in the same
 * transaction that writes their changes to the database, so none is lost in a crash and none is
 * made for a change that is not in the log; `seatAvailable` ones (watches live in the notice hub)
 * in the transaction that marks the watches fired. In RabbitMQ mode a feeder hands new delivery
 * rows to the queue (each row claimed by one instance); in database mode the rows are the queue.
 * The worker POSTs, signs (docs/webhooks.md), records every attempt, and on failure queues the next one after an exponential backoff, until `maxAttempts`, after which
 * the delivery is dead-lettered. A job leaves the queue only after its outcome is recorded, so a
 * crash repeats an attempt instead of losing it (at least once; receivers dedupe on the delivery id).
 */

export const SIGNATURE_HEADER = 'x-enrollment-signature';
export const TIMESTAMP_HEADER = 'x-enrollment-timestamp';
export const DELIVERY_HEADER = 'x-enrollment-delivery';
export const ATTEMPT_HEADER = 'x-enrollment-attempt';

/** `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the scheme of docs/webhooks.md. */
export function signPayload(secret: string, timestamp: number, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** What a receiver does (docs/webhooks.md): recompute, compare in constant time, bound the clock skew. */
export function verifySignature(secret: string, timestamp: number, body: string, signature: string, nowSeconds: number, toleranceSeconds = 300): boolean {
  if (!Number.isFinite(timestamp) || Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const want = Buffer.from(signPayload(secret, timestamp, body));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got);
}

export interface WebhookServiceOptions {
  store: NoticeStore;
  queue: DeliveryQueue;
  logger: Logger;
  /** Attempts before a delivery is dead-lettered (default 8). */
  maxAttempts?: number;
  /** Pause before the second attempt; doubled for each later one (default 2 s). */
  baseDelayMs?: number;
  /** Longest pause between attempts (default 10 min). */
  maxDelayMs?: number;
  /** One attempt waits this long for the endpoint's answer (default 5 s). */
  timeoutMs?: number;
  /**
   * RabbitMQ mode: how often deliveries overdue by more than `sweepGraceMs` are queued again (their
   * job was never published, e.g. the broker was away; default 30 s, grace 60 s). A job merely
   * late may then run twice, which at-least-once allows.
   */
  sweepMs?: number;
  sweepGraceMs?: number;
  /** RabbitMQ mode: how often new delivery rows are looked for and queued (default 250 ms; also woken by {@link WebhookService.wake}). */
  feedMs?: number;
  /** Called after a webhook was registered or stopped (the embedded outbox caches the active ones). */
  onWebhooksChanged?: () => void;
  now?: () => number;
}

/** A webhook as the API shows it: never its secret. */
export type PublicWebhook = Omit<WebhookRow, 'secret'>;

export class WebhookService {
  private readonly store: NoticeStore;
  private readonly queue: DeliveryQueue;
  private readonly log: Logger;
  readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private closed = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly sweepMs: number;
  private readonly sweepGraceMs: number;
  private readonly feedMs: number;
  private feedTimer: NodeJS.Timeout | null = null;
  private feeding: Promise<void> | null = null;
  private feedAgain = false;
  private readonly onWebhooksChanged: () => void;

  constructor(opts: WebhookServiceOptions) {
    this.store = opts.store;
    this.queue = opts.queue;
    this.log = opts.logger.child({ module: 'webhooks' });
    this.maxAttempts = opts.maxAttempts ?? 8;
    this.baseDelayMs = opts.baseDelayMs ?? 2000;
    this.maxDelayMs = opts.maxDelayMs ?? 600_000;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.now = opts.now ?? Date.now;
    this.sweepMs = opts.sweepMs ?? 30_000;
    this.sweepGraceMs = opts.sweepGraceMs ?? 60_000;
    this.feedMs = opts.feedMs ?? 250;
    this.onWebhooksChanged = opts.onWebhooksChanged ?? (() => undefined);
  }

  get queueKind(): DeliveryQueue['kind'] {
    return this.queue.kind;
  }

  async start(): Promise<void> {
    await this.queue.start((job) => this.attempt(job));
    if (this.queue.kind === 'amqp') {
      this.sweepTimer = setInterval(() => void this.sweep(), this.sweepMs);
      this.sweepTimer.unref();
      this.feedTimer = setInterval(() => this.wake(), this.feedMs);
      this.feedTimer.unref();
      this.wake();
    }
  }

  /**
   * New deliveries were recorded (by the outbox, maybe in another process): RabbitMQ mode queues
   * them now instead of at the next feed round; database mode wakes the poller.
   */
  wake(): void {
    if (this.closed) return;
    if (this.queue.kind !== 'amqp') {
      // The rows are the queue; scheduling only wakes the poller.
      this.queue.schedule({ deliveryId: 0, attempt: 1 }, 0).catch(() => undefined);
      return;
    }
    if (this.feeding) {
      this.feedAgain = true;
      return;
    }
    this.feeding = this.feed().finally(() => {
      this.feeding = null;
      if (this.feedAgain) {
        this.feedAgain = false;
        this.wake();
      }
    });
  }

  /** RabbitMQ mode: claims new delivery rows (one instance gets each) and queues their first attempt. */
  private async feed(): Promise<void> {
    try {
      for (;;) {
        const ids = await this.store.claimNewDeliveries(500);
        if (ids.length === 0) return;
        // A job lost here (broker away, crash) stays a claimed pending row: the sweep queues it again.
        await Promise.all(ids.map((deliveryId) => this.queue.schedule({ deliveryId, attempt: 1 }, 0)));
        if (ids.length < 500 || this.closed) return;
      }
    } catch (err) {
      this.log.warn({ err }, 'queueing new webhook deliveries failed; the sweep queues them later');
    }
  }

  /** Queues again deliveries whose attempt is long overdue (their job never reached the broker). */
  async sweep(): Promise<number> {
    try {
      const ids = await this.store.dueDeliveries(this.now() - this.sweepGraceMs, 500);
      for (const deliveryId of ids) await this.queue.schedule({ deliveryId, attempt: 0 }, 0);
      if (ids.length > 0) this.log.warn({ deliveries: ids.length }, 'overdue webhook deliveries queued again');
      return ids.length;
    } catch (err) {
      this.log.warn({ err }, 'sweeping overdue webhook deliveries failed');
      return 0;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.feedTimer) clearInterval(this.feedTimer);
    while (this.feeding) await this.feeding;
    await this.queue.close();
  }

  /** Pause after attempt `n` failed. */
  delayAfter(n: number): number {
    return Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (n - 1));
  }

  async create(input: { url: string; secret: string; kinds: string[] | null; createdBy: number }): Promise<PublicWebhook> {
    let u: URL;
    try {
      u = new URL(input.url);
    } catch {
      throw new EngineError('BAD_REQUEST', 'url is not a valid absolute URL');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new EngineError('BAD_REQUEST', 'url must be http or https');
    if (u.username !== '' || u.password !== '') throw new EngineError('BAD_REQUEST', 'url must not carry credentials; the secret signs each delivery');
    const row = await this.store.createWebhook({ ...input, url: u.toString() });
    this.onWebhooksChanged();
    return publicOf(row);
  }

  async list(): Promise<PublicWebhook[]> {
    return (await this.store.listWebhooks()).map(publicOf);
  }

  async get(id: number): Promise<PublicWebhook> {
    const w = await this.store.getWebhook(id);
    if (!w) throw new EngineError('WEBHOOK_NOT_FOUND', `no webhook ${id}`);
    return publicOf(w);
  }

  async deactivate(id: number): Promise<void> {
    const w = await this.store.getWebhook(id);
    if (!w) throw new EngineError('WEBHOOK_NOT_FOUND', `no webhook ${id}`);
    await this.store.deactivateWebhook(id);
    this.onWebhooksChanged();
  }

  async deliveries(id: number, limit: number) {
    await this.get(id);
    return this.store.listDeliveries(id, limit);
  }

  /** One attempt of a delivery: POST, record, then retry, dead-letter or done. */
  private async attempt(job: DeliveryJob): Promise<void> {
    const d = await this.store.getDelivery(job.deliveryId);
    if (!d || d.status === 'delivered' || d.status === 'dead') return;
    const attempt = d.attempts + 1;
    const t = Math.floor(this.now() / 1000);
    const t0 = performance.now();
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      const res = await fetch(d.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [TIMESTAMP_HEADER]: String(t),
          [SIGNATURE_HEADER]: signPayload(d.secret, t, d.body),
          [DELIVERY_HEADER]: String(d.id),
          [ATTEMPT_HEADER]: String(attempt),
          'user-agent': 'course-enrollment-engine-webhooks/1',
        },
        body: d.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      statusCode = res.status;
      // The body is not needed; release the socket.
      await res.body?.cancel().catch(() => undefined);
      if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`;
    } catch (err) {
      error = err instanceof Error ? (err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message) : String(err);
    }
    const durationMs = Math.round(performance.now() - t0);
    const next: { deliveryId: number; attempt: number } = { deliveryId: d.id, attempt: attempt + 1 };
    if (error === null) {
      await this.store.recordAttempt({ deliveryId: d.id, attempt, statusCode, error, durationMs, status: 'delivered', nextAttemptAt: null });
    } else if (attempt >= this.maxAttempts) {
      await this.store.recordAttempt({ deliveryId: d.id, attempt, statusCode, error, durationMs, status: 'dead', nextAttemptAt: null });
      await this.queue.deadLetter({ deliveryId: d.id, attempt });
      this.log.warn({ deliveryId: d.id, webhookId: d.webhookId, attempt, error }, 'webhook delivery dead-lettered');
    } else {
      const delay = this.delayAfter(attempt);
      await this.store.recordAttempt({ deliveryId: d.id, attempt, statusCode, error, durationMs, status: 'retrying', nextAttemptAt: this.now() + delay });
      await this.queue.schedule(next, delay);
    }
  }
}

function publicOf(w: WebhookRow): PublicWebhook {
  const { secret: _s, ...rest } = w;
  return rest;
}

export function createWebhookService(opts: WebhookServiceOptions): WebhookService {
  return new WebhookService(opts);
}
