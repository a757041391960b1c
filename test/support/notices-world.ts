import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { buildApp, type App } from '../../src/http/app.js';
import { TokenService } from '../../src/http/auth.js';
import { createNoticeHub, type NoticeHub, type NoticeHubOptions } from '../../src/notices/notice-hub.js';
import { createWebhookService, type WebhookService, type WebhookServiceOptions } from '../../src/notices/webhooks.js';
import { deriveWebhookNotices, eventMayNotify } from '../../src/notices/notices.js';
import type { DeliveryQueue } from '../../src/persistence/notice-types.js';
import { createWebhookOutbox, type WebhookOutbox } from '../../src/persistence/webhook-outbox.js';
import type { Persistence } from '../../src/persistence/types.js';
import { MINUTE, SECRET, seedData, T0, TTL_SECONDS, WINDOW_MS } from './http-fixture.js';

/**
 * A real engine over a real store (PGlite or PostgreSQL + RabbitMQ), with the notice hub, the
 * webhook service and the real app listening on a real port, for the notice tests: SSE through a
 * real socket, webhooks to a real local receiver.
 */

export const quietLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/**
 * The webhook outbox for a test store (as main.ts makes it); give `wake` to startNoticesWorld, which
 * points it at the world's webhook service, so recorded deliveries are queued at once.
 */
export function createTestOutbox(opts: { cacheWebhooks?: boolean } = {}): { outbox: WebhookOutbox; wake: { fn: (() => void) | null; outbox: WebhookOutbox } } {
  const wake: { fn: (() => void) | null; outbox: WebhookOutbox } = { fn: null, outbox: null as unknown as WebhookOutbox };
  wake.outbox = createWebhookOutbox({ deriver: deriveWebhookNotices, mayNotify: eventMayNotify, logger: quietLogger, onRecorded: () => wake.fn?.(), cacheWebhooks: opts.cacheWebhooks ?? false });
  return { outbox: wake.outbox, wake };
}

export interface NoticesWorld {
  engine: Engine;
  hub: NoticeHub;
  webhooks: WebhookService | null;
  app: App;
  base: string;
  clock: { now: number };
  token(id: number, role?: 'student' | 'staff'): string;
  /** Sends a JSON request over a real socket. Tests inspect arbitrary JSON; `any` keeps the assertions readable. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  call(method: string, path: string, token: string | null, body?: unknown): Promise<{ status: number; body: any }>;
  /** Stops app, webhooks, hub and engine; the store stays open (the caller closes it). */
  stop(): Promise<void>;
}

export async function startNoticesWorld(opts: {
  persistence: Persistence;
  seed: boolean;
  queue?: (p: Persistence) => Promise<DeliveryQueue> | DeliveryQueue;
  hub?: Partial<NoticeHubOptions>;
  webhooks?: Partial<WebhookServiceOptions>;
  clock?: { now: number };
  /** From {@link createTestOutbox}: bound to the world's webhook service. */
  outboxWake?: { fn: (() => void) | null; outbox: WebhookOutbox };
  /** Keep-alive period of the students' streams (ms). */
  streamKeepAliveMs?: number;
  /** What all streams together may hold queued for clients that do not read (bytes). */
  streamBacklogBudgetBytes?: number;
  /** Listen on this Unix socket instead of a loopback port (`base` is then empty: use `app.inject`). */
  socketPath?: string;
}): Promise<NoticesWorld> {
  const clock = opts.clock ?? { now: T0 + 5 * MINUTE };
  const engine = createEngine({ persistence: opts.persistence, logger: quietLogger, enrollmentWindowMs: WINDOW_MS, now: () => clock.now });
  await engine.start();
  if (opts.seed) await engine.importBatch(seedData(), { requestId: 'seed', actor: 'system' });
  const hub = createNoticeHub({ engine, store: opts.persistence.notices ?? null, logger: quietLogger, resumeWaitMs: opts.persistence.mode === 'full' ? 10_000 : 0, ...opts.hub });
  await hub.start();
  let webhooks: WebhookService | null = null;
  if (opts.queue && opts.persistence.notices) {
    const outbox = opts.outboxWake?.outbox;
    webhooks = createWebhookService({
      store: opts.persistence.notices,
      queue: await opts.queue(opts.persistence),
      logger: quietLogger,
      ...(outbox ? { onWebhooksChanged: () => outbox.webhooksChanged() } : {}),
      ...opts.webhooks,
    });
    await webhooks.start();
    const w = webhooks;
    hub.onWatchNotices(() => w.wake());
    if (opts.outboxWake) opts.outboxWake.fn = () => w.wake();
  }
  const app = await buildApp({
    engine,
    logger: quietLogger,
    jwtSecret: SECRET,
    tokenTtlSeconds: TTL_SECONDS,
    readiness: async () => ({ ready: true, checks: {} }),
    now: () => clock.now,
    adminStaffIds: [900],
    notices: { hub, webhooks },
    ...(opts.streamKeepAliveMs === undefined ? {} : { streamKeepAliveMs: opts.streamKeepAliveMs }),
    ...(opts.streamBacklogBudgetBytes === undefined ? {} : { streamBacklogBudgetBytes: opts.streamBacklogBudgetBytes }),
  });
  let base = '';
  if (opts.socketPath !== undefined) await app.listen({ path: opts.socketPath });
  else {
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  }
  const signer = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => clock.now });
  return {
    engine,
    hub,
    webhooks,
    app,
    base,
    clock,
    token: (id, role = 'student') => signer.issue({ id, role }),
    async call(method, path, token, body) {
      const res = await fetch(base + path, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text.length > 0 ? JSON.parse(text) : null;
      } catch {
        // not JSON
      }
      return { status: res.status, body: parsed };
    },
    async stop() {
      await app.close();
      await webhooks?.close();
      hub.stop();
      engine.stop();
    },
  };
}

export interface SseEvent {
  id?: string;
  event: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  data: any;
}

/** A real SSE client over node:http: collects events, lets a test wait for them. */
export interface SseClient {
  status: number;
  events: SseEvent[];
  /** Waits until `pred` holds for the events so far (or fails after `timeoutMs`). */
  waitFor(pred: (events: SseEvent[]) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  notices(): any[];
  close(): void;
  /** The body of a refusal (non-200). */
  body: string;
}

export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res: IncomingMessage) => {
      const events: SseEvent[] = [];
      let buf = '';
      let body = '';
      const waiters = new Set<() => void>();
      const client: SseClient = {
        status: res.statusCode ?? 0,
        events,
        body: '',
        waitFor(pred, timeoutMs = 15_000, what = 'events') {
          return new Promise((ok, fail) => {
            if (pred(events)) return ok();
            const check = () => {
              if (pred(events)) {
                waiters.delete(check);
                clearTimeout(t);
                ok();
              }
            };
            const t = setTimeout(() => {
              waiters.delete(check);
              fail(new Error(`timed out waiting for ${what}; got ${JSON.stringify(events)}`));
            }, timeoutMs);
            waiters.add(check);
          });
        },
        notices: () => events.filter((e) => e.event === 'notice').map((e) => e.data),
        close: () => {
          req.destroy();
        },
      };
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          client.body = body;
          resolve(client);
        });
        return;
      }
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const e: SseEvent = { event: 'message', data: null };
          let data = '';
          let any = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const k = line.indexOf(':');
            const field = k < 0 ? line : line.slice(0, k);
            const value = k < 0 ? '' : line.slice(k + 1).replace(/^ /, '');
            if (field === 'id') e.id = value;
            else if (field === 'event') e.event = value;
            else if (field === 'data') {
              data += value;
              any = true;
            }
          }
          if (!any) continue;
          e.data = JSON.parse(data);
          events.push(e);
        }
        for (const w of [...waiters]) w();
      });
      res.on('error', () => undefined);
      resolve(client);
    });
    req.on('error', reject);
  });
}
