import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Batcher, BatcherOptions, BatcherStall } from './batcher.js';
import { setLogStall, watchBatcher, type BatcherLagSource } from './metrics.js';
import { loaderExecArgv } from './pglite-client.js';

/**
 * Full mode's batcher on a worker thread of its own. On the server's thread the batcher's work
 * (decoding each stream message, building and sending each batch's statements, its garbage) runs
 * on the event loop every request waits for; on its own thread it runs beside it, on the second
 * core. Interleaved against the server's thread: the storm 7 % faster, `steady` 5 % more requests
 * per second, for 45-60 MB more RSS (bench/README.md, eighth session). A worker thread rather than
 * the separate `npm run batcher` process keeps one process: one thing to start, stop and kill.
 *
 * The worker runs the very same batcher (src/persistence/batcher.ts) with its own PostgreSQL pool
 * and broker connection; this side mirrors what the server reads of it (leadership for `/ready`,
 * the stall and lag for `/metrics`), passes start and stop on, and wakes the webhook sender when a
 * batch recorded deliveries. A worker that dies is started again after a second; the batcher
 * resumes from the offset the database recorded, as after any restart.
 */

/** What the worker is started with: plain data (structured clone). */
export interface BatcherWorkerData {
  databaseUrl: string;
  amqpUrl: string;
  stream: string;
  deadLetterQueue: string;
  maxEvents: number;
  maxDelayMs?: number;
  stallRetryMs?: number;
  /** Bound of each PostgreSQL statement of the worker's pool and leader session (ms; DATABASE_QUERY_TIMEOUT_MS). */
  queryTimeoutMs?: number;
  logLevel: string;
}

/** The worker's reports to the server's thread. */
export type BatcherWorkerReport =
  | {
      type: 'state';
      isLeader: boolean;
      isConsuming: boolean;
      appliedOffset: number;
      appliedEvents: number;
      stall: BatcherStall | null;
      lagMessages: number;
      lagEvents: number;
      /** Unix ms when the oldest unapplied message arrived, or null when none is waiting. */
      oldestAt: number | null;
    }
  | { type: 'recorded' }
  | { type: 'stopped' };

/** The server's commands to the worker. */
export type BatcherWorkerCommand = { type: 'start' } | { type: 'stop' };

export interface BatcherThreadOptions {
  /** The worker's module without its extension (`.js` compiled, `.ts` from source through tsx). */
  entry: string;
  data: BatcherWorkerData;
  logger: Logger;
  /** A batch recorded webhook deliveries (the worker's outbox did): wake the sender. */
  onRecorded?: () => void;
  /** Pause before a worker that died is started again (ms, default 1000). */
  restartMs?: number;
  /** Longest wait for the worker to stop before it is terminated (ms, default 10000): its batcher stops within 7 s, and the stream keeps whatever it leaves unapplied. */
  stopTimeoutMs?: number;
}

const fromSource = import.meta.url.endsWith('.ts');

function spawn(entry: string, data: BatcherWorkerData): Worker {
  // Node 20's worker threads do not inherit `--import tsx`: from source the loader is registered first.
  if (!fromSource) return new Worker(`${entry}.js`, { workerData: data, execArgv: loaderExecArgv(false) });
  const script = pathToFileURL(`${entry}.ts`).href;
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(script)}); })`;
  return new Worker(boot, { eval: true, workerData: data, execArgv: loaderExecArgv(false) });
}

/** Starts the batcher's worker thread (see the module comment); the batcher itself starts on `start()`. */
export function createBatcherThread(opts: BatcherThreadOptions): Batcher {
  const log = opts.logger.child({ module: 'batcher-thread' });
  const restartMs = opts.restartMs ?? 1000;
  let state: Extract<BatcherWorkerReport, { type: 'state' }> = {
    type: 'state',
    isLeader: false,
    isConsuming: false,
    appliedOffset: -1,
    appliedEvents: 0,
    stall: null,
    lagMessages: 0,
    lagEvents: 0,
    oldestAt: null,
  };
  let started = false;
  let stopping = false;
  let worker: Worker | null = null;
  let exited: Promise<void> = Promise.resolve();
  let restartTimer: NodeJS.Timeout | null = null;

  const send = (c: BatcherWorkerCommand): void => worker?.postMessage(c);

  function launch(): void {
    const w = spawn(opts.entry, opts.data);
    worker = w;
    exited = new Promise((resolve) => {
      w.on('message', (r: BatcherWorkerReport) => {
        if (r.type === 'state') {
          const stallChanged = (r.stall?.offset ?? null) !== (state.stall?.offset ?? null);
          state = r;
          if (stallChanged) setLogStall(opts.data.stream, 'batcher', r.stall?.offset ?? null);
        } else if (r.type === 'recorded') opts.onRecorded?.();
      });
      w.on('error', (err) => log.error({ err }, 'the batcher thread failed'));
      w.on('exit', (code) => {
        if (worker === w) worker = null;
        state = { ...state, isLeader: false, isConsuming: false };
        resolve();
        if (stopping) return;
        log.error({ code, restartInMs: restartMs }, 'the batcher thread stopped; starting it again');
        restartTimer = setTimeout(() => {
          restartTimer = null;
          if (stopping) return;
          launch();
          if (started) send({ type: 'start' });
        }, restartMs);
        restartTimer.unref();
      });
    });
  }
  launch();

  const lag: BatcherLagSource = {
    get lagMessages() {
      return state.lagMessages;
    },
    get lagEvents() {
      return state.lagEvents;
    },
    get lagSeconds() {
      return state.oldestAt === null ? 0 : Math.max(0, Date.now() - state.oldestAt) / 1000;
    },
    get leader() {
      return state.isConsuming;
    },
  };
  const unwatch = watchBatcher(lag);
  // This thread's registry is the one scraped: a 0 series from the start, so a healthy batcher
  // reads 0 rather than "No data" (the worker's own setLogStall goes to the worker's registry).
  setLogStall(opts.data.stream, 'batcher', null);

  return {
    start() {
      started = true;
      send({ type: 'start' });
    },
    async stop() {
      if (stopping) return exited;
      stopping = true;
      unwatch();
      if (restartTimer) clearTimeout(restartTimer);
      const w = worker;
      if (w === null) return;
      w.postMessage({ type: 'stop' } satisfies BatcherWorkerCommand);
      const timer = setTimeout(() => {
        log.warn({ timeoutMs: opts.stopTimeoutMs ?? 10_000 }, 'the batcher thread did not stop in time; terminating it');
        void w.terminate();
      }, opts.stopTimeoutMs ?? 10_000);
      await exited;
      clearTimeout(timer);
    },
    get appliedOffset() {
      return state.appliedOffset;
    },
    get isLeader() {
      return state.isLeader;
    },
    get isConsuming() {
      return state.isConsuming;
    },
    get appliedEvents() {
      return state.appliedEvents;
    },
    get stall() {
      return state.stall;
    },
    lag,
  };
}

/**
 * The full store's batcher factory for a worker thread: the same options as `createBatcher`, of
 * which the thread takes the plain ones (its pool, logger and webhook outbox are its own).
 */
export function batcherThreadFactory(t: {
  entry: string;
  logLevel: string;
  onRecorded?: () => void;
  restartMs?: number;
}): (o: BatcherOptions) => Batcher {
  return (o) =>
    createBatcherThread({
      entry: t.entry,
      data: {
        databaseUrl: o.databaseUrl,
        amqpUrl: o.amqpUrl,
        stream: o.stream,
        deadLetterQueue: o.deadLetterQueue,
        maxEvents: o.maxEvents,
        ...(o.maxDelayMs !== undefined ? { maxDelayMs: o.maxDelayMs } : {}),
        ...(o.stallRetryMs !== undefined ? { stallRetryMs: o.stallRetryMs } : {}),
        ...(o.queryTimeoutMs !== undefined ? { queryTimeoutMs: o.queryTimeoutMs } : {}),
        logLevel: t.logLevel,
      },
      logger: o.logger,
      ...(t.onRecorded ? { onRecorded: t.onRecorded } : {}),
      ...(t.restartMs !== undefined ? { restartMs: t.restartMs } : {}),
    });
}
