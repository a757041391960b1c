import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { loaderExecArgv, type DataDirOrigin, type PgliteOptions } from './pglite-client.js';
import type { TemplatePaths } from './pglite-template.js';
import type { SqlClient, SqlExecutor } from './sql-client.js';
import type { DomainEvent } from './types.js';

/**
 * PGlite on a worker thread of its own, behind the same SqlClient as PGlite in process. PGlite is
 * PostgreSQL compiled to WebAssembly: every statement runs synchronously on the thread that owns
 * it. On the engine's thread a group commit's transaction blocked the event loop (no connection
 * accepted, no request parsed, no actor run) for as long as the database worked, which was about a
 * third of that thread's time under a connection storm in embedded mode; here the two run side by
 * side on two cores, and the event loop only sends a few messages per transaction.
 *
 * Each statement is one message each way; a transaction stays open in the worker between the
 * messages of its statements, as it does across awaits in process, and PGlite's own lock keeps
 * other statements out of it. An error keeps its PostgreSQL fields (`code`, `detail`, ...). If the
 * thread dies, every pending and later call fails; nothing is retried behind the caller's back.
 */

/** What the worker is started with. */
export interface WorkerStart {
  dataDir: string | null;
  sharedBuffersMb?: number;
  template?: TemplatePaths | null;
}

export type WorkerRequest =
  | { id: number; op: 'apply'; events: DomainEvent[]; stage: boolean }
  | { id: number; op: 'staged'; tx: number; error?: WorkerError }
  | { id: number; op: 'query'; text: string; params?: unknown[]; tx?: number }
  | { id: number; op: 'exec'; text: string }
  | { id: number; op: 'begin' }
  | { id: number; op: 'commit' | 'rollback'; tx: number }
  | { id: number; op: 'close' };

/** An error as data (structured cloning keeps only an Error's message and name). */
export interface WorkerError {
  name: string;
  message: string;
  props: Record<string, string | number | boolean>;
}

/**
 * Replies carry the request's id; id 0 is the worker's own: ready, failed to open, or how the data
 * directory came to be. A reply with `stage` is not the last: a group commit asks for its webhook
 * deliveries to be staged in its transaction (answered with `staged`).
 */
export type WorkerReply =
  | { id: number; ok: true; rows?: Record<string, unknown>[]; rowCount?: number; ready?: true; dataDir?: DataDirOrigin; stage?: DomainEvent[] }
  | { id: number; ok: false; error: WorkerError };

/**
 * The SqlClient, plus a group commit's whole transaction in one message: on the worker, a
 * transaction driven statement by statement from the engine's thread waits for that thread's event
 * loop between statements, which is busy with requests exactly when batches are large.
 */
export interface PgliteThreadClient extends SqlClient {
  /**
   * `applyEvents` (state-store.ts) in one transaction on the worker; `stage`, when given, runs on
   * this thread with the events new to the database, inside that transaction, before the tables
   * change (the webhook outbox's step). Resolves with the number of fresh events once committed.
   */
  applyEvents(events: DomainEvent[], stage?: (tx: SqlExecutor, fresh: DomainEvent[]) => Promise<void>): Promise<number>;
}

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Ok = Extract<WorkerReply, { ok: true }>;

function toError(e: WorkerError): Error {
  const err = Object.assign(new Error(e.message), e.props);
  if (e.name !== 'Error') err.name = e.name;
  return err;
}

/** Options of {@link createPgliteThreadClient}: PgliteOptions, and bounds of the worker's own V8 heap. */
export interface PgliteThreadOptions extends PgliteOptions {
  resourceLimits?: ResourceLimits;
}

/**
 * The compiled worker, or from source (tests, `npm run dev`) the TypeScript one through tsx, whose
 * loader a worker thread does not inherit from `--import tsx` on Node 20.
 */
function startWorker(start: WorkerStart, resourceLimits?: ResourceLimits): Worker {
  const self = fileURLToPath(import.meta.url);
  const limits = resourceLimits ? { resourceLimits } : {};
  if (!self.endsWith('.ts')) return new Worker(join(self, '..', 'pglite-worker.js'), { workerData: start, execArgv: loaderExecArgv(false), ...limits });
  const script = pathToFileURL(join(self, '..', 'pglite-worker.ts')).href;
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(script)}); })`;
  return new Worker(boot, { eval: true, workerData: start, execArgv: loaderExecArgv(false), ...limits });
}

/**
 * Opens PGlite on a new worker thread (see the module comment). Same arguments and behaviour as
 * `createPgliteClient`: `dataDir` null keeps the database in memory.
 */
export async function createPgliteThreadClient(dataDir: string | null, opts: PgliteThreadOptions = {}): Promise<PgliteThreadClient> {
  const start: WorkerStart = {
    dataDir,
    ...(opts.sharedBuffersMb !== undefined ? { sharedBuffersMb: opts.sharedBuffersMb } : {}),
    ...(opts.template !== undefined ? { template: opts.template } : {}),
  };
  const worker = startWorker(start, opts.resourceLimits);
  const pending = new Map<number, { resolve: (r: Ok) => void; reject: (err: Error) => void; stage?: (fresh: DomainEvent[]) => void }>();
  let nextId = 1;
  let stopped: Error | null = null;
  let closing = false;

  const opened = new Promise<void>((resolve, reject) => {
    worker.on('message', (r: WorkerReply) => {
      if (r.id === 0) {
        if (!r.ok) reject(toError(r.error));
        else if (r.dataDir) opts.onDataDir?.(r.dataDir);
        else if (r.ready) resolve();
        return;
      }
      const p = pending.get(r.id);
      if (!p) return;
      if (r.ok && r.stage) {
        p.stage?.(r.stage);
        return;
      }
      pending.delete(r.id);
      // Only a call in flight keeps the process alive, as PGlite in process would not either.
      if (pending.size === 0) worker.unref();
      if (r.ok) p.resolve(r);
      else p.reject(toError(r.error));
    });
    const fail = (err: Error): void => {
      stopped ??= err;
      reject(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
    };
    worker.on('error', (err) => fail(new Error(`the embedded database thread failed: ${err.message}`)));
    worker.on('exit', (code) => fail(new Error(closing ? 'the embedded database is closed' : `the embedded database thread stopped (exit ${code})`)));
  });
  try {
    await opened;
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  worker.unref();

  const call = (req: Request, id = nextId++, stage?: (fresh: DomainEvent[]) => void): Promise<Ok> => {
    if (stopped) return Promise.reject(stopped);
    return new Promise<Ok>((resolve, reject) => {
      if (pending.size === 0) worker.ref();
      pending.set(id, { resolve, reject, stage });
      worker.postMessage({ ...req, id });
    });
  };
  const executor = (tx?: number): SqlExecutor => ({
    async query<R>(text: string, params?: unknown[]) {
      const r = await call(tx === undefined ? { op: 'query', text, params } : { op: 'query', text, params, tx });
      return { rows: (r.rows ?? []) as R[], rowCount: r.rowCount ?? 0 };
    },
  });
  const base = executor();

  return {
    query: base.query,
    async applyEvents(events, stage) {
      const id = nextId++;
      /** The stage step's own failure: the batch fails with it, as it would in process (not a copy). */
      const stageFailure: { failed: boolean; err?: unknown } = { failed: false };
      const onStage = stage
        ? (fresh: DomainEvent[]) => {
            stage(executor(id), fresh).then(
              () => worker.postMessage({ id: 0, op: 'staged', tx: id } satisfies WorkerRequest),
              (err: unknown) => {
                stageFailure.failed = true;
                stageFailure.err = err;
                // The worker only needs to know to roll back.
                worker.postMessage({ id: 0, op: 'staged', tx: id, error: { name: 'Error', message: 'the stage step failed', props: {} } } satisfies WorkerRequest);
              },
            );
          }
        : undefined;
      try {
        const r = await call({ op: 'apply', events, stage: stage !== undefined }, id, onStage);
        return r.rowCount ?? 0;
      } catch (err) {
        throw stageFailure.failed ? stageFailure.err : err;
      }
    },
    async transaction(fn) {
      // The transaction is known by its begin's id.
      const tx = nextId++;
      await call({ op: 'begin' }, tx);
      let result;
      try {
        result = await fn(executor(tx));
      } catch (err) {
        await call({ op: 'rollback', tx }).catch(() => undefined);
        throw err;
      }
      await call({ op: 'commit', tx });
      return result;
    },
    async exec(sql) {
      await call({ op: 'exec', text: sql });
    },
    async close() {
      if (stopped) return;
      await call({ op: 'close' });
      closing = true;
      await worker.terminate();
    },
  };
}
