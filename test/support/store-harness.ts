import { after, before } from 'node:test';
import { pino } from 'pino';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { buildApp, type App } from '../../src/http/app.js';
import { isEngineError } from '../../src/errors.js';
import { TokenService } from '../../src/http/auth.js';
import { createEmbeddedStore } from '../../src/persistence/embedded-store.js';
import { createFullStore, streamNames } from '../../src/persistence/full-store.js';
import { createPgClient } from '../../src/persistence/pg-client.js';
import type { SqlClient } from '../../src/persistence/sql-client.js';
import { loadState } from '../../src/persistence/state-store.js';
import type {
  DomainEvent,
  FillPoint,
  LoadedState,
  Persistence,
  ReadinessReport,
  StudentTransitionRecord,
  TransitionRecord,
} from '../../src/persistence/types.js';
import { deleteQueues } from './amqp.js';
import { type Reply, type RequestOptions, SECRET, seedData, TTL_SECONDS, WINDOW_MS } from './http-fixture.js';
import { MemoryPersistence } from './memory-persistence.js';
import { createTestDatabase } from './pg.js';
import { normalize } from './scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './services.js';

/**
 * One test suite, every store: a factory per persistence mode that opens the store, runs the real
 * Engine over it (and the real Fastify app over the engine, driven with `app.inject`), restarts
 * the engine the way that mode allows, and reads back what the database holds.
 *
 * - memory: MemoryPersistence (the project's in-memory log), as the other engine tests use;
 * - embedded: createEmbeddedStore over an in-memory PGlite (the default mode's real store);
 * - embedded-worker: the same with PGlite on its own worker thread (PGLITE_THREAD=worker);
 * - full: createFullStore over a throw-away PostgreSQL database and a unique RabbitMQ stream,
 *   batcher in process. Skipped locally when a service is unreachable; fails under CI=true.
 *
 * Every append goes through a {@link RecordingPersistence}, which keeps the events in call order:
 * that is the order of the log in every mode (the group committer and the broker channel both keep
 * call order), so tests can see which request's transitions the log recorded first.
 */

export type ModeName = 'memory' | 'embedded' | 'embedded-worker' | 'full';

export const silentLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/** A Persistence that records every append, in call order, before passing it on. */
export class RecordingPersistence implements Persistence {
  readonly log: DomainEvent[] = [];

  constructor(public inner: Persistence) {}

  get mode(): Persistence['mode'] {
    return this.inner.mode;
  }

  migrate(): Promise<void> {
    return this.inner.migrate();
  }

  load(): Promise<LoadedState> {
    return this.inner.load();
  }

  append(events: DomainEvent[]): Promise<void> {
    this.log.push(...structuredClone(events));
    return this.inner.append(events);
  }

  recentTransitions(courseId: number, groupId: number, limit: number, beforeSeq?: number): Promise<TransitionRecord[]> {
    return this.inner.recentTransitions(courseId, groupId, limit, beforeSeq);
  }

  studentTransitions(studentId: number, limit: number): Promise<StudentTransitionRecord[]> {
    return this.inner.studentTransitions(studentId, limit);
  }

  fillHistory(opts: { buckets: number; section?: { courseId: number; groupId: number } }): Promise<FillPoint[]> {
    return this.inner.fillHistory(opts);
  }

  readiness(): Promise<ReadinessReport> {
    return this.inner.readiness();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface StoreHarness {
  readonly mode: ModeName;
  readonly store: RecordingPersistence;
  readonly clock: { now: number };
  /** The current engine; replaced by {@link restart}. */
  readonly engine: Engine;
  /** The app over the current engine, built on first use after each start. */
  app(): Promise<App>;
  token(id: number, role: 'student' | 'staff'): string;
  request(method: string, url: string, opts?: RequestOptions): Promise<Reply>;
  /**
   * Stops the engine and starts a new one over the same store, as a process restart does. With
   * `reopenStore` (full mode only: an in-memory PGlite would be gone) the store is closed and a new
   * one opened first.
   */
  restart(opts?: { reopenStore?: boolean }): Promise<void>;
  /** Whether {@link restart} can close and reopen the store itself. */
  readonly canReopenStore: boolean;
  /**
   * What the database holds (loadState). In full mode the batcher writes behind the engine, so
   * this polls until the database equals the engine's dumpState, returning the last read on timeout.
   */
  databaseState(timeoutMs?: number): Promise<LoadedState>;
  close(): Promise<void>;
}

export interface ModeFactory {
  readonly name: ModeName;
  /** A skip reason when the mode's services are unreachable (locally); throws under CI. */
  skip(): Promise<string | false>;
  open(opts: { now: number; memory?: () => MemoryPersistence }): Promise<StoreHarness>;
}

/**
 * For a suite run once per store: call inside its `describe`. Opens `mode` with the HTTP
 * fixture's seed data before the suite's tests and closes it after them; `skip` is the mode's skip
 * reason (pass it to each test), `harness()` the open store.
 */
export async function seededStore(mode: ModeFactory, now: number): Promise<{ skip: string | false; harness: () => StoreHarness }> {
  const skip = await mode.skip();
  let h: StoreHarness | null = null;
  before(async () => {
    if (skip) return;
    h = await mode.open({ now });
    await h.engine.importBatch(seedData(), { requestId: 'seed', actor: 'system' });
  });
  after(async () => {
    await h?.close();
  });
  return {
    skip,
    harness: () => {
      if (!h) throw new Error(`the ${mode.name} store is not open`);
      return h;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sends a JSON request through `app.inject` and parses the reply (as the HTTP fixture does). */
export async function inject(app: App, method: string, url: string, o: RequestOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token) headers['authorization'] = `Bearer ${o.token}`;
  let payload: string | undefined;
  if (o.rawBody !== undefined) payload = o.rawBody;
  else if (o.body !== undefined) payload = JSON.stringify(o.body);
  if (payload !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
  const res = await app.inject({ method: method as 'GET', url, headers, payload });
  let body: unknown = undefined;
  if (res.body.length > 0) {
    try {
      body = JSON.parse(res.body);
    } catch {
      body = res.body;
    }
  }
  return { status: res.statusCode, body, raw: res.body, headers: res.headers };
}

interface Backend {
  store: Persistence;
  /** Replaces the store with a fresh one over the same data (full mode). */
  reopen?: () => Promise<Persistence>;
  databaseState(expected: string, timeoutMs: number): Promise<LoadedState>;
  cleanup(): Promise<void>;
}

async function harness(mode: ModeName, now: number, backend: Backend): Promise<StoreHarness> {
  const clock = { now };
  const store = new RecordingPersistence(backend.store);
  // A first connection can time out right after a heavy suite (a CI run: pg's 2 s connect timer
  // fired while the previous store's work held the event loop); retried, as main.ts retries start.
  for (let attempt = 1; ; attempt++) {
    try {
      await store.migrate();
      break;
    } catch (err) {
      if (attempt >= 5 || !/connection|terminated|ECONNREFUSED|unreachable/i.test(String((err as Error).message))) throw err;
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
  const signer = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => clock.now });
  // As main.ts does: storage that is briefly unreachable at start (a loaded machine, a broker that
  // another suite just restarted) is retried a few times before the test fails.
  const start = async (): Promise<Engine> => {
    for (let attempt = 1; ; attempt++) {
      const e = createEngine({ persistence: store, logger: silentLogger, enrollmentWindowMs: WINDOW_MS, now: () => clock.now });
      try {
        await e.start();
        return e;
      } catch (err) {
        e.stop();
        if (attempt >= 5 || !isEngineError(err) || err.code !== 'UNAVAILABLE') throw err;
        await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
      }
    }
  };
  let engine = await start();
  let app: Promise<App> | null = null;
  const getApp = (): Promise<App> => {
    app ??= buildApp({
      engine,
      logger: silentLogger,
      jwtSecret: SECRET,
      tokenTtlSeconds: TTL_SECONDS,
      readiness: () => store.readiness(),
      now: () => clock.now,
    });
    return app;
  };
  const closeApp = async (): Promise<void> => {
    const a = app;
    app = null;
    if (a) await (await a).close();
  };
  return {
    mode,
    store,
    clock,
    get engine() {
      return engine;
    },
    app: getApp,
    token: (id, role) => signer.issue({ id, role }),
    async request(method, url, opts) {
      return inject(await getApp(), method, url, opts);
    },
    canReopenStore: backend.reopen !== undefined,
    async restart(opts = {}) {
      await closeApp();
      engine.stop();
      if (opts.reopenStore) {
        if (!backend.reopen) throw new Error(`the ${mode} store cannot be reopened`);
        await store.inner.close();
        store.inner = await backend.reopen();
      }
      engine = await start();
    },
    databaseState(timeoutMs = 20_000) {
      return backend.databaseState(JSON.stringify(normalize(engine.dumpState())), timeoutMs);
    },
    async close() {
      await closeApp();
      engine.stop();
      await store.inner.close();
      await backend.cleanup();
    },
  };
}

export const memoryMode: ModeFactory = {
  name: 'memory',
  skip: async () => false,
  async open({ now, memory }) {
    const store = memory ? memory() : new MemoryPersistence();
    return harness('memory', now, {
      store,
      databaseState: () => store.load(),
      cleanup: async () => undefined,
    });
  },
};

export const embeddedMode: ModeFactory = {
  name: 'embedded',
  skip: async () => false,
  async open({ now }) {
    const store = await createEmbeddedStore({ dataDir: null, logger: silentLogger, batchMaxEvents: 500 });
    return harness('embedded', now, {
      store,
      // The embedded store's load() is loadState over its PGlite, after the pending commits.
      databaseState: () => store.load(),
      cleanup: async () => undefined,
    });
  },
};

export const embeddedWorkerMode: ModeFactory = {
  name: 'embedded-worker',
  skip: async () => false,
  async open({ now }) {
    const store = await createEmbeddedStore({ dataDir: null, logger: silentLogger, batchMaxEvents: 500, thread: 'worker' });
    return harness('embedded-worker', now, {
      store,
      databaseState: () => store.load(),
      cleanup: () => store.close(),
    });
  },
};

export const fullMode: ModeFactory = {
  name: 'full',
  async skip() {
    return (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  },
  async open({ now }) {
    const tdb = await createTestDatabase();
    const prefix = uniqueName('enroll_model');
    const open = (): Promise<Persistence> =>
      // A long lease: these tests are about the store, not about leases, and a test process
      // starved of CPU for a few seconds (fast-check bursts on a loaded machine) would otherwise
      // miss its renewals and correctly refuse writes (test/cluster.test.ts covers that).
      createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger: silentLogger, batchMaxEvents: 500, runBatcher: true, leaseTtlMs: 30_000 });
    const db: SqlClient = createPgClient(tdb.url);
    const cleanup = async (): Promise<void> => {
      await db.close().catch(() => undefined);
      const n = streamNames(prefix);
      await deleteQueues([n.stream, n.dead]).catch(() => undefined);
      await tdb.drop();
    };
    let store: Persistence | null = null;
    try {
      store = await open();
      return await harness('full', now, {
        store,
        reopen: open,
        async databaseState(expected, timeoutMs) {
          const end = Date.now() + timeoutMs;
          for (;;) {
            const state = await loadState(db);
            if (JSON.stringify(normalize(state)) === expected || Date.now() > end) return state;
            await sleep(25);
          }
        },
        cleanup,
      });
    } catch (err) {
      await store?.close().catch(() => undefined);
      await cleanup().catch(() => undefined);
      throw err;
    }
  },
};
