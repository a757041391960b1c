import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import pg from 'pg';
import type { Logger } from 'pino';
import { amqpPrefetch, createFenceFilter, decodeMessage, offsetOf, streamArguments, withHeartbeat, type Fence, type FenceFilter } from './amqp-log.js';
import { setLogStall, watchBatcher, type BatcherLagSource } from './metrics.js';
import { PG_KEEPALIVE_IDLE_MS } from './pg-client.js';
import type { SqlClient } from './sql-client.js';
import { applyEventsWithOutbox, type StagedOutbox, type WebhookOutbox } from './webhook-outbox.js';
import type { DomainEvent } from './types.js';

/**
 * The batcher: reads the stream in order and writes it to PostgreSQL in batches (bounded by count
 * and time), one transaction per batch that applies the events and records the next offset, and
 * acknowledges only after COMMIT. Applying is idempotent, so a redelivery changes nothing.
 *
 * One batcher is active at a time: leadership is a PostgreSQL advisory lock held by a dedicated
 * session, so a standby takes over as soon as the leader's session ends. Correctness does not
 * even depend on the lock: each batch checks, under a row lock, that the recorded offset is where
 * it expects to start, and skips what the database has already (two batchers that both believe
 * they lead apply each event once; test/pg-blackhole.test.ts).
 *
 * A database that stops answering without closing the connection (a network path that drops
 * bytes: no reset, no FIN) must not hold a batch, or the lead, for ever. The batch's statements are
 * bounded by the pool's query timeout (`DATABASE_QUERY_TIMEOUT_MS`, see pg-client.ts: the stuck
 * connection is destroyed, the transaction never commits, the batch is retried on a new one). The
 * leader session is checked every `leaderCheckMs` under the same bound; a check that fails gives
 * the lead up (the session is destroyed, the consumer stops, nothing more is applied until the lock
 * is taken again), and the session asks the server to end it once it has been idle for longer than
 * a check round and two timeouts (`idle_session_timeout`), so a session whose end never reached
 * the server does not hold the lock for ever and a standby (or this batcher) takes over.
 *
 * A message that cannot be read or applied is never skipped: every message was acknowledged to a
 * client, so the batcher applies everything before it, then stops at its offset, records the stall
 * (table `log_stalls`, read by every engine's /ready; gauge `enrollment_log_stalled`; an error log
 * line naming stream and offset) and retries it with a growing pause, from the database's offset.
 * Only an operator moves past it (`npm run batcher -- --skip <offset>`, see log-skip.ts). A
 * database outage is not such a message: the batch is retried until the database is back.
 */
export interface BatcherOptions {
  db: SqlClient;
  databaseUrl: string;
  amqpUrl: string;
  stream: string;
  deadLetterQueue: string;
  logger: Logger;
  maxEvents: number;
  /**
   * Batches start at most this often (ms, default 10): a message that arrives when the last batch
   * started longer ago than that is written at once (reads of the tables stay fresh when the load
   * is light), otherwise it waits for the next start with everything that arrived meanwhile (few,
   * large transactions under a trickle of single requests).
   */
  maxDelayMs?: number;
  /** First pause before retrying a message it stopped at; doubles up to 30 s. Default 1000. */
  stallRetryMs?: number;
  /** Records webhook deliveries in each batch's transaction (issue 16). */
  outbox?: WebhookOutbox;
  /** On stop, how long it may keep applying what arrived before it stops (ms, default 3000). */
  stopFlushMs?: number;
  /**
   * Bound of the leader session's statements (ms, default 30000): the same value as the pool's
   * (`DATABASE_QUERY_TIMEOUT_MS`); the pool itself is bounded where it is made (createPgClient).
   */
  queryTimeoutMs?: number;
  /** How often the leader session is checked (ms, default half the query timeout, at most 5000). */
  leaderCheckMs?: number;
}

/** Where the batcher is stopped, and why. */
export interface BatcherStall {
  offset: number;
  reason: string;
}

export interface Batcher {
  start(): void;
  stop(): Promise<void>;
  /** Next stream offset the database has applied (for tests and metrics). */
  readonly appliedOffset: number;
  readonly isLeader: boolean;
  /**
   * Leads and reads the stream now: false while its broker connection is down (the lead is kept,
   * nothing is applied), so neither the leader gauge nor /ready says "active" then.
   */
  readonly isConsuming: boolean;
  /** Events applied since start. */
  readonly appliedEvents: number;
  /** The message it is stopped at, or null. */
  readonly stall: BatcherStall | null;
  /** Messages received and not yet applied (what the lag gauges show). */
  readonly lag: BatcherLagSource;
}

/** Thrown inside a flush when the lead was given up: the batch is left to whoever leads next. */
class LeadershipLost extends Error {
  constructor() {
    super('the leadership session was lost; the batch is left to the next leader');
  }
}

/** Thrown inside a flush when a message can be neither read nor applied: the batcher stops there. */
class StallError extends Error {
  constructor(
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`stopped at offset ${offset}: ${reason}`);
  }
}

interface Pending {
  msg: ConsumeMessage;
  offset: number;
  events: DomainEvent[] | null;
  error?: string;
  /** A new owner's fence: recorded in log_fences with the batch that holds it. */
  fence?: Fence;
  /** performance.now() when it arrived, for the lag gauge. */
  at: number;
}

const TRANSIENT_CLASSES = ['08', '53', '57', '58'];

function isTransient(err: unknown): boolean {
  // A bug or a malformed event, not an outage: retrying the same batch would fail the same way.
  if (err instanceof TypeError || err instanceof RangeError) return false;
  const code = (err as { code?: unknown })?.code;
  // A newer version's event (assertKnownEvent): only an upgrade of this process applies it.
  if (code === 'UNKNOWN_EVENT_TYPE') return false;
  if (typeof code !== 'string' || code.length !== 5) return true; // network errors have no SQLSTATE
  return TRANSIENT_CLASSES.includes(code.slice(0, 2)) || code === '40001' || code === '40P01';
}

const sleep = (ms: number, unref = false) =>
  new Promise((r) => {
    const t = setTimeout(r, ms);
    if (unref) t.unref();
  });
/** settle(): the stream counts as caught up once nothing arrived for this long. */
const SETTLE_QUIET_MS = 150;

export function createBatcher(opts: BatcherOptions): Batcher {
  const log = opts.logger.child({ module: 'batcher' });
  const maxDelay = opts.maxDelayMs ?? 10;
  /** performance.now() when the last batch started (see maxDelayMs). */
  let lastStart = -Infinity;
  let stopped = false;
  let leaderClient: pg.Client | null = null;
  let conn: ChannelModel | null = null;
  let ch: Channel | null = null;
  let buffer: Pending[] = [];
  /** The batch being applied now (received, not yet committed): part of the lag. */
  let inFlight: Pending[] = [];
  let flushing: Promise<void> | null = null;
  let timer: NodeJS.Timeout | null = null;
  let appliedOffset = -1;
  let appliedEvents = 0;
  let loop: Promise<void> | null = null;
  let wake: (() => void) | null = null;
  let stall: BatcherStall | null = null;
  /** Set when a flush failed: messages still arriving on the closing channel are ignored. */
  let halted = false;
  let stallRetries = 0;
  const stallRetryMs = opts.stallRetryMs ?? 1000;
  /** performance.now() when the last stream message arrived (settle() waits for a quiet moment). */
  let lastArrivalAt = 0;
  /** Another batcher holds the lead (its advisory lock): this one waits in standby. */
  let standby = false;
  const queryTimeoutMs = opts.queryTimeoutMs ?? 30_000;
  const leaderCheckMs = opts.leaderCheckMs ?? Math.max(100, Math.min(5000, Math.round(queryTimeoutMs / 2)));
  /** The server ends the leader session once no check reached it for this long (see the module comment). */
  const leaderIdleLimitMs = Math.min(leaderCheckMs + 2 * queryTimeoutMs, 2_147_483_647);
  let leaderCheckTimer: NodeJS.Timeout | null = null;
  let noIdleSessionTimeoutLogged = false;

  /** Gives the lead up: the session is destroyed (not ended politely: it may not answer) and the consumer stops. */
  function loseLeadership(c: pg.Client, why: string, err?: unknown): void {
    if (leaderClient !== c) return;
    leaderClient = null;
    if (leaderCheckTimer) clearTimeout(leaderCheckTimer);
    leaderCheckTimer = null;
    // A stop ends the session itself: nothing to report then.
    if (!stopped) log.warn({ err, stream: opts.stream }, why);
    // pg destroys the socket of a client with a statement in flight (the check that timed out).
    void c.end().catch(() => undefined);
    wake?.();
  }

  /** Every leaderCheckMs, a statement on the leader session; no answer within the timeout: the lead is given up. */
  function checkLeadership(c: pg.Client): void {
    leaderCheckTimer = setTimeout(() => {
      leaderCheckTimer = null;
      if (leaderClient !== c || stopped) return;
      c.query('SELECT 1').then(
        () => {
          if (leaderClient === c && !stopped) checkLeadership(c);
        },
        (err: unknown) => loseLeadership(c, 'the leadership session stopped answering; giving up the lead until it can be taken again', err),
      );
    }, leaderCheckMs);
    leaderCheckTimer.unref();
  }

  /** The fence epochs the database has recorded, so a deposed owner's later messages stay ignored across restarts. */
  async function readFences(): Promise<FenceFilter> {
    const r = await opts.db.query<{ shard: number; epoch: string | number }>('SELECT shard, epoch FROM log_fences WHERE log_name = $1', [opts.stream]);
    return createFenceFilter(r.rows.map((x) => [Number(x.shard), Number(x.epoch)]));
  }

  async function readOffset(): Promise<number> {
    const r = await opts.db.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [opts.stream]);
    return r.rows[0] ? Number(r.rows[0].next_offset) : 0;
  }

  async function acquireLeadership(): Promise<void> {
    while (!stopped) {
      try {
        const c = new pg.Client({
          connectionString: opts.databaseUrl,
          connectionTimeoutMillis: 2000,
          keepAlive: true,
          keepAliveInitialDelayMillis: PG_KEEPALIVE_IDLE_MS,
          query_timeout: queryTimeoutMs,
        });
        c.on('error', () => undefined);
        try {
          await c.connect();
          // Before the lock, so a session that is never checked again cannot hold it for ever.
          await c.query(`SET idle_session_timeout = ${leaderIdleLimitMs}`).catch((err: unknown) => {
            // PostgreSQL before 14: a dead session is ended only by the server's TCP keepalive.
            if ((err as { code?: string }).code !== '42704') throw err;
            if (!noIdleSessionTimeoutLogged) log.warn({ stream: opts.stream }, 'this PostgreSQL has no idle_session_timeout (before 14): a leader session cut off without a reset holds the lead until the server\'s TCP keepalive ends it');
            noIdleSessionTimeoutLogged = true;
          });
          const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [`batcher:${opts.stream}`]);
          standby = !r.rows[0]?.ok;
          if (r.rows[0]?.ok) {
            leaderClient = c;
            c.on('end', () => loseLeadership(c, 'lost the leadership session'));
            checkLeadership(c);
            log.info({ stream: opts.stream }, 'batcher is the active consumer');
            return;
          }
        } catch (err) {
          // Not awaited: a session that stopped answering never confirms an end (pg destroys the
          // socket of a client whose statement timed out).
          void c.end().catch(() => undefined);
          throw err;
        }
        // Not awaited: a session that stopped answering right now would never confirm its end.
        void c.end().catch(() => undefined);
      } catch (err) {
        log.warn({ err }, 'cannot reach the database for leadership; retrying');
      }
      await sleep(1000);
    }
  }

  /** Applies one batch (retrying while the database is away); returns when committed. */
  async function applyBatch(batch: Pending[]): Promise<void> {
    const first = (batch[0] as Pending).offset;
    const last = (batch[batch.length - 1] as Pending).offset;
    for (let attempt = 0; !stopped; attempt++) {
      // Given up (its session stopped answering): whoever leads next applies it from the database's offset.
      if (leaderClient === null) throw new LeadershipLost();
      try {
        let staged: StagedOutbox | null = null;
        const replaced: string[] = [];
        const n = await opts.db.transaction(async (tx) => {
          const r = await tx.query<{ next_offset: number }>(
            `INSERT INTO log_offsets (log_name, next_offset) VALUES ($1, 0)
             ON CONFLICT (log_name) DO UPDATE SET log_name = EXCLUDED.log_name
             RETURNING next_offset`,
            [opts.stream],
          );
          const dbNext = Number(r.rows[0]?.next_offset ?? 0);
          if (dbNext < first) throw Object.assign(new Error(`gap: database at ${dbNext}, batch starts at ${first}`), { code: 'GAP00' });
          let count = 0;
          const events: DomainEvent[] = [];
          for (const p of batch) if (p.offset >= dbNext && p.events) events.push(...p.events);
          replaced.length = 0; // a retried transaction starts again
          if (events.length > 0) ({ count, staged } = await applyEventsWithOutbox(tx, events, opts.outbox, replaced));
          for (const p of batch) {
            if (!p.fence || p.offset < dbNext) continue;
            await tx.query(
              `INSERT INTO log_fences (log_name, shard, epoch) VALUES ($1, $2, $3)
               ON CONFLICT (log_name, shard) DO UPDATE SET epoch = GREATEST(log_fences.epoch, EXCLUDED.epoch)`,
              [opts.stream, p.fence.shard, p.fence.epoch],
            );
          }
          await tx.query('UPDATE log_offsets SET next_offset = $2, updated_at = now() WHERE log_name = $1', [opts.stream, Math.max(dbNext, last + 1)]);
          return count;
        });
        (staged as StagedOutbox | null)?.commit();
        if (replaced.length > 0) {
          log.warn(
            { replaced: replaced.slice(0, 20), count: replaced.length },
            'created through the engine over rows already in the database that the engine did not know (inserted straight into the database while it ran): the acknowledged records were written over them',
          );
        }
        appliedOffset = last + 1;
        appliedEvents += n;
        if (stall && appliedOffset > stall.offset) await clearStall();
        return;
      } catch (err) {
        if ((err as { code?: string }).code === 'GAP00' || err instanceof StallError || err instanceof LeadershipLost) throw err;
        if (isTransient(err)) {
          const wait = Math.min(200 * 2 ** Math.min(attempt, 5), 5000);
          log.warn({ err, attempt, wait }, 'database unavailable; batch will be retried');
          await sleep(wait);
          continue;
        }
        if (batch.length === 1) {
          const e = err as { message?: string; code?: string };
          log.error({ err, stream: opts.stream, offset: first }, 'message cannot be applied; the batcher stops here');
          throw new StallError(first, `cannot be applied (${e.code ?? 'error'})`);
        }
        // Split to find the message that cannot be applied; everything before it goes through.
        const mid = Math.floor(batch.length / 2);
        await applyBatch(batch.slice(0, mid));
        await applyBatch(batch.slice(mid));
        return;
      }
    }
  }

  async function recordStall(next: BatcherStall): Promise<void> {
    const first = stall?.offset !== next.offset;
    stall = next;
    setLogStall(opts.stream, 'batcher', next.offset);
    // An event of a type this version does not know is an acknowledged change from a newer engine:
    // an upgrade applies it, a skip would lose it (probe T: the line suggested --skip for it too).
    const newer = next.reason.includes('UNKNOWN_EVENT_TYPE');
    log.error(
      { stream: opts.stream, offset: next.offset, reason: next.reason, retries: stallRetries },
      newer
        ? `batcher stopped at ${opts.stream} offset ${next.offset}: an event type this version does not know (written by a newer engine); retrying. Upgrade this batcher to the servers' version: it then applies the change. Do not skip it: it was acknowledged to a client`
        : `batcher stopped at ${opts.stream} offset ${next.offset}; retrying. To move past it (its change is lost; docs/operations.md): npm run batcher -- --skip ${next.offset}`,
    );
    if (!first) return;
    await opts.db
      .query(
        `INSERT INTO log_stalls (log_name, stream_offset, reason) VALUES ($1, $2, $3)
         ON CONFLICT (log_name) DO UPDATE SET stream_offset = EXCLUDED.stream_offset, reason = EXCLUDED.reason, since = now()`,
        [opts.stream, next.offset, next.reason],
      )
      .catch((err: unknown) => log.warn({ err }, 'could not record the stall in the database'));
  }

  async function clearStall(): Promise<void> {
    const was = stall;
    stall = null;
    stallRetries = 0;
    setLogStall(opts.stream, 'batcher', null);
    if (was) log.warn({ stream: opts.stream, offset: was.offset, appliedOffset }, 'batcher moved past the offset it was stopped at');
    await opts.db
      .query('DELETE FROM log_stalls WHERE log_name = $1', [opts.stream])
      .catch((err: unknown) => log.warn({ err }, 'could not clear the stall in the database'));
  }

  async function flush(): Promise<void> {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    while (buffer.length > 0 && !stopped) {
      const batch: Pending[] = [];
      let n = 0;
      // An unreadable message ends the batch: what precedes it is applied, then the batcher stops.
      let unreadable: Pending | null = null;
      while (buffer.length > 0 && n < opts.maxEvents) {
        const p = buffer[0] as Pending;
        if (p.events === null) {
          unreadable = p;
          break;
        }
        buffer.shift();
        batch.push(p);
        n += p.events.length;
      }
      if (batch.length === 0 && unreadable) {
        log.error({ stream: opts.stream, offset: unreadable.offset, reason: unreadable.error }, 'unreadable message; the batcher stops here');
        throw new StallError(unreadable.offset, 'unreadable message');
      }
      const t0 = performance.now();
      inFlight = batch;
      try {
        await applyBatch(batch);
      } finally {
        inFlight = [];
      }
      try {
        ch?.ack((batch[batch.length - 1] as Pending).msg, true);
      } catch {
        // The channel is gone; the next consumer restarts from the database's offset anyway.
      }
      log.debug({ messages: batch.length, events: n, ms: +(performance.now() - t0).toFixed(1) }, 'batch applied');
      // What arrived meanwhile waits for the next batch start (schedule()), unless it fills a batch.
      if (buffer.reduce((a, p) => a + (p.events?.length ?? 1), 0) < opts.maxEvents) break;
    }
  }

  /** Starts a flush of what is buffered now (the batch start schedule() waits for). */
  function startFlush(): void {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    lastStart = performance.now();
    flushing = flush()
      .catch(async (err) => {
        // Nothing after the failed message may be applied: drop what is buffered, stop consuming.
        halted = true;
        buffer = [];
        void ch?.close().catch(() => undefined);
        if (err instanceof StallError) await recordStall({ offset: err.offset, reason: err.reason });
        else if (err instanceof LeadershipLost) log.warn({ stream: opts.stream }, err.message);
        else log.error({ err }, 'batch failed; restarting the consumer from the database offset');
      })
      .finally(() => {
        flushing = null;
        if (buffer.length > 0) schedule();
      });
  }

  function schedule(): void {
    if (flushing) return;
    const events = buffer.reduce((a, p) => a + (p.events?.length ?? 0), 0);
    if (events >= opts.maxEvents) startFlush();
    else if (!timer) {
      // At most one batch start per maxDelay: a quiet batcher writes the first message at once.
      const wait = lastStart + maxDelay - performance.now();
      timer = setTimeout(() => {
        timer = null;
        startFlush();
      }, Math.max(0, wait));
    }
  }

  /**
   * Before a stop: applies what has arrived, and what keeps arriving until the stream has been quiet
   * for a moment, so that a cleanly stopped engine leaves the tables as current as the stream (an
   * operator's dump after stopping every engine holds every acknowledged change). Bounded: with the
   * database away the stop goes on, and the next batcher applies the rest from the stream.
   */
  async function settle(ms: number): Promise<void> {
    const started = performance.now();
    const end = started + ms;
    // Not started, stopped at a message, or another batcher holds the lead: nothing of ours to apply.
    while (loop !== null && !halted && !standby && performance.now() < end) {
      // Still connecting (a stop right after the start): wait for the consumer, within the bound.
      if (leaderClient !== null && ch !== null) {
        // Quiet since the stop began too: a change confirmed just before may still be on its way.
        if (buffer.length === 0 && !flushing && performance.now() - Math.max(lastArrivalAt, started) >= SETTLE_QUIET_MS) return;
        if (buffer.length > 0 && !flushing) startFlush();
      }
      await sleep(10);
    }
  }

  async function consumeOnce(): Promise<void> {
    conn = await amqp.connect(withHeartbeat(opts.amqpUrl), { timeout: 3000, noDelay: true });
    conn.on('error', (err: Error) => log.warn({ err }, 'broker connection error'));
    const c = await conn.createChannel();
    ch = c;
    await c.assertQueue(opts.stream, { durable: true, arguments: streamArguments(20e9) });
    await c.assertQueue(opts.deadLetterQueue, { durable: true });
    // Two batches' worth in flight.
    await c.prefetch(amqpPrefetch(Math.max(opts.maxEvents * 2, 1000)));
    const start = await readOffset();
    const fences = await readFences();
    appliedOffset = start;
    halted = false;
    // An operator moved the database's offset past the message (npm run batcher -- --skip).
    if (stall && start > stall.offset) await clearStall();
    log.info({ offset: start }, 'consuming the stream');
    const closed = new Promise<void>((resolve) => {
      c.on('close', () => resolve());
      c.on('error', () => undefined);
      wake = resolve;
      // Stopped, or the lead given up while this consumer was being set up.
      if (stopped || leaderClient === null) resolve();
    });
    await c.consume(
      opts.stream,
      (msg) => {
        if (!msg || halted) return;
        const offset = offsetOf(msg);
        // A stream may deliver from the start of the chunk holding `start`: what precedes it is done
        // (or was skipped by an operator) and must not be read again.
        if (offset < start) {
          c.ack(msg);
          return;
        }
        let events: DomainEvent[] | null = null;
        let error: string | undefined;
        let fence: Fence | undefined;
        try {
          const m = decodeMessage(msg.content);
          if ('fence' in m) {
            fence = m.fence;
            fences.fence(m.fence);
            events = [];
          } else if ('events' in m) {
            // A deposed owner's message after the new owner's fence: never acknowledged, not applied.
            if (fences.admits(m)) events = m.events;
            else {
              events = [];
              log.warn({ stream: opts.stream, offset, owner: m.owner, epochs: m.epochs }, 'ignored a message of a deposed owner (after a newer fence)');
            }
          } else events = [];
        } catch (err) {
          error = `unreadable message: ${(err as Error).message}`;
        }
        lastArrivalAt = performance.now();
        buffer.push({ msg, offset, events, at: lastArrivalAt, ...(error ? { error } : {}), ...(fence ? { fence } : {}) });
        schedule();
      },
      { noAck: false, arguments: { 'x-stream-offset': start } },
    );
    await closed;
    if (flushing) await flushing.catch(() => undefined);
    buffer = [];
    ch = null;
    await conn.close().catch(() => undefined);
    conn = null;
  }

  async function sleepUnlessStopped(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  async function run(): Promise<void> {
    while (!stopped) {
      if (!leaderClient) await acquireLeadership();
      if (stopped) break;
      try {
        await consumeOnce();
        if (stall && !stopped) {
          // Retry the message it stopped at, from the database's offset, with a growing pause.
          const wait = Math.min(stallRetryMs * 2 ** Math.min(stallRetries, 8), 30_000);
          stallRetries += 1;
          await sleepUnlessStopped(wait);
        }
      } catch (err) {
        log.warn({ err }, 'batcher consumer stopped; retrying');
        ch = null;
        if (conn) await conn.close().catch(() => undefined);
        conn = null;
        await sleep(500);
      }
    }
  }

  const lag: BatcherLagSource = {
    get lagMessages() {
      return inFlight.length + buffer.length;
    },
    get lagEvents() {
      let n = 0;
      for (const p of inFlight) n += p.events?.length ?? 0;
      for (const p of buffer) n += p.events?.length ?? 0;
      return n;
    },
    get lagSeconds() {
      const oldest = inFlight[0] ?? buffer[0];
      return oldest === undefined ? 0 : (performance.now() - oldest.at) / 1000;
    },
    get leader() {
      // Applying the stream: the lead, and a consumer on the broker.
      return leaderClient !== null && ch !== null && !stopped;
    },
  };
  const unwatch = watchBatcher(lag);
  // A 0 series from the start (not only after a first stall), so `max(enrollment_log_stalled)`
  // reads 0 while healthy instead of "No data", which looks like a broken scrape.
  setLogStall(opts.stream, 'batcher', null);

  return {
    start() {
      loop ??= run();
    },
    async stop() {
      await settle(opts.stopFlushMs ?? 3000);
      unwatch();
      stopped = true;
      if (leaderCheckTimer) clearTimeout(leaderCheckTimer);
      leaderCheckTimer = null;
      wake?.();
      // consumeOnce() sees the wake-up, waits for the batch in flight and closes its connection;
      // bounded, since a database or broker that stopped answering would hold either for ever
      // (everything unapplied is in the stream: the next batcher applies it).
      const bound = (p: Promise<unknown> | null | undefined, ms: number) =>
        Promise.race([(p ?? Promise.resolve()).catch(() => undefined), sleep(ms, true)]);
      await bound(loop, 3000);
      if (leaderClient) await bound(leaderClient.end(), 1000);
      leaderClient = null;
    },
    get appliedOffset() {
      return appliedOffset;
    },
    get isLeader() {
      return leaderClient !== null;
    },
    get isConsuming() {
      return leaderClient !== null && ch !== null && !stopped;
    },
    get appliedEvents() {
      return appliedEvents;
    },
    get stall() {
      return stall;
    },
    lag,
  };
}
