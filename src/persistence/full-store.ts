import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
import { AmqpLog, notOwner, UnreadableMessageError, type LogMessage } from './amqp-log.js';
import { createBatcher, type Batcher } from './batcher.js';
import { createStateFolder } from './fold.js';
import { createGroupCommitter } from './group-commit.js';
import { setLogStall } from './metrics.js';
import { migrate } from './migrations.js';
import { createSqlNoticeStore } from './notice-store.js';
import { createPgClient } from './pg-client.js';
import { loadState, readTransitions } from './state-store.js';
import type { LoadedState, Persistence, ReadinessReport } from './types.js';

export interface FullStoreOptions {
  databaseUrl: string;
  rabbitmqUrl: string;
  /** Names the stream `<prefix>.events` and the dead-letter queue `<prefix>.dead`. */
  prefix: string;
  logger: Logger;
  batchMaxEvents: number;
  /** How long a group commit may wait for more appends before publishing (see createGroupCommitter). */
  groupCommitLingerMs?: number;
  /** Also run the batcher in this process. */
  runBatcher: boolean;
  /** First pause before the batcher retries a message it stopped at (tests shorten it). */
  batcherStallRetryMs?: number;
  /** Bound of events waiting for a broker confirm round; beyond it appends are shed (OVERLOADED). */
  maxQueuedEvents?: number;
}

export interface FullStore extends Persistence {
  readonly batcher: Batcher | null;
}

export function streamNames(prefix: string): { stream: string; dead: string } {
  return { stream: `${prefix}.events`, dead: `${prefix}.dead` };
}

/**
 * Full mode: an append is durable once RabbitMQ confirms it on the stream; the batcher writes it
 * to PostgreSQL later, in order, in batches. At start (and after a failed append) the state is the
 * database snapshot plus the stream's tail from the offset the database recorded, so a restart
 * with the batcher far behind is exact and immediate.
 */
export async function createFullStore(opts: FullStoreOptions): Promise<FullStore> {
  const log = opts.logger.child({ module: 'full-store' });
  const names = streamNames(opts.prefix);
  const db = createPgClient(opts.databaseUrl);
  const amqpLog = new AmqpLog({ url: opts.rabbitmqUrl, stream: names.stream, logger: opts.logger });
  const batcher = opts.runBatcher
    ? createBatcher({
        db,
        databaseUrl: opts.databaseUrl,
        amqpUrl: opts.rabbitmqUrl,
        stream: names.stream,
        deadLetterQueue: names.dead,
        logger: opts.logger,
        maxEvents: opts.batchMaxEvents,
        ...(opts.batcherStallRetryMs !== undefined ? { stallRetryMs: opts.batcherStallRetryMs } : {}),
      })
    : null;
  // Group commit on the broker too: the appends of one tick (and those that arrive while a
  // confirm is awaited) travel as one message, so a rush costs the broker a few large writes per
  // millisecond instead of one per request.
  const committer = createGroupCommitter((events) => amqpLog.publish({ events }), opts.batchMaxEvents, {
    lingerMs: opts.groupCommitLingerMs,
    maxQueuedEvents: opts.maxQueuedEvents,
  });
  /** Offset of an unreadable message the last replay stopped at (the engine cannot load past it). */
  let replayStall: number | null = null;
  /**
   * The broker connection on which the state was last loaded while owning the stream; appends are
   * accepted only on it. An engine that gains ownership later (the owner died) must reload first,
   * so it decides on everything the previous owner published.
   */
  let loadedOwnerEpoch: number | null = null;
  let loadedOnce = false;

  return {
    mode: 'full',
    notices: createSqlNoticeStore(db),
    batcher,
    async migrate() {
      const applied = await migrate(db);
      if (applied.length > 0) log.info({ applied }, 'migrations applied');
    },
    async load(): Promise<LoadedState> {
      const t0 = performance.now();
      await committer.drain();
      await amqpLog.connect();
      // Claim first: once held, the previous owner can publish nothing more, so the replay below
      // (read up to a marker published after the claim) holds everything it published.
      const owner = await amqpLog.claim();
      const epoch = amqpLog.connectionEpoch;
      if (!owner && loadedOnce) throw notOwner();
      loadedOwnerEpoch = null;
      // A consistent snapshot: the tables and the offset they correspond to, in one transaction.
      const { state, offset } = await db.transaction(async (tx) => {
        await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        const r = await tx.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [names.stream]);
        return { offset: r.rows[0] ? Number(r.rows[0].next_offset) : 0, state: await loadState(tx) };
      }).catch((err: unknown) => {
        throw new EngineError('UNAVAILABLE', 'the database is unreachable', { cause: (err as Error).message });
      });
      // Fold the tail as it arrives: memory stays bounded by the state, not by the stream's length.
      const folder = createStateFolder(state);
      let events = 0;
      let replayed: number;
      try {
        replayed = await amqpLog.readFrom(offset, (m: LogMessage) => {
          if (!('events' in m)) return;
          for (const e of m.events) folder.add(e);
          events += m.events.length;
        });
      } catch (err) {
        if (err instanceof UnreadableMessageError) {
          replayStall = err.offset;
          setLogStall(names.stream, 'replay', err.offset);
          // The batcher (in this process or another) stops at the same message and applies all
          // before it; an operator's skip moves the database's offset past it, and the next load
          // then starts after it.
          batcher?.start();
        }
        throw err;
      }
      if (replayStall !== null) {
        replayStall = null;
        setLogStall(names.stream, 'replay', null);
      }
      amqpLog.failedSince = null;
      committer.reset();
      loadedOnce = true;
      if (owner && amqpLog.owner && amqpLog.connectionEpoch === epoch) loadedOwnerEpoch = epoch;
      else log.error({ stream: names.stream }, 'state loaded for reads only: another engine owns the stream, writes are refused');
      const merged = folder.result();
      log.info({ offset, messages: replayed, events, ms: Math.round(performance.now() - t0) }, 'state loaded (database + stream tail)');
      batcher?.start();
      return merged;
    },
    append(events) {
      if (amqpLog.failedSince !== null) {
        return Promise.reject(new EngineError('UNAVAILABLE', 'the message broker was lost; the engine is recovering'));
      }
      if (!amqpLog.owner || loadedOwnerEpoch !== amqpLog.connectionEpoch) return Promise.reject(notOwner());
      return committer.append(events);
    },
    recentTransitions: (c, g, limit) =>
      readTransitions(db, c, g, limit).catch((err: unknown) => {
        throw new EngineError('UNAVAILABLE', 'the database is unreachable', { cause: (err as Error).message });
      }),
    async readiness(): Promise<ReadinessReport> {
      const checks: ReadinessReport['checks'] = {};
      // A stall recorded by whichever process runs the batcher (this one or `npm run batcher`).
      let stalled: { stream_offset: number; reason: string } | null = null;
      try {
        const r = await db.query<{ stream_offset: number; reason: string }>(
          'SELECT stream_offset, reason FROM log_stalls WHERE log_name = $1',
          [names.stream],
        );
        stalled = r.rows[0] ?? null;
        checks.database = { ok: true };
      } catch (err) {
        // /ready is public: a short reason there, the driver's message (hosts, users) in the log.
        log.warn({ err }, 'readiness: the database check failed');
        checks.database = { ok: false, detail: 'unreachable' };
      }
      checks.broker = amqpLog.connected ? { ok: true } : { ok: false, detail: 'not connected' };
      // A standby tries to take over here too; its next write then reloads before it is accepted.
      const owner = amqpLog.connected && (amqpLog.owner || (await amqpLog.claim().catch(() => false)));
      if (amqpLog.connected) {
        checks.owner = owner ? { ok: true } : { ok: false, detail: `another engine owns the stream ${names.stream}; writes are refused` };
      }
      if (batcher) checks.batcher = { ok: batcher.isLeader, detail: batcher.isLeader ? 'active' : 'standby' };
      if (stalled) {
        checks.log = { ok: false, detail: `batcher stopped at ${names.stream} offset ${Number(stalled.stream_offset)}: ${stalled.reason}` };
      }
      if (replayStall !== null) {
        checks.replay = { ok: false, detail: `replay stopped at ${names.stream} offset ${replayStall}: unreadable message` };
      }
      // Writes need the broker; the database may lag (the broker holds the events meanwhile), but
      // not stop: a log reader stopped at a message needs an operator.
      return { ready: amqpLog.connected && owner && !stalled && replayStall === null, checks };
    },
    async close() {
      await committer.drain();
      await batcher?.stop();
      await amqpLog.close();
      await db.close();
    },
  };
}
