import { randomUUID } from 'node:crypto';
import { publishConfirmSeconds } from './metrics.js';
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import { EngineError, outcomeUnknown } from '../errors.js';
import type { DomainEvent } from './types.js';

/**
 * The ordered log on RabbitMQ: one durable stream queue. A stream (unlike a classic queue) keeps
 * messages after they are consumed and can be read again from any offset, which is what lets the
 * engine restart at once with the batcher far behind: it loads the database and replays the
 * stream from the offset the batcher recorded there. Nothing waits for a queue to drain.
 *
 * Publishing uses publisher confirms, pipelined: every append is published at once and resolves
 * when the broker confirms it (RabbitMQ confirms many at a time), so no caller waits for another.
 *
 * Who may publish events for a shard is decided by leases in PostgreSQL (leases.ts), not here: an
 * events message carries its publisher and the epoch of each shard lease it was published under,
 * and a new owner publishes a fence marker; readers ignore a deposed owner's messages after it
 * (see {@link createFenceFilter} and docs/scale-out.md).
 */

/** A new owner's fence: from here on, messages for `shard` under an older epoch are ignored. */
export interface Fence {
  shard: number;
  epoch: number;
  owner: string;
}

/**
 * One message = the events of one group commit; `owner` and `epochs` (shard -> lease epoch) say
 * under which leases it was published (absent in messages written before issue 14). Markers only
 * delimit a replay; fences are described at {@link Fence}.
 */
export type LogMessage =
  | { events: DomainEvent[]; owner?: string; epochs?: Record<string, number> }
  | { marker: string }
  | { fence: Fence };

/**
 * The rule every reader of the log applies (replay, batcher, read copies): remember the highest
 * fence epoch per shard; an events message published under an older epoch of any of its shards
 * comes from a deposed owner after the fence and is ignored as a whole (its publisher answered
 * 503 for it: its confirm came after its own lease deadline).
 */
export interface FenceFilter {
  /** Records a fence; true when it raised the shard's epoch. */
  fence(f: Fence): boolean;
  /** True when the message must be applied. */
  admits(m: { epochs?: Record<string, number> }): boolean;
  /** Highest fence epoch per shard seen so far. */
  readonly epochs: ReadonlyMap<number, number>;
}

export function createFenceFilter(initial: Iterable<[number, number]> = []): FenceFilter {
  const epochs = new Map<number, number>(initial);
  return {
    fence(f) {
      if ((epochs.get(f.shard) ?? 0) >= f.epoch) return false;
      epochs.set(f.shard, f.epoch);
      return true;
    },
    admits(m) {
      if (!m.epochs || epochs.size === 0) return true;
      for (const k in m.epochs) {
        const fenced = epochs.get(Number(k));
        if (fenced !== undefined && (m.epochs[k] as number) < fenced) return false;
      }
      return true;
    },
    epochs,
  };
}

export interface AmqpLogOptions {
  url: string;
  stream: string;
  logger: Logger;
  /**
   * Longest wait for the broker's confirm of a publish (ms; default 5000). A broker that stops
   * answering without closing the connection (a stalled network path, a broker that blocks
   * publishers) would otherwise hold every write for as long as it lasts: past this, the write is
   * answered 503 (outcome unknown) and the connection is given up and made again.
   */
  confirmTimeoutMs?: number;
  /** Stream retention; must comfortably exceed how far the batcher can fall behind. */
  maxLengthBytes?: number;
}

/** Seconds between AMQP heartbeats when the URL names none: a silent broker is found out within about three. */
export const DEFAULT_HEARTBEAT_S = 5;

/**
 * The broker URL with a heartbeat unless it sets one. RabbitMQ's own default is 60 s, so a broker
 * path that stalls without closing went unnoticed for two minutes (and `/ready` said all was well).
 */
export function withHeartbeat(url: string, seconds = DEFAULT_HEARTBEAT_S): string {
  const u = new URL(url);
  if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', String(seconds));
  return u.toString();
}

/**
 * A prefetch count AMQP can carry: `basic.qos` holds it in 16 bits, and amqplib throws past 65,535
 * (probe R: BATCH_MAX_EVENTS of 32,768 or more left the batcher failing at every attempt, and
 * WEBHOOK_MAX_ACTIVE above 1,023 stopped full mode at start). Every consumer sets its prefetch through it.
 */
export function amqpPrefetch(wanted: number): number {
  return Math.min(65_535, wanted);
}

export function streamArguments(maxLengthBytes: number): Record<string, unknown> {
  return { 'x-queue-type': 'stream', 'x-max-length-bytes': maxLengthBytes, 'x-stream-max-segment-size-bytes': 100_000_000 };
}

export function encodeMessage(m: LogMessage): Buffer {
  return Buffer.from(JSON.stringify(m));
}

/** Parses a log message; throws when it is not one (what a reader must then stop at, never skip). */
export function decodeMessage(buf: Buffer): LogMessage {
  const m = JSON.parse(buf.toString('utf8')) as LogMessage;
  if (typeof m !== 'object' || m === null || (!('events' in m) && !('marker' in m) && !('fence' in m))) throw new Error('not a log message');
  if ('fence' in m) {
    const f = m.fence as Partial<Fence> | null;
    if (typeof f !== 'object' || f === null || !Number.isSafeInteger(f.shard) || !Number.isSafeInteger(f.epoch) || typeof f.owner !== 'string') {
      throw new Error('malformed fence');
    }
    return m;
  }
  if ('events' in m) {
    if (!Array.isArray(m.events)) throw new Error('events is not an array');
    for (const e of m.events as unknown[]) {
      const ev = e as { type?: unknown; seq?: unknown; cause?: unknown } | null;
      if (typeof ev !== 'object' || ev === null || typeof ev.type !== 'string' || !Number.isSafeInteger(ev.seq) || typeof ev.cause !== 'object' || ev.cause === null) {
        throw new Error('malformed event');
      }
    }
  }
  return m;
}

/** Thrown by a replay that reached a message it cannot read: the reader stops there, never skips it. */
export class UnreadableMessageError extends EngineError {
  constructor(
    readonly stream: string,
    readonly offset: number,
  ) {
    super('UNAVAILABLE', `the log cannot be replayed: unreadable message at ${stream} offset ${offset}`);
  }
}

export function offsetOf(msg: ConsumeMessage): number {
  const h = msg.properties.headers?.['x-stream-offset'];
  return typeof h === 'number' ? h : Number(h);
}

/** The refusal of a write by an engine that does not own the shard's lease (nothing was published). */
export function notOwner(): EngineError {
  return new EngineError(
    'NOT_OWNER',
    'this instance does not hold the write lease for this section (another instance owns it, or the lease lapsed while the database was unreachable); nothing was changed',
  );
}

export class AmqpLog {
  private conn: ChannelModel | null = null;
  private ch: ConfirmChannel | null = null;
  private connecting: Promise<void> | null = null;
  /** performance.now() when the attempt in `connecting` began. */
  private connectingSince = 0;
  private closing = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelay = 200;
  /**
   * Set when a publish may have been lost (its confirm never came: timed out, nacked, or its
   * connection closed before it); cleared by the owner after it reloaded its state. Not set by a
   * connection lost while every publish on it was confirmed: nothing is in doubt then.
   */
  failedSince: number | null = null;
  /** Publishes awaiting their confirm, per connection (an entry is removed at zero). */
  private readonly unconfirmed = new Map<ChannelModel, number>();
  /** performance.now() at which each publish awaiting its confirm went out (for readiness). */
  private readonly pendingSince = new Set<{ t0: number }>();
  /** Bumped on every new connection, so a load can tell it stayed on one. */
  connectionEpoch = 0;
  private readonly log: Logger;

  constructor(private readonly opts: AmqpLogOptions) {
    this.log = opts.logger.child({ module: 'amqp-log' });
  }

  get connected(): boolean {
    return this.ch !== null;
  }

  /**
   * How long the oldest publish still awaiting its confirm has waited (ms; 0 when none). A broker
   * that stopped answering without closing the connection shows here long before the confirm
   * timeout gives the connection up (probe Q: /ready said 200 for 5 s while every write hung).
   */
  get oldestUnconfirmedMs(): number {
    let oldest = Infinity;
    for (const p of this.pendingSince) if (p.t0 < oldest) oldest = p.t0;
    return oldest === Infinity ? 0 : performance.now() - oldest;
  }

  /**
   * Connects (or joins the attempt in progress); throws UNAVAILABLE when the broker is down.
   *
   * `waitMs` bounds the caller's wait, not the attempt: once the attempt is that old the caller is
   * refused UNAVAILABLE while the attempt goes on in the background (a later call joins it, and is
   * refused at once while it lasts). A write's reload passes it: a hung broker holds a connect
   * attempt for its whole 3 s timeout, and without a bound every write during such an outage
   * waited that long for its 503 instead of failing fast (probe M, finding 2); a broker that
   * answers connects in a few milliseconds, well within the bound.
   */
  async connect(opts?: { waitMs?: number }): Promise<void> {
    if (this.ch) return;
    if (!this.connecting) {
      const attempt = this.open().finally(() => {
        this.connecting = null;
      });
      // Whoever waits (or stopped waiting): a failed attempt is tried again later.
      attempt.catch(() => this.scheduleReconnect());
      this.connecting = attempt;
      this.connectingSince = performance.now();
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      if (opts?.waitMs === undefined) await this.connecting;
      else {
        const left = opts.waitMs - (performance.now() - this.connectingSince);
        const late = left <= 0 ? 'late' : await Promise.race([this.connecting, new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), left)))]);
        if (late === 'late') {
          throw new EngineError('UNAVAILABLE', 'the message broker is unreachable (reconnecting)', { cause: `no connection within ${opts.waitMs} ms` });
        }
      }
    } catch (err) {
      if (err instanceof EngineError) throw err;
      throw new EngineError('UNAVAILABLE', 'the message broker is unreachable', { cause: (err as Error).message });
    } finally {
      clearTimeout(timer);
    }
  }

  private async open(): Promise<void> {
    // noDelay: without it Nagle holds a publish's last frame until the broker's delayed ACK (~40 ms per
    // confirm round once messages exceed one segment); measured 45 ms -> 0.55 ms per round.
    const conn = await amqp.connect(withHeartbeat(this.opts.url), { timeout: 3000, noDelay: true });
    conn.on('error', (err: Error) => this.log.warn({ err }, 'broker connection error'));
    conn.on('close', () => this.lost(conn));
    try {
      const ch = await conn.createConfirmChannel();
      ch.on('error', (err: Error) => this.log.warn({ err }, 'broker channel error'));
      ch.on('close', () => this.lost(conn));
      await ch.assertQueue(this.opts.stream, { durable: true, arguments: streamArguments(this.opts.maxLengthBytes ?? 20e9) });
      // An attempt that outlived close() (a write stopped waiting for it, or a retry timer's) must
      // not leave a live connection behind: it would keep the process from exiting.
      if (this.closing) throw new Error('the log was closed while connecting');
      this.conn = conn;
      this.ch = ch;
      this.connectionEpoch += 1;
      this.retryDelay = 200;
      this.log.info({ stream: this.opts.stream }, 'connected to the broker');
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
  }

  private lost(conn: ChannelModel): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.ch = null;
    // Only a publish still unconfirmed on this connection may land in the stream later (amqplib
    // also fails those callbacks as the channel closes, which marks them by itself). A connection
    // lost while idle leaves nothing in doubt: the next write publishes on the new connection,
    // with no reload and no new epoch (before, every loss did, and that write was answered 503).
    if ((this.unconfirmed.get(conn) ?? 0) > 0) this.failedSince ??= Date.now();
    if (this.closing) return;
    this.log.warn('lost the broker; unconfirmed appends fail, reconnecting');
    conn.close().catch(() => undefined);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closing || this.retryTimer || this.ch) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, 5000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect().catch(() => undefined);
    }, delay);
    this.retryTimer.unref();
  }

  /** Publishes one message; resolves when the broker has confirmed it (written to the stream). */
  publish(m: LogMessage): Promise<void> {
    const ch = this.ch;
    if (!ch) {
      this.scheduleReconnect();
      return Promise.reject(new EngineError('UNAVAILABLE', 'the message broker is unreachable; nothing was changed'));
    }
    // Only events change state: a marker (read-copy catch-up, replay end) or a fence that lands late,
    // or never, changes no one's state, so its lost confirm puts nothing in doubt (before, it made
    // the owner's next write a 503 and a reload of everything on an instance with a read copy).
    const published = this.conn;
    const conn = 'events' in m ? published : null;
    const t0 = performance.now();
    const inDoubt = () => {
      if (conn !== null) this.failedSince ??= Date.now();
    };
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      if (conn !== null) this.unconfirmed.set(conn, (this.unconfirmed.get(conn) ?? 0) + 1);
      const pending = { t0 };
      this.pendingSince.add(pending);
      /** Marks this publish answered (once); it no longer counts as unconfirmed on its connection. */
      const settle = () => {
        settled = true;
        this.pendingSince.delete(pending);
        if (conn === null) return;
        const n = (this.unconfirmed.get(conn) ?? 1) - 1;
        if (n <= 0) this.unconfirmed.delete(conn);
        else this.unconfirmed.set(conn, n);
      };
      const timeoutMs = this.opts.confirmTimeoutMs ?? 5000;
      const timer = setTimeout(() => {
        if (settled) return;
        inDoubt();
        settle();
        reject(outcomeUnknown(`the broker did not confirm the change within ${timeoutMs} ms`));
        if (published !== null) this.giveUp(published, `no confirm from the broker within ${timeoutMs} ms`);
      }, timeoutMs);
      try {
        ch.publish('', this.opts.stream, encodeMessage(m), { persistent: true, contentType: 'application/json' }, (err) => {
          publishConfirmSeconds.observe((performance.now() - t0) / 1000);
          clearTimeout(timer);
          if (settled) return;
          if (err) inDoubt();
          settle();
          if (err) {
            // Nacked, or failed by amqplib as the channel closed: the message may be in the stream.
            reject(outcomeUnknown('the broker did not confirm the change', { cause: String(err) }));
          } else resolve();
        });
      } catch (err) {
        clearTimeout(timer);
        inDoubt();
        settle();
        reject(outcomeUnknown('the change could not be published', { cause: (err as Error).message }));
      }
    });
  }

  /**
   * Stops using a connection that no longer answers (it may never close by itself): later writes
   * fail at once instead of queueing behind it, and a new connection is made. Its socket is
   * destroyed, so whatever it still holds is released now rather than at the heartbeat's verdict.
   */
  private giveUp(conn: ChannelModel, reason: string): void {
    if (this.conn !== conn) return;
    this.log.warn({ reason }, 'giving up the broker connection; reconnecting');
    // amqplib keeps the socket as `connection.stream` (not in its typings).
    (conn.connection as unknown as { stream?: { destroy(): void } }).stream?.destroy();
    this.lost(conn);
  }

  /**
   * Reads every message from `offset` to the current end of the stream. The end is found by
   * publishing a marker first and reading until it comes back. An unreadable message stops the
   * read ({@link UnreadableMessageError}), except before `opts.skipUnreadableBefore`: those are
   * already in the database (the batcher got past them), and are skipped with a warning.
   */
  async readFrom(offset: number, onMessage: (m: LogMessage, offset: number) => void, opts?: { skipUnreadableBefore?: number }): Promise<number> {
    await this.connect();
    const marker = randomUUID();
    await this.publish({ marker });
    const conn = this.conn as ChannelModel;
    const rc = await conn.createChannel();
    let count = 0;
    let done = false;
    try {
      await rc.prefetch(2000);
      await new Promise<void>((resolve, reject) => {
        rc.on('close', () => reject(new EngineError('UNAVAILABLE', 'the broker closed the channel while replaying')));
        rc.consume(
          this.opts.stream,
          (msg) => {
            if (!msg || done) return;
            const at = offsetOf(msg);
            rc.ack(msg);
            if (at < offset) return; // delivered from the start of the chunk holding `offset`
            let m: LogMessage;
            try {
              m = decodeMessage(msg.content);
              if ('marker' in m) {
                if (m.marker === marker) {
                  done = true;
                  resolve();
                }
                return;
              }
              count += 1;
              onMessage(m, at);
            } catch (err) {
              if (opts?.skipUnreadableBefore !== undefined && at < opts.skipUnreadableBefore) {
                this.log.warn({ err, stream: this.opts.stream, offset: at }, `skipped an unreadable message at ${this.opts.stream} offset ${at} (the database is past it)`);
                return;
              }
              // Every message was acknowledged to a client: never skip one. The batcher stops at the
              // same offset; an operator moves past it (npm run batcher -- --skip <offset>).
              done = true;
              this.log.error({ err, stream: this.opts.stream, offset: at }, `replay stopped: unreadable message at ${this.opts.stream} offset ${at}`);
              reject(new UnreadableMessageError(this.opts.stream, at));
            }
          },
          { noAck: false, arguments: { 'x-stream-offset': offset } },
        ).catch(reject);
      });
    } finally {
      await rc.close().catch(() => undefined);
    }
    return count;
  }

  /**
   * Consumes the stream from `offset` on a channel of its own until `cancel()` or until the
   * connection drops (`closed` resolves then). `onMessage` gets each message in order, or an
   * {@link UnreadableMessageError} for one that cannot be read (the consumer stops there).
   */
  async consume(
    /** First offset delivered; `'next'`: only what is published after the consumer is registered (resolved). */
    offset: number | 'next',
    onMessage: (m: LogMessage | UnreadableMessageError, offset: number) => void,
  ): Promise<{ cancel(): Promise<void>; closed: Promise<void> }> {
    await this.connect();
    const conn = this.conn as ChannelModel;
    const rc = await conn.createChannel();
    rc.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => rc.on('close', () => resolve()));
    let stopped = false;
    await rc.prefetch(2000);
    await rc.consume(
      this.opts.stream,
      (msg) => {
        if (!msg || stopped) return;
        const at = offsetOf(msg);
        rc.ack(msg);
        if (typeof offset === 'number' && at < offset) return;
        let m: LogMessage;
        try {
          m = decodeMessage(msg.content);
        } catch {
          stopped = true;
          onMessage(new UnreadableMessageError(this.opts.stream, at), at);
          return;
        }
        onMessage(m, at);
      },
      { noAck: false, arguments: { 'x-stream-offset': offset } },
    );
    return {
      closed,
      async cancel() {
        stopped = true;
        await rc.close().catch(() => undefined);
      },
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const conn = this.conn;
    this.conn = null;
    this.ch = null;
    if (conn) await conn.close().catch(() => undefined);
  }
}
