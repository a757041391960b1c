import type { Logger } from 'pino';
import { createGroupCommitter } from './group-commit.js';
import { setLogStall, watchBatcher } from './metrics.js';
import { migrate } from './migrations.js';
import { createSqlNoticeStore } from './notice-store.js';
import { createPgliteClient, type PgliteOptions } from './pglite-client.js';
import { createPgliteThreadClient, type PgliteThreadClient } from './pglite-thread.js';
import type { SqlClient } from './sql-client.js';
import { loadState, readFillHistory, readRequirements, readStudentTransitions, readTransitions } from './state-store.js';
import type { LoadedState, Persistence, ReadinessReport } from './types.js';
import { applyEventsWithOutbox, type StagedOutbox, type WebhookOutbox } from './webhook-outbox.js';

/** The `stream` label of the embedded log in `enrollment_log_stalled` (it has no broker stream name). */
export const EMBEDDED_LOG_STREAM = 'embedded';

/**
 * Embedded mode: PGlite files under the data directory, and the ordered log is in process. Each
 * group commit is one transaction that records the events and applies them to the tables, so the
 * tables are always current and a restart needs no replay.
 */
export async function createEmbeddedStore(opts: {
  dataDir: string | null;
  logger: Logger;
  batchMaxEvents: number;
  /** How long a group commit may wait for more appends (see createGroupCommitter). */
  groupCommitLingerMs?: number;
  /** A lingering group commit is written once no append came for this long (see createGroupCommitter). */
  groupCommitQuietMs?: number;
  /** Bound of events waiting for a group commit; beyond it appends are shed (OVERLOADED). */
  maxQueuedEvents?: number;
  /** PGlite's shared_buffers in MB (default in pglite-client.ts). */
  sharedBuffersMb?: number;
  /** Records webhook deliveries in each group commit's transaction (issue 16). */
  outbox?: WebhookOutbox;
  /**
   * Where PGlite runs: on the engine's thread (default), or on a worker thread of its own
   * (`PGLITE_THREAD=worker`), so the database's work does not block the event loop: faster under a
   * storm, for a second V8 isolate's memory. See pglite-thread.ts.
   */
  thread?: 'worker' | 'main';
}): Promise<Persistence> {
  const log = opts.logger.child({ module: 'embedded-store' });
  const dbOpts: PgliteOptions = {
    sharedBuffersMb: opts.sharedBuffersMb,
    onDataDir: (origin) => {
      if (origin.from === 'template') log.info({ dataDir: opts.dataDir, pglite: origin.pglite }, 'new PGlite data directory created from the shipped template');
      else if (origin.from === 'initdb') log.warn({ dataDir: opts.dataDir, reason: origin.reason }, 'the shipped PGlite template was not usable; the data directory was created by initdb instead');
    },
  };
  const threaded: PgliteThreadClient | null = opts.thread !== 'worker' ? null : await createPgliteThreadClient(opts.dataDir, dbOpts);
  const db: SqlClient = threaded ?? (await createPgliteClient(opts.dataDir, dbOpts));
  const outbox = opts.outbox;
  const committer = createGroupCommitter(async (events) => {
    const t0 = performance.now();
    let staged: StagedOutbox | null = null;
    if (threaded) {
      // On the worker: the whole transaction in one message (the outbox's step comes back here).
      await threaded.applyEvents(
        events,
        outbox
          ? async (tx, fresh) => {
              staged = await outbox.stage(tx, fresh);
            }
          : undefined,
      );
    } else {
      ({ staged } = await db.transaction((tx) => applyEventsWithOutbox(tx, events, outbox)));
    }
    (staged as StagedOutbox | null)?.commit();
    log.debug({ events: events.length, ms: +(performance.now() - t0).toFixed(1) }, 'group commit');
  }, opts.batchMaxEvents, {
    lingerMs: opts.groupCommitLingerMs,
    quietMs: opts.groupCommitQuietMs,
    maxQueuedEvents: opts.maxQueuedEvents,
  });

  // Embedded mode is its own batcher: each group commit applies its events to the tables in the
  // transaction that makes them durable. So it counts as the one batcher that writes the tables
  // (`enrollment_batcher_leader` 1; docs/operations.md), 0 once a write failed and until the next
  // reload, or once closed; and its log, which never stops at a message (a change that cannot be
  // applied is refused, not acknowledged), has a 0 stall series (`stream="embedded"`).
  let closed = false;
  const unwatch = watchBatcher({
    lagMessages: 0,
    lagEvents: 0,
    lagSeconds: 0,
    get leader() {
      return !closed && !committer.failed;
    },
  });
  setLogStall(EMBEDDED_LOG_STREAM, 'batcher', null);

  return {
    mode: 'embedded',
    notices: createSqlNoticeStore(db),
    async migrate() {
      const applied = await migrate(db, { log });
      if (applied.length > 0) log.info({ applied }, 'migrations applied');
    },
    requirements: () => readRequirements(db),
    async load(): Promise<LoadedState> {
      await committer.drain();
      const state = await loadState(db);
      committer.reset();
      return state;
    },
    append: (events) => committer.append(events),
    recentTransitions: (c, g, limit, beforeSeq) => readTransitions(db, c, g, limit, beforeSeq),
    studentTransitions: (id, limit) => readStudentTransitions(db, id, limit),
    fillHistory: (opts) => readFillHistory(db, opts),
    async readiness(): Promise<ReadinessReport> {
      try {
        await db.query('SELECT 1');
        return { ready: !committer.failed, checks: { database: { ok: true }, log: { ok: !committer.failed } } };
      } catch (err) {
        log.warn({ err }, 'readiness: the database check failed');
        return { ready: false, checks: { database: { ok: false, detail: 'unavailable' } } };
      }
    },
    async close() {
      await committer.drain();
      closed = true;
      unwatch();
      await db.close();
    },
  };
}
