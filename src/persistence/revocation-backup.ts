import type { RevocationBackup, RevocationEntry } from '../coordination/types.js';
import { mergeRevocation } from '../coordination/revocation-mirror.js';
import { createPgClient } from './pg-client.js';
import { databaseUnavailable, type SqlExecutor } from './sql-client.js';

/**
 * Full mode's fallback for token revocations (sql/008_token_revocations.sql): the Redis store saves
 * here what Redis could not take, before the logout is answered, and every instance loads it at
 * start. Only used while Redis is away, never on the enroll path. Driver errors become
 * `EngineError('UNAVAILABLE')`.
 */

/** The backup over any SQL executor (the table must exist: migrations). */
export function createSqlRevocationBackup(db: SqlExecutor): RevocationBackup {
  return {
    name: 'the database',
    async save(entries) {
      if (entries.length === 0) return;
      // One row per key in one statement (ON CONFLICT cannot touch a row twice).
      const byKey = new Map<string, RevocationEntry>();
      for (const e of entries) byKey.set(e.key, mergeRevocation(byKey.get(e.key), e));
      const rows = [...byKey.values()];
      try {
        await db.query(
          `INSERT INTO token_revocations (key, until_s, at_ms)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
           ON CONFLICT (key) DO UPDATE SET
             until_s = GREATEST(token_revocations.until_s, EXCLUDED.until_s),
             at_ms = GREATEST(token_revocations.at_ms, EXCLUDED.at_ms)`,
          [rows.map((e) => e.key), rows.map((e) => e.until), rows.map((e) => e.at ?? null)],
        );
      } catch (err) {
        throw databaseUnavailable(err);
      }
    },
    async load(nowMs) {
      const nowSeconds = Math.floor(nowMs / 1000);
      try {
        await db.query('DELETE FROM token_revocations WHERE until_s <= $1', [nowSeconds]);
        const r = await db.query<{ key: string; until_s: number | string; at_ms: number | string | null }>(
          'SELECT key, until_s, at_ms FROM token_revocations WHERE until_s > $1',
          [nowSeconds],
        );
        return r.rows.map((row) => ({ key: row.key, until: Number(row.until_s), ...(row.at_ms === null ? {} : { at: Number(row.at_ms) }) }));
      } catch (err) {
        throw databaseUnavailable(err);
      }
    },
  };
}

/**
 * The backup on a small pool of its own (full mode, wired by main): a logout during a Redis outage
 * does not queue behind the batcher's or the leases' connections, and waits at most `queryTimeoutMs`.
 */
export function createPgRevocationBackup(
  databaseUrl: string,
  opts: { queryTimeoutMs: number },
): RevocationBackup & { close(): Promise<void> } {
  const db = createPgClient(databaseUrl, { max: 2, queryTimeoutMillis: opts.queryTimeoutMs });
  return { ...createSqlRevocationBackup(db), close: () => db.close() };
}
