import { parentPort, workerData } from 'node:worker_threads';
import { createPgliteClient, type PgliteOptions } from './pglite-client.js';
import type { SqlClient, SqlExecutor } from './sql-client.js';
import { applyEvents } from './state-store.js';
import type { DomainEvent } from './types.js';
import type { WorkerError, WorkerReply, WorkerRequest, WorkerStart } from './pglite-thread.js';

/**
 * The worker thread side of pglite-thread.ts: opens PGlite here and runs what the engine's thread
 * asks, one message per statement, with transactions held open across messages. Nothing else.
 */

if (!parentPort) throw new Error('pglite-worker runs as a worker thread (see pglite-thread.ts)');
const port = parentPort;

const start = workerData as WorkerStart;
/** Thrown inside a transaction's callback to roll it back; never reaches the engine's thread. */
const ROLLBACK = Symbol('rollback');

/** The error as data: its own primitive fields (PostgreSQL's `code`, `detail`, ...) survive the trip. */
function errorOf(err: unknown): WorkerError {
  const e = err instanceof Error ? err : new Error(String(err));
  const props: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(e)) if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') props[k] = v;
  return { name: e.name, message: e.message, props };
}

const reply = (r: WorkerReply): void => port.postMessage(r);

interface OpenTx {
  tx: SqlExecutor;
  /** Absent for a group commit's transaction, which ends by itself. */
  end?: (outcome: 'commit' | 'rollback') => void;
  /** Settles when the transaction has committed or rolled back. */
  done?: Promise<void>;
}

async function main(): Promise<void> {
  let db: SqlClient;
  try {
    const opts: PgliteOptions = {
      sharedBuffersMb: start.sharedBuffersMb,
      ...(start.template !== undefined ? { template: start.template } : {}),
      onDataDir: (origin) => reply({ id: 0, ok: true, dataDir: origin }),
    };
    db = await createPgliteClient(start.dataDir, opts);
  } catch (err) {
    reply({ id: 0, ok: false, error: errorOf(err) });
    return;
  }
  reply({ id: 0, ok: true, ready: true });

  const txs = new Map<number, OpenTx>();
  /** Group commits waiting for the engine's thread to stage their webhook deliveries. */
  const staging = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  /** Asks the engine's thread to stage the fresh events (it queries through transaction `id`) and waits. */
  const stage = (id: number, fresh: DomainEvent[]): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      staging.set(id, { resolve, reject });
      reply({ id, ok: true, stage: fresh });
    });
  const run = async (m: WorkerRequest): Promise<WorkerReply | null> => {
    switch (m.op) {
      case 'apply': {
        const count = await db.transaction(async (tx) => {
          txs.set(m.id, { tx });
          try {
            return await applyEvents(tx, m.events, m.stage ? (fresh) => stage(m.id, fresh) : undefined);
          } finally {
            txs.delete(m.id);
          }
        });
        return { id: m.id, ok: true, rowCount: count };
      }
      case 'staged': {
        const w = staging.get(m.tx);
        staging.delete(m.tx);
        if (m.error) w?.reject(new Error(m.error.message));
        else w?.resolve();
        return null;
      }
      case 'query': {
        const on = m.tx === undefined ? db : txs.get(m.tx)?.tx;
        if (!on) throw new Error(`no open transaction ${m.tx}`);
        const r = await on.query(m.text, m.params);
        return { id: m.id, ok: true, rows: r.rows, rowCount: r.rowCount };
      }
      case 'exec':
        await db.exec(m.text);
        return { id: m.id, ok: true };
      case 'begin':
        return new Promise<WorkerReply>((resolve, reject) => {
          let end!: OpenTx['end'];
          let begun = false;
          const outcome = new Promise<'commit' | 'rollback'>((r) => (end = r));
          const done: Promise<void> = db
            .transaction(async (tx) => {
              begun = true;
              txs.set(m.id, { tx, end, done });
              resolve({ id: m.id, ok: true });
              if ((await outcome) === 'rollback') throw ROLLBACK;
            })
            .catch((err: unknown) => {
              if (err !== ROLLBACK) throw err;
            })
            .finally(() => txs.delete(m.id));
          // A transaction that could not begin answers the begin; a later failure answers the commit.
          done.catch((err: unknown) => {
            if (!begun) reject(err);
          });
        });
      case 'commit':
      case 'rollback': {
        const t = txs.get(m.tx);
        if (!t?.end || !t.done) throw new Error(`no open transaction ${m.tx}`);
        t.end(m.op);
        await t.done;
        return { id: m.id, ok: true };
      }
      case 'close':
        await db.close();
        return { id: m.id, ok: true };
    }
  };
  port.on('message', (m: WorkerRequest) => {
    run(m).then(
      (r) => {
        if (r) reply(r);
      },
      (err: unknown) => reply({ id: m.id, ok: false, error: errorOf(err) }),
    );
  });
}

void main();
