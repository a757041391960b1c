import pg from 'pg';
import type { SqlClient, SqlExecutor } from './sql-client.js';

/** bigint ids come back as numbers (ids and sequence numbers stay far below 2^53). */
const types = {
  getTypeParser(oid: number, format?: string) {
    if (oid === 20) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  },
};

/** node-postgres pool behind the SqlClient interface (full mode). */
export function createPgClient(
  connectionString: string,
  opts: { max?: number; connectionTimeoutMillis?: number; queryTimeoutMillis?: number } = {},
): SqlClient {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 8,
    connectionTimeoutMillis: opts.connectionTimeoutMillis ?? 2000,
    ...(opts.queryTimeoutMillis !== undefined ? { query_timeout: opts.queryTimeoutMillis } : {}),
    types,
  });
  // A broken idle connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  const query = async <R>(text: string, params?: unknown[]) => {
    const r = await pool.query(text, params);
    return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
  };
  return {
    query,
    async transaction(fn) {
      const client = await pool.connect();
      // A checked-out client has no pool listener, and pg emits 'error' on it when the connection
      // drops: unhandled, that would kill the process. Its queries fail (and are retried) anyway.
      const onError = () => undefined;
      client.on('error', onError);
      const tx: SqlExecutor = {
        async query<R>(text: string, params?: unknown[]) {
          const r = await client.query(text, params);
          return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
        },
      };
      try {
        await client.query('BEGIN');
        const out = await fn(tx);
        await client.query('COMMIT');
        client.removeListener('error', onError);
        client.release();
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        client.release(true);
        throw err;
      }
    },
    async exec(sql) {
      await pool.query(sql);
    },
    close: () => pool.end(),
  };
}
