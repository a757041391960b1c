import { userInfo } from 'node:os';
import pg from 'pg';
import { EngineError } from '../errors.js';
import type { SqlClient, SqlExecutor } from './sql-client.js';

/** bigint ids come back as numbers (ids and sequence numbers stay far below 2^53). */
const types = {
  getTypeParser(oid: number, format?: string) {
    if (oid === 20) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  },
};

/**
 * The OS account's name, or undefined when it has none (a uid without a passwd entry, as some
 * container platforms run).
 */
function osUserName(): string | undefined {
  try {
    return userInfo().username || undefined;
  } catch {
    return undefined;
  }
}

/**
 * A DATABASE_URL without a user name connects as the OS account, as libpq does (psql, and the Go
 * service's driver). node-postgres falls back to the URL's user, then PGUSER, then its
 * `defaults.user`, which it takes from $USER only: with USER unset (a container, a service
 * manager, `env -i`, a sandbox running as root) it sent no user, and the start retried "no
 * PostgreSQL user name specified" every 5 s for ever while psql with the same URL connected (probe
 * L, finding 4). The driver's last fallback is therefore filled in here, where the engine's pg
 * clients are made, when $USER left it empty: the URL's user and PGUSER still come first, and
 * config.ts stays the only reader of the environment. Runs once per thread that loads this module
 * (the batcher's worker thread too); the batcher's leader connection uses the same driver defaults.
 * Without an OS name either, the server's refusal is turned into a clear hint (setting-hints.ts).
 */
pg.defaults.user ||= osUserName();

/**
 * TCP keepalive on every PostgreSQL connection, first probe after this long idle: a connection
 * whose peer vanished without a FIN (a host gone, a partition) is found dead by the kernel instead
 * of looking open for hours. It cannot help a connection with a statement waiting for its answer
 * (the kernel retransmits instead of probing); the statement bound below does.
 */
export const PG_KEEPALIVE_IDLE_MS = 10_000;

/** A statement that got no answer within the bound: its connection has been destroyed. */
export class DatabaseTimeoutError extends EngineError {
  constructor(readonly timeoutMs: number) {
    super('UNAVAILABLE', `the database did not answer within ${timeoutMs} ms`);
  }
}

export interface PgClientOptions {
  max?: number;
  connectionTimeoutMillis?: number;
  /**
   * Longest wait for one statement's answer (ms); unset: none (migrations, which may take long).
   *
   * Past it the statement fails with {@link DatabaseTimeoutError} (an `EngineError('UNAVAILABLE')`)
   * and its connection is destroyed, never reused: a connection that stopped answering (a network
   * path that drops bytes without a reset) may stay stuck for ever, and every statement queued on
   * it with it. A transaction it was part of is abandoned without COMMIT or ROLLBACK: nothing of it
   * commits. The server ends such a session by itself too, since the end of the connection may not
   * reach it: the same value is sent as `idle_in_transaction_session_timeout` (a transaction whose
   * client went away frees its row locks) and `statement_timeout`.
   */
  queryTimeoutMillis?: number;
}

/** node-postgres pool behind the SqlClient interface (full mode). */
export function createPgClient(connectionString: string, opts: PgClientOptions = {}): SqlClient {
  const timeoutMs = opts.queryTimeoutMillis;
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 8,
    connectionTimeoutMillis: opts.connectionTimeoutMillis ?? 2000,
    keepAlive: true,
    keepAliveInitialDelayMillis: PG_KEEPALIVE_IDLE_MS,
    ...(timeoutMs !== undefined ? { statement_timeout: timeoutMs, idle_in_transaction_session_timeout: timeoutMs } : {}),
    types,
  });
  // A broken idle connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  // A checked-out client has no pool listener, and pg emits 'error' on it when the connection
  // drops: unhandled, that would kill the process. Its queries fail (and are retried) anyway.
  const onError = () => undefined;

  /** One statement on `client`, bounded by the timeout (the caller destroys the client when it fires). */
  async function run(client: pg.PoolClient, text: string, params?: unknown[]): Promise<{ rows: unknown[]; rowCount: number }> {
    if (timeoutMs === undefined) {
      const r = await client.query(text, params);
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    }
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DatabaseTimeoutError(timeoutMs)), timeoutMs);
    });
    try {
      // The statement's own failure when its connection is destroyed is handled here (race).
      const r = await Promise.race([client.query(text, params), expired]);
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Gives the client back; after a failure it is destroyed, as `pool.query` does (pg ends a client
   * with a statement in flight by destroying its socket, without waiting for the server).
   */
  function release(client: pg.PoolClient, err?: unknown): void {
    if (err === undefined) client.removeListener('error', onError);
    client.release(err === undefined ? undefined : err instanceof Error ? err : true);
  }

  return {
    async query<R>(text: string, params?: unknown[]) {
      const client = await pool.connect();
      client.on('error', onError);
      try {
        const r = await run(client, text, params);
        release(client);
        return { rows: r.rows as R[], rowCount: r.rowCount };
      } catch (err) {
        release(client, err);
        throw err;
      }
    },
    async transaction(fn) {
      const client = await pool.connect();
      client.on('error', onError);
      /** A statement got no answer: the connection is stuck, so nothing more is sent on it. */
      let stuck = false;
      const tx: SqlExecutor = {
        async query<R>(text: string, params?: unknown[]) {
          if (stuck) throw new DatabaseTimeoutError(timeoutMs ?? 0);
          try {
            const r = await run(client, text, params);
            return { rows: r.rows as R[], rowCount: r.rowCount };
          } catch (err) {
            if (err instanceof DatabaseTimeoutError) stuck = true;
            throw err;
          }
        },
      };
      try {
        await tx.query('BEGIN');
        const out = await fn(tx);
        await tx.query('COMMIT');
        release(client);
        return out;
      } catch (err) {
        // On a stuck connection a ROLLBACK would only queue behind the statement that never
        // returned; destroying the connection ends the transaction (the server rolls it back when
        // it sees the end, or ends the session at idle_in_transaction_session_timeout).
        if (!stuck) await tx.query('ROLLBACK').catch(() => undefined);
        release(client, err ?? true);
        throw err;
      }
    },
    async exec(sql) {
      await pool.query(sql);
    },
    close: () => pool.end(),
  };
}
