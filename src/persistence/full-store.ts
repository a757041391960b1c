import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { boundedStep } from '../bounded-step.js';
import { EngineError, outcomeUnknown } from '../errors.js';
import { createRepeatedFailureLog } from '../repeated-failure.js';
import { sharedBoundedCheck } from './bounded-check.js';
import { AmqpLog, createFenceFilter, notOwner, UnreadableMessageError, type FenceFilter, type LogMessage } from './amqp-log.js';
import { createBatcher, type Batcher, type BatcherOptions } from './batcher.js';
import { createStateFolder } from './fold.js';
import { createGroupCommitter } from './group-commit.js';
import { createLeaseManager } from './leases.js';
import { setLogStall } from './metrics.js';
import { migrate } from './migrations.js';
import { createSqlNoticeStore } from './notice-store.js';
import { createPgClient, DatabaseTimeoutError } from './pg-client.js';
import { createReadCopy } from './read-copy.js';
import { loadState, readFillHistory, readRequirements, readStudentTransitions, readTransitions } from './state-store.js';
import type { WebhookOutbox } from './webhook-outbox.js';
import { shardOfEvent, type ClusterMembership, type DomainEvent, type Loaded, type LoadOptions, type Persistence, type ReadinessReport, type WriteRoute } from './types.js';

export interface FullStoreOptions {
  databaseUrl: string;
  rabbitmqUrl: string;
  /** Names the stream `<prefix>.events` and the dead-letter queue `<prefix>.dead`. */
  prefix: string;
  logger: Logger;
  batchMaxEvents: number;
  /** How long the in-process batcher gathers messages before a write to PostgreSQL (default 10 ms). */
  batchLingerMs?: number;
  /** How long a group commit may wait for more appends before publishing (see createGroupCommitter). */
  groupCommitLingerMs?: number;
  /** A lingering group commit goes out once no append came for this long (see createGroupCommitter). */
  groupCommitQuietMs?: number;
  /** Whether anything more is on its way to a lingering group commit (see createGroupCommitter's `settled`). */
  groupCommitSettled?: (waiting: number) => boolean;
  /** Longest wait for a publish's confirm before the write is answered 503 and the connection made again (see AmqpLogOptions). */
  brokerConfirmTimeoutMs?: number;
  /**
   * Longest wait of a reload (after a failed write, a change of ownership) for a broker connection
   * (ms; default {@link DEFAULT_BROKER_RECONNECT_WAIT_MS}); past it the reload, and the write
   * waiting for it, is refused 503 while connecting goes on (see AmqpLog.connect). The first load
   * (start-up) waits for the attempt.
   */
  brokerReconnectWaitMs?: number;
  /**
   * Bound of each PostgreSQL statement of this store and its batcher (ms; DATABASE_QUERY_TIMEOUT_MS,
   * see createPgClient); unset: none. Migrations are never bounded.
   */
  databaseQueryTimeoutMs?: number;
  /** Also run the batcher in this process. */
  runBatcher: boolean;
  /** How that batcher is made (default: on this thread, `createBatcher`); main.ts puts it on a worker thread. */
  batcherFactory?: (o: BatcherOptions) => Batcher;
  /** First pause before the batcher retries a message it stopped at (tests shorten it). */
  batcherStallRetryMs?: number;
  /** Bound of events waiting for a broker confirm round; beyond it appends are shed (OVERLOADED). */
  maxQueuedEvents?: number;
  /** Number of shards (docs/scale-out.md); default 1. */
  shards?: number;
  /** Lease time to live (ms); default 2500. */
  leaseTtlMs?: number;
  /** This instance's HTTP base URL, recorded with its leases (for forwarding); default none. */
  address?: string;
  /** Writes for shards owned elsewhere are forwarded (readiness then does not need ownership). */
  forwarding?: boolean;
  /** The in-process batcher records webhook deliveries with each batch (issue 16). */
  outbox?: WebhookOutbox;
  /**
   * The server starts listening only after the first load (src/main.ts): with a live peer, that
   * load takes no lease, and `join()` (called once the server listens) starts taking them. Peers
   * forward writes to a shard's owner, so an instance owning one before it accepts connections had
   * them refused, retried and finally answered 503. Default false: leases taken in the first load.
   */
  joinWhenListening?: boolean;
  /**
   * Longest wait of `readiness()` for its database check (ms; default
   * {@link READINESS_CHECK_MS}): past it the check counts as failing, so `/ready` answers within
   * an orchestrator's probe timeout even when the database path drops packets.
   */
  readinessCheckMs?: number;
}

/**
 * Default bound of the readiness database check (ms): well under the 1 s an orchestrator's probe
 * waits by default, well over a healthy round trip to PostgreSQL.
 */
export const READINESS_CHECK_MS = 500;

export interface FullStore extends Persistence, ClusterMembership {
  readonly batcher: Batcher | null;
}

/**
 * How long a reload waits for a broker connection by default: a broker that answers connects
 * (handshake, confirm channel, queue check) in a few milliseconds, tens on a loaded machine; a
 * hung one holds the attempt until its 3 s timeout, and a write must not wait that out (SPEC 6:
 * "writes fail fast with 503 and a reason").
 */
export const DEFAULT_BROKER_RECONNECT_WAIT_MS = 250;

export function streamNames(prefix: string): { stream: string; dead: string } {
  return { stream: `${prefix}.events`, dead: `${prefix}.dead` };
}

/**
 * Full mode: an append is durable once RabbitMQ confirms it on the stream; the batcher writes it
 * to PostgreSQL later, in order, in batches. At start (and after a failed append) the state is the
 * database snapshot plus the stream's tail from the offset the database recorded, so a restart
 * with the batcher far behind is exact and immediate.
 */
/** A read of the database failed: storage is away, said the project's way (the driver's words as cause). */
function unreachable(err: unknown): never {
  throw new EngineError('UNAVAILABLE', 'the database is unreachable', { cause: (err as Error).message });
}

export async function createFullStore(opts: FullStoreOptions): Promise<FullStore> {
  const log = opts.logger.child({ module: 'full-store' });
  const names = streamNames(opts.prefix);
  // Every full store reads the log at load (the replay): its stall gauge has a 0 series from the
  // start, so a healthy instance reads 0 rather than "No data" on the dashboard and in alerts.
  setLogStall(names.stream, 'replay', null);
  const db = createPgClient(opts.databaseUrl, opts.databaseQueryTimeoutMs !== undefined ? { queryTimeoutMillis: opts.databaseQueryTimeoutMs } : {});
  const amqpLog = new AmqpLog({ url: opts.rabbitmqUrl, stream: names.stream, logger: opts.logger, confirmTimeoutMs: opts.brokerConfirmTimeoutMs });
  const batcher = opts.runBatcher
    ? (opts.batcherFactory ?? createBatcher)({
        db,
        databaseUrl: opts.databaseUrl,
        amqpUrl: opts.rabbitmqUrl,
        stream: names.stream,
        deadLetterQueue: names.dead,
        logger: opts.logger,
        maxEvents: opts.batchMaxEvents,
        ...(opts.batchLingerMs !== undefined ? { maxDelayMs: opts.batchLingerMs } : {}),
        ...(opts.batcherStallRetryMs !== undefined ? { stallRetryMs: opts.batcherStallRetryMs } : {}),
        ...(opts.databaseQueryTimeoutMs !== undefined ? { queryTimeoutMs: opts.databaseQueryTimeoutMs } : {}),
        ...(opts.outbox ? { outbox: opts.outbox } : {}),
      })
    : null;
  const shards = opts.shards ?? 1;
  const instanceId = randomUUID();
  const forwarding = opts.forwarding ?? false;
  const followers = new Set<(events: DomainEvent[]) => void>();
  const changeListeners = new Set<() => void>();
  // Its own small pool, so renewals never queue behind the batcher's transactions; a renewal
  // slower than the lease is of no use, so it is given up then.
  const leaseDb = createPgClient(opts.databaseUrl, {
    max: 2,
    connectionTimeoutMillis: Math.round((opts.leaseTtlMs ?? 2500) / 2),
    queryTimeoutMillis: Math.round((opts.leaseTtlMs ?? 2500) * 0.8),
  });
  // The readiness check's own connection: a probe never queues behind the batcher's transactions
  // or a load for a pooled connection, and a check that hangs on a dead path holds one connection
  // only. Its bounds let a hung check end by itself, so a database that is back is seen within
  // about two seconds (a caller is answered at the check bound long before).
  const readinessDb = createPgClient(opts.databaseUrl, { max: 1, connectionTimeoutMillis: 2000, queryTimeoutMillis: 2000 });
  const readinessCheckMs = opts.readinessCheckMs ?? READINESS_CHECK_MS;
  // Probes check every few seconds for as long as an outage lasts: logged when the checks start
  // failing, every 15 s while they do, and once when one passes again.
  const readinessFailures = createRepeatedFailureLog(log, { message: 'readiness: the database check failed', recovered: 'readiness: the database check passes again' });
  const databaseCheck = sharedBoundedCheck(async () => {
    try {
      const r = await readinessDb.query<{ stream_offset: number; reason: string }>('SELECT stream_offset, reason FROM log_stalls WHERE log_name = $1', [names.stream]);
      readinessFailures.succeeded();
      return r.rows[0] ?? null;
    } catch (err) {
      // Logged once per check, however many probes waited on it. /ready is public: a short reason
      // there, the driver's message (hosts, users) in the log.
      readinessFailures.failed(err);
      throw err;
    }
  }, readinessCheckMs);
  const leases = createLeaseManager({
    db: leaseDb,
    logName: names.stream,
    shards,
    instanceId,
    address: opts.address ?? '',
    ttlMs: opts.leaseTtlMs ?? 2500,
    logger: opts.logger,
    publishFence: (fence) => amqpLog.connect().then(() => amqpLog.publish({ fence })),
    onChange: () => {
      for (const l of changeListeners) l();
    },
    drainShard: async (shard) => {
      await admittedIdle(shard);
      await committer.drain();
      // Nothing more is published for it here; an append decided late is refused (NOT_OWNER).
      loadedEpochs.delete(shard);
    },
  });
  /** Writes let through for each shard this instance serves, until they are answered. */
  const admitted = new Map<number, number>();
  /** Set by a hand-over: every shard routes elsewhere from then on. */
  let handingOver = false;
  /** This instance decides writes of the shard: it holds the lease and loaded its state under it. */
  function decides(shard: number): boolean {
    const epoch = leases.epochOf(shard);
    return epoch !== null && loadedEpochs.get(shard) === epoch;
  }
  /** Resolves once no admitted write of `shard` (every shard when null) is still unanswered; bounded, for a stuck one. */
  async function admittedIdle(shard: number | null, timeoutMs = 15_000): Promise<void> {
    const until = performance.now() + timeoutMs;
    const busy = () => (shard === null ? admitted.size > 0 : admitted.has(shard));
    while (busy() && performance.now() < until) await new Promise((r) => setTimeout(r, 5));
    if (busy()) log.warn({ shard, admitted: Object.fromEntries(admitted) }, 'writes admitted for a shard being given up did not finish in time; going on');
  }
  function routeWrite(shard: number): WriteRoute {
    if (handingOver) {
      // Never here again; once another instance holds the shard, writes that still arrive here
      // are forwarded to it (and the shutdown knows the hand-over is complete).
      const r = leases.route(shard);
      return r.self ? { self: false, address: null } : r;
    }
    const r = leases.route(shard);
    // Won but not reloaded yet (fence published, replay running): nobody serves it for a moment;
    // forwarders wait and retry rather than have it decided on the state before the fence.
    if (r.self && !decides(shard)) return { self: false, address: null };
    return r;
  }
  /** Shard -> lease epoch under which the state was last loaded; appends need the same epoch. */
  let loadedEpochs = new Map<number, number>();
  let refusalLogged = false;
  /**
   * Offset of an unreadable message this instance's read copy stopped at (null: following). Until an
   * operator skips it, everything after it is missing here: this instance is not ready (its reads
   * would be stale), the gauge says where, and once the database's offset has moved past it (the
   * skip) the state is reloaded, which goes on past it (probe T: the copy stayed stopped after the
   * skip, /ready said 200 and reads were stale until a restart).
   */
  let readCopyStall: number | null = null;
  let skipWatch: NodeJS.Timeout | null = null;
  const watchForSkip = (at: number): void => {
    if (skipWatch !== null) return;
    skipWatch = setInterval(() => {
      void db
        .query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [names.stream])
        .then((r) => {
          if (readCopyStall !== at || Number(r.rows[0]?.next_offset ?? 0) <= at) return;
          log.warn({ stream: names.stream, offset: at }, 'the message the read copy stopped at was skipped by an operator: reloading past it');
          for (const l of changeListeners) l();
        })
        .catch(() => undefined);
    }, 1000);
    skipWatch.unref();
  };
  const clearReadCopyStall = (): void => {
    if (skipWatch !== null) clearInterval(skipWatch);
    skipWatch = null;
    if (readCopyStall === null) return;
    readCopyStall = null;
    setLogStall(names.stream, 'read-copy', null);
  };
  const readCopy = createReadCopy({
    amqpLog,
    logger: opts.logger,
    deliver: (events) => {
      for (const l of followers) l(events);
    },
    onStall: (at) => {
      readCopyStall = at;
      setLogStall(names.stream, 'read-copy', at);
      watchForSkip(at);
    },
  });
  /**
   * Shards of a set of events, with the epoch this instance holds each under and loaded its state
   * with; null when one is not. `withinDeadline` (every append, every batch): also null when a
   * shard's own lease deadline has passed; without it, a lease whose renewal is late still counts.
   */
  function heldEpochs(events: DomainEvent[], withinDeadline: boolean): Record<string, number> | null {
    const epochs: Record<string, number> = {};
    for (const e of events) {
      const shard = shardOfEvent(e, shards);
      if (epochs[shard] !== undefined) continue;
      const epoch = leases.epochOf(shard);
      if (epoch === null || loadedEpochs.get(shard) !== epoch || (withinDeadline && !leases.canWrite(shard))) return null;
      epochs[shard] = epoch;
    }
    return epochs;
  }
  const leaseCheck = (events: DomainEvent[]) => heldEpochs(events, true);
  /** Every shard of `epochs` still held under that epoch, within its own deadline. */
  function stillWithin(epochs: Record<string, number>): boolean {
    for (const k in epochs) if (!leases.canWrite(Number(k)) || leases.epochOf(Number(k)) !== epochs[k]) return false;
    return true;
  }
  /**
   * A shard held under its loaded epoch whose own deadline passed only because its renewal is late
   * (this process too busy to run the lease round on time: a long synchronous stretch such as the
   * demo data built at a first start, probe K finding 2; a machine so loaded that the round's
   * queries wait, probe Q finding 1) is not a lost lease: the write waits for the renewal (an overdue
   * round is run at once; a running one is waited for, at most a fifth of the lease), and one renewed
   * under the same epoch goes on. A lease another instance took stays lost, and while the rounds fail
   * (the database away) nothing waits.
   */
  const renewalWaitMs = Math.max(250, Math.round((opts.leaseTtlMs ?? 2500) / 5));
  // Group commit on the broker too: the appends of one tick (and those that arrive while a
  // confirm is awaited) travel as one message, so a rush costs the broker a few large writes per
  // millisecond instead of one per request. The message names the lease epochs it is published
  // under; a confirm that arrives after this instance's own lease deadline is never acknowledged
  // (readers may ignore that message after a newer fence).
  const committer = createGroupCommitter(
    async (events) => {
      let epochs = leaseCheck(events);
      // Batches go out one after another in call order, so waiting here for a late renewal keeps
      // every later append behind this one.
      if (epochs === null) {
        const held = heldEpochs(events, false);
        if (held !== null && (await leases.renewed(held, renewalWaitMs))) epochs = leaseCheck(events);
      }
      if (epochs === null) throw notOwner();
      await amqpLog.publish({ events, owner: instanceId, epochs });
      // A confirm that came after this instance's own deadline is acknowledged only once a renewal
      // under the same epochs proves no other instance took a shard meanwhile (leases.renewed); before
      // (probe Q, finding 1: 75 such writes answered "outcome unknown" on a loaded machine, all applied).
      // The usual case, the same epochs still within the deadline, is checked without a promise.
      if (!stillWithin(epochs) && !(await leases.renewed(epochs, renewalWaitMs))) {
        throw outcomeUnknown('the lease of this instance ran out before the broker confirmed the change');
      }
    },
    opts.batchMaxEvents,
    {
      lingerMs: opts.groupCommitLingerMs,
      quietMs: opts.groupCommitQuietMs,
      maxQueuedEvents: opts.maxQueuedEvents,
      ...(opts.groupCommitSettled ? { settled: opts.groupCommitSettled } : {}),
    },
  );
  /** The fence rule as the last load left it (with what the read copy saw since): a copy started later goes on from it. */
  let lastFences: ReturnType<typeof createFenceFilter> | null = null;
  /** Offset of an unreadable message the last replay stopped at (the engine cannot load past it). */
  let replayStall: number | null = null;
  /**
   * Where the read copy stopped when a load stopped it, with its fence rule as it stood there: the
   * engine's memory holds every admitted message before that offset. Kept until a load succeeds
   * (a failed one leaves the copy stopped, and the next load starts from the same place).
   */
  let followed: { offset: number; fences: FenceFilter } | null = null;
  let leasesStarted = false;
  /** Set once a load has succeeded: later loads are reloads, which writes wait for. */
  let served = false;

  return {
    mode: 'full',
    notices: createSqlNoticeStore(db),
    batcher,
    async migrate() {
      // On a connection of its own, without the statement bound: a migration may take long.
      const unbounded = createPgClient(opts.databaseUrl, { max: 1 });
      try {
        const applied = await migrate(unbounded, { log });
        if (applied.length > 0) log.info({ applied }, 'migrations applied');
      } finally {
        await unbounded.close();
      }
    },
    requirements: () => readRequirements(db),
    async load(options?: LoadOptions): Promise<Loaded> {
      const t0 = performance.now();
      // A publish whose confirm never came (timed out, or its connection lost before the confirm)
      // may still land in the stream later, from the connection given up, after changes decided
      // since with the same sequence numbers; readers keep the first of two (the batcher's ON
      // CONFLICT DO NOTHING), so an acknowledged change would be lost under one answered 503.
      const inDoubt = amqpLog.failedSince !== null;
      await committer.drain();
      // Once serving, a reload does not wait out a connect attempt to a broker that hangs: the write
      // waiting for it is refused now (503) and the attempt goes on in the background.
      await amqpLog.connect(served ? { waitMs: opts.brokerReconnectWaitMs ?? DEFAULT_BROKER_RECONNECT_WAIT_MS } : undefined);
      if (!leasesStarted) {
        await leases.start({ deferIfPeers: opts.joinWhenListening ?? false });
        leasesStarted = true;
      }
      const wasFollowing = readCopy.running;
      await readCopy.stop();
      if (wasFollowing && readCopy.position !== null && lastFences !== null) followed = { offset: readCopy.position, fences: lastFences };
      // So after such a failure every held shard takes a new epoch and publishes its fence before
      // the replay, as at a takeover: what of the old connection landed before the fence is in the
      // replay (and so in the state), and what lands after it is ignored by every reader. A shard
      // that could not be fenced (its lease lost meanwhile) is not served by this load.
      const unfenced = new Set<number>();
      if (inDoubt) {
        for (const [shard, epoch] of leases.owned()) {
          await leases.raise(shard, 0, 'a publish to the broker was never confirmed');
          if (leases.epochOf(shard) === epoch) unfenced.add(shard);
        }
      }
      // The shards held now: their fences are already in the log, so the replay below (read up to
      // a marker published after them) holds everything the previous owners published.
      const holding = new Map([...leases.owned()].filter(([shard]) => !unfenced.has(shard)));
      loadedEpochs = new Map();
      // A consistent snapshot: the tables, the offset and the fences they correspond to, in one transaction.
      const { state, offset, fenceRows } = await db.transaction(async (tx) => {
        await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        const r = await tx.query<{ next_offset: number }>('SELECT next_offset FROM log_offsets WHERE log_name = $1', [names.stream]);
        const f = await tx.query<{ shard: number; epoch: number }>('SELECT shard, epoch FROM log_fences WHERE log_name = $1', [names.stream]);
        return {
          offset: r.rows[0] ? Number(r.rows[0].next_offset) : 0,
          fenceRows: f.rows.map((x) => [Number(x.shard), Number(x.epoch)] as [number, number]),
          state: await loadState(tx),
        };
      }).catch((err: unknown) => {
        throw new EngineError('UNAVAILABLE', 'the database is unreachable', { cause: (err as Error).message });
      });
      // Fold the tail as it arrives: memory stays bounded by the state, not by the stream's length.
      const folder = createStateFolder(state);
      const fences = createFenceFilter(fenceRows);
      lastFences = fences;
      // A reload (several instances): the read copy stopped above may have been behind the
      // database (the batcher writes on its own; the copy's messages wait for this event loop).
      // What lies between is in the snapshot but not in the engine's memory, and the engine must
      // still be told of it: read from where the copy stopped, with the fence rule as it stood
      // there (a copy of it: a failed load leaves the next one the same starting point); the
      // snapshot already holds those messages, so folding them again changes nothing.
      const behind =
        options && followed !== null && followed.offset < offset ? { offset: followed.offset, fences: createFenceFilter(followed.fences.epochs) } : null;
      const from = behind ? behind.offset : offset;
      const newEvents: DomainEvent[] = [];
      let events = 0;
      let replayed: number;
      let ignored = 0;
      try {
        replayed = await amqpLog.readFrom(
          from,
          (m: LogMessage, at: number) => {
            if ('fence' in m) {
              // Fences before `offset` are in the snapshot's rows already: recording one again changes nothing.
              fences.fence(m.fence);
              behind?.fences.fence(m.fence);
              return;
            }
            if (!('events' in m)) return;
            const rule = behind !== null && at < offset ? behind.fences : fences;
            if (!rule.admits(m)) {
              ignored += 1;
              return;
            }
            for (const e of m.events) {
              folder.add(e);
              if (options?.isNew(e)) newEvents.push(e);
            }
            events += m.events.length;
          },
          // Before the snapshot's offset the batcher got past every message (an operator may have skipped one).
          { skipUnreadableBefore: offset },
        );
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
      // A load replays past (or stops at) whatever the read copy stopped at, and starts it again.
      clearReadCopyStall();
      amqpLog.failedSince = null;
      committer.reset();
      for (const [shard, epoch] of holding) {
        if (leases.epochOf(shard) !== epoch) continue;
        const fenced = fences.epochs.get(shard) ?? 0;
        if (fenced > epoch) {
          // Our messages would be ignored by every reader: take an epoch above the fence first
          // (the lease table is older than the log, e.g. a database restored from a backup).
          // Every message under the fence's epoch is in the state already (replayed above).
          await leases.raise(shard, fenced + 1).catch((err: unknown) => log.error({ err, shard }, 'could not raise the lease epoch above the log fence'));
          const raised = leases.epochOf(shard);
          if (raised !== null && raised > fenced) {
            fences.fence({ shard, epoch: raised, owner: instanceId });
            loadedEpochs.set(shard, raised);
          }
          continue;
        }
        loadedEpochs.set(shard, epoch);
      }
      if (loadedEpochs.size === 0 && !refusalLogged) {
        refusalLogged = true;
        // With forwarding this is how a second instance works (info); without, writes are refused (error).
        (forwarding ? log.info.bind(log) : log.error.bind(log))(
          { stream: names.stream, owner: leases.ownerOf(0) },
          forwarding
            ? `another engine owns the stream ${names.stream}: writes are forwarded to it, reads come from the read copy`
            : `another engine owns the stream ${names.stream}: this one refuses writes until that engine is gone`,
        );
      }
      if (loadedEpochs.size > 0) refusalLogged = false;
      // A read copy follows what other owners publish (nothing to follow when this one owns all).
      if (!leases.ownsAll() || loadedEpochs.size < shards) readCopy.start(offset, fences);
      // The state holds the log up to the replay's end: the next load starts from the copy again.
      followed = null;
      const merged: Loaded = folder.result();
      if (options) merged.newEvents = newEvents;
      log.info(
        {
          offset,
          ...(behind ? { from } : {}),
          messages: replayed,
          events,
          ignored,
          ...(options ? { newEvents: newEvents.length } : {}),
          owned: [...loadedEpochs.keys()],
          ms: Math.round(performance.now() - t0),
        },
        'state loaded (database + stream tail)',
      );
      batcher?.start();
      served = true;
      return merged;
    },
    append(events) {
      if (amqpLog.failedSince !== null) {
        return Promise.reject(new EngineError('UNAVAILABLE', 'the message broker was lost; the engine is recovering'));
      }
      // Not held (or not loaded under its epoch): refused now. Held with its renewal late: the committer waits for it.
      if (leaseCheck(events) === null && (heldEpochs(events, false) === null || leases.roundFailing)) return Promise.reject(notOwner());
      return committer.append(events);
    },
    shards,
    instanceId,
    get peers() {
      return leases.peers;
    },
    get storageUnreachable() {
      return leases.roundFailing;
    },
    routeWrite,
    admitWrite(shard, opts) {
      if (!routeWrite(shard).self) {
        // Draining (or not ours at all): only a write a draining home already holds is still taken,
        // and only while the shard's drain still waits for an admitted write (it then waits for
        // this one too; once none is left, nothing more gets in and the drain ends).
        if (!opts?.forDrainingHome || !admitted.has(shard) || !decides(shard) || !leases.canWrite(shard)) return null;
      }
      admitted.set(shard, (admitted.get(shard) ?? 0) + 1);
      let open = true;
      return () => {
        if (!open) return;
        open = false;
        const n = (admitted.get(shard) ?? 1) - 1;
        if (n <= 0) admitted.delete(shard);
        else admitted.set(shard, n);
      };
    },
    decides,
    refreshRoutes: () => leases.refresh(),
    join() {
      // Gained shards reload through onGained, like any takeover: fence first, then replay, then serve.
      if (leasesStarted) leases.join();
    },
    async syncReads(timeoutMs) {
      const until = performance.now() + timeoutMs;
      // A reload stops the copy and starts it again from the snapshot it loaded: wait for that, so
      // the marker below is read by the copy that serves the next decision.
      while (!readCopy.running && !leases.ownsAll() && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
      // No copy running: only an instance that owns every shard (and so made every change itself) is current.
      if (!readCopy.running) return leases.ownsAll();
      return readCopy.sync(Math.max(1, until - performance.now()));
    },
    follow(listener) {
      followers.add(listener);
    },
    onGained(listener) {
      changeListeners.add(listener);
    },
    async handOver() {
      leases.stopAcquiring();
      // New writes go elsewhere (forwarders wait for the next owner); those admitted already
      // finish and are answered; then nothing new is published under these leases.
      handingOver = true;
      await admittedIdle(null);
      await committer.drain();
      loadedEpochs = new Map();
      await committer.drain();
      // An instance that owned every shard has no read copy running (it made every change itself).
      // It keeps answering during its drain, relaying writes to the next owner, and its memory
      // must then follow what that owner publishes: a relayed 2xx waits for this copy, and the
      // client's next read here must show the change (SPEC). Everything this instance published
      // is confirmed by now and nothing more is, so the copy starts at the log's end, before the
      // release lets anyone publish the next fence. It keeps following until the store closes.
      if (!readCopy.running && lastFences !== null) {
        const fences = lastFences;
        await readCopy
          .startAtEnd(fences)
          .catch((err: unknown) => log.warn({ err }, "could not start the read copy for the hand-over; this instance's reads may lag the next owner until it stops"));
      }
      await leases.stop();
      await leases.release().catch((err: unknown) => log.warn({ err }, 'could not release the leases; they expire by themselves'));
    },
    recentTransitions: (c, g, limit, beforeSeq) => readTransitions(db, c, g, limit, beforeSeq).catch(unreachable),
    studentTransitions: (id, limit) => readStudentTransitions(db, id, limit).catch(unreachable),
    fillHistory: (opts) => readFillHistory(db, opts).catch(unreachable),
    async readiness(): Promise<ReadinessReport> {
      const checks: ReadinessReport['checks'] = {};
      // A stall recorded by whichever process runs the batcher (this one or `npm run batcher`).
      let stalled: { stream_offset: number; reason: string } | null = null;
      const database = await databaseCheck();
      if (database.kind === 'ok') {
        stalled = database.value;
        checks.database = { ok: true };
      } else {
        const silentMs = database.kind === 'late' ? database.ms : database.err instanceof DatabaseTimeoutError ? database.err.timeoutMs : null;
        checks.database = { ok: false, detail: silentMs !== null ? `no answer within ${silentMs} ms` : 'unreachable' };
      }
      // Connected is not enough: a broker that stopped answering without closing the connection
      // holds every write until the confirm timeout gives it up; past half of it, say so.
      const waiting = amqpLog.oldestUnconfirmedMs;
      const confirmWaitLimit = (opts.brokerConfirmTimeoutMs ?? 5000) / 2;
      checks.broker = !amqpLog.connected
        ? { ok: false, detail: 'not connected' }
        : waiting > confirmWaitLimit
          ? { ok: false, detail: `connected, but no confirm for ${Math.round(waiting)} ms (writes wait for it)` }
          : { ok: true };
      const ownsAll = loadedEpochs.size === shards && [...loadedEpochs.keys()].every((k) => leases.canWrite(k));
      // Each shard is served here (lease current, state loaded under it) or held by another
      // instance. The lease table naming this instance is not enough: with its lease run out (the
      // database away) or its reload failing, this instance serves nothing, and no one else may.
      const someOwner = [...Array(shards).keys()].every((k) => {
        const owner = leases.ownerOf(k);
        return (leases.canWrite(k) && decides(k)) || (owner !== null && owner !== instanceId);
      });
      const owner = ownsAll || (forwarding && someOwner);
      checks.owner = ownsAll
        ? { ok: true }
        : forwarding
          ? someOwner
            ? { ok: true, detail: 'writes for shards owned elsewhere are forwarded' }
            : { ok: false, detail: 'a shard has no owner right now (takeover in progress)' }
          : { ok: false, detail: `another engine owns the stream ${names.stream}; writes are refused` };
      if (batcher) {
        checks.batcher = batcher.isConsuming
          ? { ok: true, detail: 'active' }
          : batcher.isLeader
            ? stalled
              ? { ok: false, detail: `leading, but stopped at a message it cannot apply (see log): nothing after it is applied to the tables` }
              : { ok: false, detail: 'leading, but not reading the stream (the broker is away): nothing is applied to the tables' }
            : { ok: false, detail: 'standby' };
      }
      if (stalled) {
        checks.log = { ok: false, detail: `batcher stopped at ${names.stream} offset ${Number(stalled.stream_offset)}: ${stalled.reason}` };
      }
      if (replayStall !== null) {
        checks.replay = { ok: false, detail: `replay stopped at ${names.stream} offset ${replayStall}: unreadable message` };
      }
      // Writes need the broker; the database may lag (the broker holds the events meanwhile), but
      // not stop: a log reader stopped at a message needs an operator.
      if (readCopyStall !== null) {
        checks.readCopy = {
          ok: false,
          detail: `the read copy stopped at ${names.stream} offset ${readCopyStall}: unreadable message; reads here miss every change after it until it is skipped (npm run batcher -- --skip ${readCopyStall}; this instance then reloads past it)`,
        };
      }
      return { ready: checks.broker.ok && owner && !stalled && replayStall === null && readCopyStall === null, checks };
    },
    async close() {
      if (skipWatch !== null) clearInterval(skipWatch);
      // Everything acknowledged is in the stream already: a database or broker that stopped
      // answering must not hold the exit (an orchestrator kills the process at its own deadline,
      // and until then this instance neither serves nor hands over). Each step is bounded; what
      // it leaves undone the next engine or batcher does (a lease expires, the stream is applied).
      const bounded = (what: string, ms: number, step: () => Promise<unknown>) => boundedStep(log, what, ms, step);
      await committer.drain();
      await bounded('stopping the lease rounds', 2000, () => leases.stop());
      // Whatever is still held is given back, so a successor need not wait for it to expire.
      if (leasesStarted) await bounded('releasing the leases (they expire by themselves)', 2000, () => leases.release());
      await bounded('stopping the read copy', 2000, () => readCopy.stop());
      await batcher?.stop();
      await bounded('closing the broker connection', 2000, () => amqpLog.close());
      await bounded('closing the lease database pool', 1000, () => leaseDb.close());
      await bounded('closing the database pool', 1000, () => db.close());
      await bounded('closing the readiness connection', 1000, () => readinessDb.close());
    },
  };
}
