import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
import { createRepeatedFailureLog, type RepeatedFailureLog } from '../repeated-failure.js';
import type { DeliveryJob, DeliveryQueue, DeliveryStatus, NoticeStore, WebhookRow } from '../persistence/notice-types.js';
import {
  checkWebhookTarget,
  forbiddenTargetReason,
  guardedLookup,
  hostOf,
  systemOwnAddresses,
  systemResolveHost,
  TARGET_FORBIDDEN,
  targetForbiddenError,
  type OwnAddresses,
  type ResolveHost,
} from './webhook-target.js';

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
 * Each webhook gets a bounded share of the worker (attempts in flight, jobs waiting; past it a job
 * is set aside for a growing pause without counting an attempt), so a receiver that hangs delays
 * only its own deliveries, not every webhook's behind it.
 *
 * Targets that are not globally reachable (loopback, private, link-local, documentation, ...) or
 * are an address of this machine are refused at registration and again at every delivery, against
 * DNS rebinding (webhook-target.ts), unless `allowPrivateTargets` (WEBHOOK_ALLOW_PRIVATE_TARGETS) is
 * set. A refused attempt is recorded and retried like any failed one, with the reason as its error.
 * At most `maxActive` webhooks are active at once (WEBHOOK_MAX_ACTIVE): each notice is POSTed to
 * every one, so without a bound one staff account could make the engine an amplifier.
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
  /**
   * Allow targets on loopback, private, link-local and other internal addresses (default false:
   * refused at registration and at delivery, see webhook-target.ts). From WEBHOOK_ALLOW_PRIVATE_TARGETS.
   */
  allowPrivateTargets?: boolean;
  /** How target names are resolved, at registration and at each delivery's connect (default: the system resolver; tests pass their own). */
  resolveHost?: ResolveHost;
  /** This machine's interface addresses, asked at each check (default: os.networkInterfaces(); tests pass their own). */
  ownAddresses?: OwnAddresses;
  /**
   * Active webhooks allowed at once (default 20; from WEBHOOK_MAX_ACTIVE): registering one more is
   * refused with 429 TOO_MANY_WEBHOOKS and stores nothing. Deleted (inactive) ones do not count.
   */
  maxActive?: number;
  /**
   * Attempts of one webhook POSTing at once on this instance (default {@link PER_WEBHOOK_IN_FLIGHT}).
   * A receiver that never answers holds its attempts for `timeoutMs` each; without a bound per
   * webhook its jobs took every slot of the shared worker and every other webhook waited behind
   * them (probe: a healthy receiver's deliveries 5-10 s late behind one that never answered).
   */
  perWebhookInFlight?: number;
  /**
   * Jobs of one webhook held in memory waiting for one of its slots, in arrival order (default
   * {@link PER_WEBHOOK_WAITING}). A job past it is set aside: its row's next attempt is moved
   * `deferMs` on (doubling each time the same job is set aside, at most {@link MAX_DEFER_MS}) and
   * it is queued again after that pause, without counting an attempt.
   */
  perWebhookWaiting?: number;
  /** First pause of a job set aside (default 1 s). */
  deferMs?: number;
  now?: () => number;
  /**
   * While the feed or the sweep keeps failing (the database away), how often at most it is logged
   * again (ms; default REPEATED_FAILURE_LOG_MS, 15 s): the feed retries every `feedMs`.
   */
  repeatedFailureLogMs?: number;
}

/** Default bound on one webhook's attempts in flight on one instance. */
export const PER_WEBHOOK_IN_FLIGHT = 4;
/** Default bound on one webhook's jobs waiting in memory for a slot on one instance. */
export const PER_WEBHOOK_WAITING = 60;
/** Longest pause of a job set aside because its webhook is busy. */
export const MAX_DEFER_MS = 30_000;
/** Deliveries whose count of set-asides is remembered in memory (embedded mode); the oldest is forgotten past it. */
const MAX_DEFERRALS_KEPT = 100_000;

/**
 * How many delivery jobs the queue should hand the worker at once (RabbitMQ prefetch): room for
 * every active webhook's share (in flight plus waiting), so webhooks whose receivers hang can take
 * only their own shares and a healthy webhook's jobs always find room. The queue caps it at what AMQP
 * carries (65,535, amqpPrefetch): past about 1,000 active webhooks at the default shares, hanging
 * receivers can fill it.
 */
export function deliveryPrefetch(maxActive: number, perWebhookInFlight = PER_WEBHOOK_IN_FLIGHT, perWebhookWaiting = PER_WEBHOOK_WAITING): number {
  return Math.max(16, maxActive * (perWebhookInFlight + perWebhookWaiting));
}

/** Raised to a job that waited for its webhook's slot when the worker closes: it is not acknowledged, so the queue keeps it. */
class WorkerClosing extends Error {}

/** One webhook's attempts in flight on this instance and the jobs waiting for a slot. */
interface Lane {
  running: number;
  waiting: { go: () => void; stop: (err: Error) => void }[];
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
  /** The feed's and the sweep's failures, logged once per run of them and then at most every 15 s. */
  private readonly feedFailures: RepeatedFailureLog;
  private readonly sweepFailures: RepeatedFailureLog;
  private readonly onWebhooksChanged: () => void;
  private readonly allowPrivateTargets: boolean;
  private readonly resolveHost: ResolveHost;
  private readonly ownAddresses: OwnAddresses;
  readonly maxActive: number;
  private readonly perWebhookInFlight: number;
  private readonly perWebhookWaiting: number;
  private readonly deferMs: number;
  /** Per webhook id, while it has attempts in flight or waiting here. */
  private readonly lanes = new Map<number, Lane>();
  /** Deliveries whose job this instance holds (attempt in flight or waiting for a slot): the sweep leaves them. */
  private readonly held = new Set<number>();
  /**
   * How often each delivery was set aside, for queues whose jobs carry no count (embedded mode's
   * poller hands bare ids): without it a hanging receiver's backlog was set aside every `deferMs`,
   * and those writes crowded the embedded database. Bounded; forgotten when the attempt starts.
   */
  private readonly deferrals = new Map<number, number>();
  /** Null when every target is allowed: the sockets then resolve names as usual. */
  private readonly lookup: LookupFunction | null;
  /** Kept-alive connections to the endpoints; a socket is checked once, when it connects. */
  private readonly httpAgent = new http.Agent({ keepAlive: true });
  private readonly httpsAgent = new https.Agent({ keepAlive: true });

  constructor(opts: WebhookServiceOptions) {
    this.store = opts.store;
    this.queue = opts.queue;
    this.log = opts.logger.child({ module: 'webhooks' });
    // The feed runs every 250 ms (and on every wake): with the database away, a warning per run
    // flooded the log (probe O2: 91 lines in 22 s with no webhook configured).
    this.feedFailures = createRepeatedFailureLog(this.log, {
      message: 'queueing new webhook deliveries failed; the sweep queues them later',
      recovered: 'queueing new webhook deliveries works again',
      everyMs: opts.repeatedFailureLogMs,
    });
    this.sweepFailures = createRepeatedFailureLog(this.log, {
      message: 'sweeping overdue webhook deliveries failed',
      recovered: 'sweeping overdue webhook deliveries works again',
      everyMs: opts.repeatedFailureLogMs,
    });
    this.maxAttempts = opts.maxAttempts ?? 8;
    this.baseDelayMs = opts.baseDelayMs ?? 2000;
    this.maxDelayMs = opts.maxDelayMs ?? 600_000;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.now = opts.now ?? Date.now;
    this.sweepMs = opts.sweepMs ?? 30_000;
    this.sweepGraceMs = opts.sweepGraceMs ?? 60_000;
    this.feedMs = opts.feedMs ?? 250;
    this.onWebhooksChanged = opts.onWebhooksChanged ?? (() => undefined);
    this.allowPrivateTargets = opts.allowPrivateTargets ?? false;
    this.resolveHost = opts.resolveHost ?? systemResolveHost;
    this.ownAddresses = opts.ownAddresses ?? systemOwnAddresses;
    this.maxActive = opts.maxActive ?? 20;
    this.perWebhookInFlight = Math.max(1, opts.perWebhookInFlight ?? PER_WEBHOOK_IN_FLIGHT);
    this.perWebhookWaiting = Math.max(0, opts.perWebhookWaiting ?? PER_WEBHOOK_WAITING);
    this.deferMs = opts.deferMs ?? 1000;
    this.lookup = this.allowPrivateTargets ? null : guardedLookup(this.resolveHost, this.ownAddresses);
  }

  get queueKind(): DeliveryQueue['kind'] {
    return this.queue.kind;
  }

  async start(): Promise<void> {
    if (this.allowPrivateTargets) this.log.warn({ allowPrivateTargets: true }, 'webhook targets on loopback, private, link-local and other non-global addresses, and on this machine, are allowed (WEBHOOK_ALLOW_PRIVATE_TARGETS)');
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
        if (ids.length > 0) {
          // A job lost here (broker away, crash) stays a claimed pending row: the sweep queues it again.
          await Promise.all(ids.map((deliveryId) => this.queue.schedule({ deliveryId, attempt: 1 }, 0)));
        }
        if (ids.length < 500 || this.closed) break;
      }
      this.feedFailures.succeeded();
    } catch (err) {
      this.feedFailures.failed(err);
    }
  }

  /** Queues again deliveries whose attempt is long overdue (their job never reached the broker). */
  async sweep(): Promise<number> {
    try {
      // A job waiting here for its webhook's slot is late, not lost: queueing it again would only add an attempt.
      const ids = (await this.store.dueDeliveries(this.now() - this.sweepGraceMs, 500)).filter((id) => !this.held.has(id));
      for (const deliveryId of ids) await this.queue.schedule({ deliveryId, attempt: 0 }, 0);
      if (ids.length > 0) this.log.warn({ deliveries: ids.length }, 'overdue webhook deliveries queued again');
      this.sweepFailures.succeeded();
      return ids.length;
    } catch (err) {
      this.sweepFailures.failed(err);
      return 0;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.feedTimer) clearInterval(this.feedTimer);
    while (this.feeding) await this.feeding;
    // Jobs waiting for a busy webhook's slot are not attempted now (that could take timeoutMs per
    // round): they fail unacknowledged, so the queue hands them out again after the restart.
    for (const lane of this.lanes.values()) for (const w of lane.waiting.splice(0)) w.stop(new WorkerClosing('the webhook worker is closing; the job stays queued'));
    await this.queue.close();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
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
    if (!this.allowPrivateTargets) {
      try {
        await checkWebhookTarget(u, this.resolveHost, this.ownAddresses);
      } catch (err) {
        this.log.info({ host: hostOf(u), code: (err as EngineError).code, reason: (err as Error).message, createdBy: input.createdBy }, 'webhook target refused');
        throw err;
      }
    }
    // The bound is checked and the row inserted under one table lock, so concurrent registrations
    // (on any instance) cannot pass it together.
    const row = await this.store.createWebhook({ ...input, url: u.toString() }, this.maxActive);
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

  async deliveries(id: number, limit: number, filter: { status?: DeliveryStatus; before?: number } = {}) {
    await this.get(id);
    return this.store.listDeliveries(id, limit, filter);
  }

  /**
   * A job from the queue: waits for a slot of its webhook (at most `perWebhookInFlight` attempts
   * of one webhook at once here), or is set aside when `perWebhookWaiting` jobs of that webhook
   * wait already, so a receiver that hangs holds only its own share of the worker and never delays
   * the other webhooks' deliveries. Resolves once the outcome is recorded and the next step queued
   * (the queue acknowledges the job only then).
   */
  private async attempt(job: DeliveryJob): Promise<void> {
    this.held.add(job.deliveryId);
    try {
      await this.attemptInLane(job);
    } finally {
      this.held.delete(job.deliveryId);
    }
  }

  private async attemptInLane(job: DeliveryJob): Promise<void> {
    let d = await this.store.getDelivery(job.deliveryId);
    if (!d || d.status === 'delivered' || d.status === 'dead' || d.status === 'cancelled') return;
    const webhookId = d.webhookId;
    let lane = this.lanes.get(webhookId);
    if (lane === undefined) this.lanes.set(webhookId, (lane = { running: 0, waiting: [] }));
    if (lane.running >= this.perWebhookInFlight) {
      if (this.closed) throw new WorkerClosing('the webhook worker is closing; the job stays queued');
      if (lane.waiting.length >= this.perWebhookWaiting) {
        await this.defer(job);
        return;
      }
      const l = lane;
      // The finishing attempt hands its slot over (running stays counted).
      await new Promise<void>((go, stop) => l.waiting.push({ go, stop }));
      // Waited: the row may have moved on meanwhile (a duplicate job delivered it, its webhook deleted).
      d = await this.store.getDelivery(job.deliveryId).catch((err: unknown) => {
        this.release(webhookId);
        throw err;
      });
      if (!d || d.status === 'delivered' || d.status === 'dead' || d.status === 'cancelled') {
        this.release(webhookId);
        return;
      }
    } else lane.running++;
    this.deferrals.delete(job.deliveryId);
    try {
      await this.attemptNow(d);
    } finally {
      this.release(webhookId);
    }
  }

  /** A slot of this webhook is free: the oldest waiting job takes it, else the count drops. */
  private release(webhookId: number): void {
    const lane = this.lanes.get(webhookId);
    if (lane === undefined) return;
    const next = lane.waiting.shift();
    if (next !== undefined) {
      next.go();
      return;
    }
    lane.running--;
    if (lane.running <= 0) this.lanes.delete(webhookId);
  }

  /**
   * Sets a job aside for a pause: its row's next attempt moves on (so the sweep, or embedded mode's
   * poller, does not take it as overdue), then the job is queued again after the pause, with a
   * confirm in RabbitMQ mode, before this resolves and the queue acknowledges it. No attempt counts.
   */
  private async defer(job: DeliveryJob): Promise<void> {
    const n = Math.max(job.deferred ?? 0, this.deferrals.get(job.deliveryId) ?? 0);
    this.deferrals.delete(job.deliveryId);
    if (this.deferrals.size >= MAX_DEFERRALS_KEPT) this.deferrals.delete(this.deferrals.keys().next().value as number);
    this.deferrals.set(job.deliveryId, n + 1);
    const delay = Math.min(MAX_DEFER_MS, this.deferMs * 2 ** Math.min(n, 16));
    await this.store.deferDelivery(job.deliveryId, this.now() + delay);
    await this.queue.schedule({ deliveryId: job.deliveryId, attempt: job.attempt, deferred: n + 1 }, delay);
  }

  /** One attempt of a delivery: POST, record, then retry, dead-letter or done. */
  private async attemptNow(d: NonNullable<Awaited<ReturnType<NoticeStore['getDelivery']>>>): Promise<void> {
    // Its webhook was deleted after this attempt was scheduled (DELETE stops deliveries).
    if (!d.webhookActive) {
      await this.store.cancelDelivery(d.id);
      return;
    }
    const attempt = d.attempts + 1;
    const t = Math.floor(this.now() / 1000);
    const t0 = performance.now();
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      statusCode = await this.post(d.url, {
        'content-type': 'application/json',
        [TIMESTAMP_HEADER]: String(t),
        [SIGNATURE_HEADER]: signPayload(d.secret, t, d.body),
        [DELIVERY_HEADER]: String(d.id),
        [ATTEMPT_HEADER]: String(attempt),
        'user-agent': 'course-enrollment-engine-webhooks/1',
      }, d.body);
      if (statusCode < 200 || statusCode >= 300) error = `HTTP ${statusCode}`;
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      if ((err as { code?: unknown }).code === TARGET_FORBIDDEN) {
        this.log.warn({ deliveryId: d.id, webhookId: d.webhookId, attempt, error }, 'webhook delivery refused: its target is on an internal network');
      }
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

  /**
   * One POST; resolves with the answer's status once its headers arrive (redirects are not
   * followed: a 3xx is a failed attempt, so a redirect cannot lead past the target checks).
   * Unless every target is allowed, an address literal is checked before any connect, a name is
   * resolved through {@link guardedLookup} at connect, and the address the socket actually
   * connected to is checked again before the request is written (the check runs first among the
   * socket's `connect` listeners; the request's bytes wait for that event).
   */
  private post(url: string, headers: Record<string, string>, body: string): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        reject(new Error('url is not a valid absolute URL'));
        return;
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') {
        reject(new Error(`url must be http or https (got ${u.protocol})`));
        return;
      }
      const host = hostOf(u);
      const lookup = this.lookup;
      if (lookup && isIP(host) !== 0) {
        const refused = forbiddenTargetReason(host, this.ownAddresses);
        if (refused !== null) {
          reject(targetForbiddenError(refused));
          return;
        }
      }
      const timeoutMs = this.timeoutMs;
      const https_ = u.protocol === 'https:';
      const req = (https_ ? https : http).request(u, {
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        agent: https_ ? this.httpsAgent : this.httpAgent,
        ...(lookup ? { lookup } : {}),
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      timer.unref();
      const done = () => clearTimeout(timer);
      if (lookup) {
        req.on('socket', (socket: Socket) => {
          const check = () => {
            const address = socket.remoteAddress;
            const refused = address === undefined ? 'the connected address is unknown' : forbiddenTargetReason(address, this.ownAddresses);
            if (refused !== null) req.destroy(targetForbiddenError(`connected to ${refused}`));
          };
          // A kept-alive socket was checked when it connected; a new one is checked before the request's bytes go out.
          if (socket.connecting) socket.prependOnceListener('connect', check);
          else check();
        });
      }
      req.on('response', (res) => {
        resolve(res.statusCode ?? 0);
        // The body is not needed: read it away so the socket can serve the next delivery.
        res.on('error', () => undefined);
        res.on('end', done);
        res.on('close', done);
        res.resume();
      });
      req.on('error', (err) => {
        done();
        reject(err);
      });
      req.end(body);
    });
  }
}

function publicOf(w: WebhookRow): PublicWebhook {
  const { secret: _s, ...rest } = w;
  return rest;
}

export function createWebhookService(opts: WebhookServiceOptions): WebhookService {
  return new WebhookService(opts);
}
