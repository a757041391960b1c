import type { Logger } from 'pino';
import { createRepeatedFailureLog } from '../repeated-failure.js';
import type { Fence } from './amqp-log.js';
import type { SqlClient } from './sql-client.js';
import type { WriteRoute } from './types.js';

/**
 * Shard ownership as leases in PostgreSQL (docs/scale-out.md, section 2). Each shard has one row in
 * `shard_leases`: owner, address, epoch (the fencing token, +1 at every change of owner) and an
 * expiry by the database's clock. An owner renews its leases every ttl/5; its own deadline is the
 * monotonic time it *sent* the last successful renewal plus ttl minus a margin, which is always
 * before the database lets another instance take the row. Past that deadline the owner acknowledges
 * nothing for the shard. A new owner wins the row only once it has expired (or was released),
 * publishes a fence with the new epoch into the log, and is told to reload before it serves.
 */

export interface LeaseManagerOptions {
  db: SqlClient;
  logName: string;
  shards: number;
  instanceId: string;
  /** This instance's HTTP base URL, recorded with its leases so others can forward writes to it. */
  address: string;
  ttlMs: number;
  logger: Logger;
  /** Publishes a fence into the ordered log; resolves once the broker confirmed it. */
  publishFence(f: Fence): Promise<void>;
  /** Called after a shard was won and its fence published, or given up; the store reloads, then marks it loaded. */
  onChange(): void;
  /**
   * Cooperative rebalancing: called for a surplus shard once it no longer takes new writes (its
   * route says "elsewhere"), before its lease is released; resolves when the writes already
   * admitted for it are finished and answered, so none of them is refused or left in doubt.
   */
  drainShard?(shard: number): Promise<void>;
}

interface Owned {
  epoch: number;
  /** performance.now() after which nothing is acknowledged for the shard. */
  deadline: number;
}

interface RouteRow {
  owner: string | null;
  address: string | null;
  epoch: number;
  expired: boolean;
}

export interface LeaseManager {
  /**
   * Creates the shard rows and runs the first round. With `deferIfPeers`, an instance that finds a
   * live peer at this moment only reads the routes (no heartbeat, no lease) until {@link join}:
   * a peer forwards writes to a shard's owner at the address recorded with its lease, so an
   * instance must not own one before its server accepts connections (docs/scale-out.md, section 7).
   * Alone, it takes its leases at once: nobody routes to it, and the first load then needs no second.
   */
  start(opts?: { deferIfPeers?: boolean }): Promise<void>;
  /**
   * The server listens now: register the heartbeat and take a fair share from the next round on
   * (run at once). Idempotent; a no-op for a manager that joined at its start.
   */
  join(): void;
  /** False while a deferred start waits for {@link join}: this instance owns nothing and counts for no one's fair share. */
  readonly joined: boolean;
  /** True while this instance holds the shard's lease inside its own deadline. */
  canWrite(shard: number): boolean;
  /** Epoch of the shard's lease held by this instance, or null. */
  epochOf(shard: number): number | null;
  /** Shards held right now (shard -> epoch). */
  owned(): Map<number, number>;
  /** True when this instance holds every shard. */
  ownsAll(): boolean;
  route(shard: number): WriteRoute;
  /** Re-reads the lease table (routes) now. */
  refresh(): Promise<void>;
  /** Who owns the shard, from the last read of the table (for /ready). */
  ownerOf(shard: number): string | null;
  /** Stops acquiring, and releases every lease (graceful shutdown). Call after draining appends. */
  release(): Promise<void>;
  /** Stops acquiring (before draining). */
  stopAcquiring(): void;
  /**
   * Raises a held shard's epoch to at least `minEpoch` and publishes a fence for it: the log holds
   * a fence newer than the lease table (the database was restored from an older backup), and
   * messages under the lower epoch would be ignored by every reader.
   */
  raise(shard: number, minEpoch: number, why?: string): Promise<void>;
  // (the caller holds the state up to the old fence already: nothing else publishes for the shard)
  stop(): Promise<void>;
  /**
   * The lease round is overdue: its timer should have fired by now, but this process was too busy
   * to run it (a long synchronous stretch, e.g. the demo data being built at a first start), and no
   * round is running or known to fail. A lease whose own deadline passed meanwhile was not lost: it
   * was not renewed. True also while the round {@link renewed} started for it runs.
   */
  readonly behind: boolean;
  /**
   * Resolves true once every shard of `epochs` is held under its epoch within its own deadline,
   * false as soon as one is lost or its epoch changed, while the rounds fail (the database is away),
   * when no round is running or due, or after `waitMs`. An overdue round is run at once; a running one is waited for (within `waitMs`). Why a late confirm may then be acknowledged: a renewal that succeeds
   * (owner and epoch unchanged) proves no instance took the shard before it, and the deadline it sets
   * is still ahead, so a message confirmed before now was confirmed while the lease was this
   * instance's, with no newer fence before it in the log (a busy process is not a lost lease).
   */
  renewed(epochs: Readonly<Record<string, number>>, waitMs: number): Promise<boolean>;
  /** The last lease round failed (the database could not be reached): no lease can change hands now. */
  readonly roundFailing: boolean;
  readonly renewEveryMs: number;
  /** Live instances other than this one, at the last lease round. */
  readonly peers: number;
}

/** How long a dead instance's heartbeat row is kept (for whoever looks into the table after an incident). */
const DEAD_INSTANCE_KEPT = '1 hour';
const INSTANCE_SWEEP_EVERY_MS = 10 * 60_000;

export function createLeaseManager(opts: LeaseManagerOptions): LeaseManager {
  const log = opts.logger.child({ module: 'leases' });
  // A round runs every ttl/5 (a few hundred ms): while the database is away each one fails, and a
  // line per round flooded the log (probe O2: 45 lines in 22 s). Logged when it starts, every 15 s
  // while it lasts, and once when the rounds succeed again.
  const roundLog = createRepeatedFailureLog(log, {
    message: 'lease round failed (database unreachable?); leases are not renewed meanwhile',
    recovered: 'lease rounds succeed again; leases are renewed',
  });
  const ttl = opts.ttlMs;
  const margin = Math.max(250, Math.round(ttl * 0.2));
  const renewEveryMs = Math.max(100, Math.round(ttl / 5));
  const held = new Map<number, Owned>();
  /** A surplus shard being drained before its release (one at a time); still held and renewed. */
  let releasing: number | null = null;
  let releasingDone: Promise<void> | null = null;
  const routes = new Map<number, RouteRow>();
  /** Live instances (this one included) at the last read of the table. */
  let liveInstances = 1;
  let acquiring = true;
  /** Registered as a live instance (heartbeat) and taking leases; false while a deferred start waits for join(). */
  let joined = true;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let roundFailing = false;
  let ticking: Promise<void> | null = null;
  /** performance.now() at which the scheduled round is due. */
  let dueAt = 0;
  /**
   * The running round started late, by a round's interval or more (this process was too busy to
   * run its timer), or was started by catchUp(). A round held up by the database started on time.
   */
  let lateRound = false;
  const interval = `${ttl} milliseconds`;

  async function ensureRows(): Promise<void> {
    await opts.db.query(
      `INSERT INTO shard_leases (log_name, shard) SELECT $1, s FROM generate_series(0, $2::int - 1) AS s ON CONFLICT DO NOTHING`,
      [opts.logName, opts.shards],
    );
  }

  async function readRoutes(): Promise<number> {
    const r = await opts.db.query<{ shard: number; owner: string | null; address: string | null; epoch: number; expired: boolean; live: number }>(
      `SELECT shard, owner, address, epoch, (owner IS NULL OR expires_at < now()) AS expired,
              (SELECT count(*)::int FROM engine_instances WHERE log_name = $1 AND expires_at > now()) AS live
         FROM shard_leases WHERE log_name = $1 AND shard < $2`,
      [opts.logName, opts.shards],
    );
    let live = 1;
    for (const row of r.rows) {
      routes.set(Number(row.shard), { owner: row.owner, address: row.address, epoch: Number(row.epoch), expired: row.expired });
      // Before join() this instance has no heartbeat row: the count is its peers alone.
      live = Math.max(1, Number(row.live) + (joined ? 0 : 1));
    }
    liveInstances = live;
    return live;
  }

  /**
   * Every held lease renewed in one statement: one round trip however many shards. With a query
   * per shard, SHARDS=1024 queued 1,024 renewals on the lease pool's two connections, the round
   * failed (connection wait timed out) and a lone instance refused most writes NOT_OWNER (probe R).
   */
  async function renewAll(): Promise<void> {
    const owned = [...held];
    if (owned.length === 0) return;
    const t0 = performance.now();
    const r = await opts.db.query<{ shard: number }>(
      `UPDATE shard_leases l SET expires_at = now() + $4::interval, address = $3
         FROM unnest($5::int[], $6::bigint[]) AS h(shard, epoch)
        WHERE l.log_name = $1 AND l.owner = $2 AND l.shard = h.shard AND l.epoch = h.epoch
        RETURNING l.shard`,
      [opts.logName, opts.instanceId, opts.address, interval, owned.map(([shard]) => shard), owned.map(([, o]) => o.epoch)],
    );
    const renewed = new Set(r.rows.map((x) => Number(x.shard)));
    for (const [shard, o] of owned) {
      if (held.get(shard) !== o) continue; // released or lost meanwhile
      if (renewed.has(shard)) {
        o.deadline = t0 + ttl - margin;
        continue;
      }
      held.delete(shard);
      log.error({ shard, epoch: o.epoch }, 'lost the lease of a shard to another instance; its writes are refused here from now on');
      opts.onChange();
    }
  }

  /**
   * Takes the expired ones of `shards` in one statement, then publishes their fences (together:
   * one confirm round trip, not one per shard; a first start of SHARDS=1024 took 8-23 s with one
   * statement and one confirm after another, and with LEASE_TTL_MS=500 never became ready).
   */
  async function acquireAll(shards: number[]): Promise<void> {
    if (shards.length === 0) return;
    const t0 = performance.now();
    const r = await opts.db.query<{ shard: number; epoch: number }>(
      `UPDATE shard_leases SET owner = $3, address = $4, epoch = epoch + 1, expires_at = now() + $5::interval
        WHERE log_name = $1 AND shard = ANY($2::int[]) AND (owner IS NULL OR expires_at < now())
        RETURNING shard, epoch`,
      [opts.logName, shards, opts.instanceId, opts.address, interval],
    );
    await Promise.all(
      r.rows.map(async (row) => {
        const shard = Number(row.shard);
        const o: Owned = { epoch: Number(row.epoch), deadline: t0 + ttl - margin };
        held.set(shard, o);
        try {
          // The fence goes into the log before anything this owner publishes for the shard; the reload
          // that follows replays up to after it, so it holds everything the previous owner published.
          await opts.publishFence({ shard, epoch: o.epoch, owner: opts.instanceId });
        } catch (err) {
          // Without its fence the shard cannot be served: give it back at once.
          if (held.get(shard) === o) held.delete(shard);
          await opts.db
            .query(`UPDATE shard_leases SET owner = NULL, expires_at = now() WHERE log_name = $1 AND shard = $2 AND owner = $3 AND epoch = $4`, [
              opts.logName,
              shard,
              opts.instanceId,
              o.epoch,
            ])
            .catch(() => undefined);
          log.warn({ err, shard }, 'won a shard but could not publish its fence; released it');
          return;
        }
        log.info({ shard, epoch: o.epoch }, 'this instance owns the shard now (fence published)');
        opts.onChange();
      }),
    );
  }

  async function releaseOne(shard: number, o: Owned): Promise<void> {
    held.delete(shard);
    await opts.db.query(`UPDATE shard_leases SET owner = NULL, expires_at = now() WHERE log_name = $1 AND shard = $2 AND owner = $3 AND epoch = $4`, [
      opts.logName,
      shard,
      opts.instanceId,
      o.epoch,
    ]);
    log.info({ shard, epoch: o.epoch }, 'released the lease of a shard');
  }

  /** performance.now() of the last sweep of long-dead instances' heartbeat rows (0: never). */
  let sweptAt = 0;

  async function tick(): Promise<void> {
    // Not joined yet (its server does not listen): follow the routes, so writes it is asked to
    // forward go to the right owner, but neither register nor take a lease.
    if (!joined) {
      await readRoutes();
      return;
    }
    // Every start is a new instance id: without a sweep, each restart would leave a heartbeat row
    // behind for good (they count for nothing once expired, but the table would only grow).
    if (sweptAt === 0 || performance.now() - sweptAt > INSTANCE_SWEEP_EVERY_MS) {
      sweptAt = performance.now();
      await opts.db.query(`DELETE FROM engine_instances WHERE log_name = $1 AND expires_at < now() - $2::interval`, [opts.logName, DEAD_INSTANCE_KEPT]);
    }
    // The heartbeat lives as long as a lease and is written just before the renewals: a killed
    // instance stops counting for the fair share when its leases expire, so a survivor already at
    // its share takes the orphaned shard at once instead of a heartbeat later.
    // An instance that stopped acquiring (handing its shards over) no longer counts for anyone's
    // fair share: its row, deleted by release(), is not written again.
    if (acquiring) {
      await opts.db.query(
        `INSERT INTO engine_instances (log_name, instance, address, expires_at) VALUES ($1, $2, $3, now() + $4::interval)
         ON CONFLICT (log_name, instance) DO UPDATE SET expires_at = EXCLUDED.expires_at, address = EXCLUDED.address`,
        [opts.logName, opts.instanceId, opts.address, interval],
      );
    }
    await renewAll();
    const live = await readRoutes();
    if (!acquiring) return;
    const fair = Math.ceil(opts.shards / live);
    // Up to the fair share, in shard order; a shard another instance took meanwhile is passed over
    // and the next batch tries the following ones.
    const free = [...routes].filter(([shard, row]) => row.expired && !held.has(shard)).map(([shard]) => shard);
    while (held.size < fair && free.length > 0) await acquireAll(free.splice(0, fair - held.size));
    // Cooperative rebalancing: one surplus shard at a time, only while another instance has room.
    // It stops taking new writes at once (forwarders wait for its next owner), the writes already
    // admitted finish and are answered, then the lease is released; the renewals go on meanwhile.
    if ((held.size > fair || givesToStarved(live)) && live > 1 && releasing === null) {
      const [shard, o] = [...held].pop() as [number, Owned];
      releasing = shard;
      log.info({ shard, epoch: o.epoch, held: held.size, fair, live }, 'giving a surplus shard up to a newer instance (draining its writes first)');
      releasingDone = (async () => {
        try {
          await opts.drainShard?.(shard);
          if (held.get(shard) === o) await releaseOne(shard, o);
        } catch (err) {
          log.warn({ err, shard }, 'could not release a surplus shard; tried again at a later round');
        } finally {
          releasing = null;
          releasingDone = null;
          opts.onChange();
        }
      })();
    }
  }

  /**
   * Whether this instance gives a shard up to an instance below the lower fair share: with 6 shards
   * and 4 instances the upper share is 2, so three instances holding 2 each were all "within their
   * share" and a fourth that joined got none (probe M). When every shard is owned and some live
   * instance holds fewer than floor(shards / live), the instance holding the most (the smallest id
   * among equals: one giver per round, no thrashing) gives one up; the newcomer takes it.
   */
  function givesToStarved(live: number): boolean {
    const floorShare = Math.floor(opts.shards / live);
    if (floorShare === 0 || held.size <= floorShare) return false;
    const counts = new Map<string, number>();
    for (const row of routes.values()) {
      if (row.expired || row.owner === null) return false; // a free shard is there to take: no need to give one
      counts.set(row.owner, (counts.get(row.owner) ?? 0) + 1);
    }
    let atFloor = 0;
    for (const n of counts.values()) if (n >= floorShare) atFloor++;
    if (atFloor >= live) return false;
    let top: [string, number] | null = null;
    for (const [owner, n] of counts) if (top === null || n > top[1] || (n === top[1] && owner < top[0])) top = [owner, n];
    return top !== null && top[0] === opts.instanceId && top[1] > floorShare;
  }

  function runRound(late = performance.now() - dueAt >= renewEveryMs): void {
    timer = null;
    lateRound = late;
    ticking = tick()
      .then(() => {
        roundFailing = false;
        roundLog.succeeded();
      })
      .catch((err: unknown) => {
        roundFailing = true;
        roundLog.failed(err);
      })
      .finally(() => {
        ticking = null;
        lateRound = false;
        schedule();
      });
  }

  function schedule(delayMs = renewEveryMs): void {
    if (stopped) return;
    dueAt = performance.now() + delayMs;
    timer = setTimeout(runRound, delayMs);
    timer.unref();
  }

  function overdue(): boolean {
    return !stopped && joined && !roundFailing && ticking === null && timer !== null && performance.now() >= dueAt;
  }

  /**
   * Runs the overdue round now (see `behind`) and resolves once it has finished; a no-op otherwise.
   * The renewal inside it is the ordinary one (owner and epoch must still match), so a lease another
   * instance took meanwhile stays lost.
   */
  async function catchUp(): Promise<void> {
    if (ticking !== null) {
      if (lateRound) await ticking;
      return;
    }
    if (!overdue()) return;
    if (timer !== null) clearTimeout(timer);
    log.info({ overdueMs: Math.round(performance.now() - dueAt) }, 'lease round overdue (this process was busy): running it now');
    runRound(true);
    await ticking;
  }

  async function renewed(epochs: Readonly<Record<string, number>>, waitMs: number): Promise<boolean> {
    const until = performance.now() + waitMs;
    for (;;) {
      let within = true;
      for (const k in epochs) {
        const o = held.get(Number(k));
        if (o === undefined || o.epoch !== epochs[k]) return false;
        if (performance.now() >= o.deadline) within = false;
      }
      if (within) return true;
      const left = until - performance.now();
      if (stopped || roundFailing || left <= 0) return false;
      if (overdue() || (ticking !== null && lateRound)) await catchUp();
      else if (ticking !== null) {
        // A round is running (slowed by a loaded database): its renewal decides, within the wait.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([ticking, new Promise((r) => (timer = setTimeout(r, left)))]);
        clearTimeout(timer);
      }
      // No round running or due, yet the deadline passed (the last renewal answered too late, or
      // failed): nothing to wait for; the write is refused as before.
      else return false;
    }
  }

  return {
    renewed,
    get roundFailing() {
      return roundFailing;
    },
    renewEveryMs,
    get peers() {
      return Math.max(0, liveInstances - 1);
    },
    get joined() {
      return joined;
    },
    async start(o) {
      await ensureRows();
      if (o?.deferIfPeers) {
        const r = await opts.db.query<{ live: number }>(
          'SELECT count(*)::int AS live FROM engine_instances WHERE log_name = $1 AND instance <> $2 AND expires_at > now()',
          [opts.logName, opts.instanceId],
        );
        joined = Number(r.rows[0]?.live ?? 0) === 0;
        if (!joined) log.info({ peers: Number(r.rows[0]?.live) }, 'live peers found: no lease is taken before this instance listens (join)');
      }
      await tick();
      schedule();
    },
    get behind() {
      return overdue() || (ticking !== null && lateRound);
    },
    join() {
      if (joined) return;
      joined = true;
      log.info('listening: joining the lease rounds (heartbeat, fair share)');
      // The next round now rather than up to a round later; one already running is followed by
      // the next at its usual interval.
      if (timer !== null && ticking === null && !stopped) {
        clearTimeout(timer);
        schedule(0);
      }
    },
    canWrite(shard) {
      const o = held.get(shard);
      return o !== undefined && performance.now() < o.deadline;
    },
    epochOf(shard) {
      return held.get(shard)?.epoch ?? null;
    },
    owned() {
      return new Map([...held].map(([s, o]) => [s, o.epoch]));
    },
    ownsAll() {
      if (held.size < opts.shards) return false;
      return true;
    },
    route(shard) {
      if (shard === releasing) return { self: false, address: null };
      if (held.has(shard)) return { self: true };
      const r = routes.get(shard);
      return { self: false, address: r && !r.expired && r.owner !== opts.instanceId ? r.address : null };
    },
    async refresh() {
      await readRoutes();
    },
    ownerOf(shard) {
      const r = routes.get(shard);
      return r && !r.expired ? r.owner : null;
    },
    stopAcquiring() {
      acquiring = false;
    },
    async raise(shard, minEpoch, why = 'the log held a newer fence than the lease table') {
      const o = held.get(shard);
      if (!o) return;
      const r = await opts.db.query<{ epoch: number }>(
        `UPDATE shard_leases SET epoch = GREATEST(epoch + 1, $5) WHERE log_name = $1 AND shard = $2 AND owner = $3 AND epoch = $4 RETURNING epoch`,
        [opts.logName, shard, opts.instanceId, o.epoch, minEpoch],
      );
      const row = r.rows[0];
      if (!row) return;
      o.epoch = Number(row.epoch);
      await opts.publishFence({ shard, epoch: o.epoch, owner: opts.instanceId });
      log.warn({ shard, epoch: o.epoch }, `${why}: epoch raised and fenced again`);
    },
    async release() {
      acquiring = false;
      for (const [shard, o] of [...held]) await releaseOne(shard, o).catch((err: unknown) => log.warn({ err, shard }, 'could not release a lease; it expires by itself'));
      await opts.db.query('DELETE FROM engine_instances WHERE log_name = $1 AND instance = $2', [opts.logName, opts.instanceId]).catch(() => undefined);
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await ticking;
      await releasingDone;
    },
  };
}
