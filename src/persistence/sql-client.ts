import { EngineError } from '../errors.js';
/**
 * The few SQL operations the stores need, so the same statements run on PGlite (embedded) and on
 * node-postgres (full mode). Only files in src/persistence/ see this; drivers stay behind it.
 */
export interface SqlExecutor {
  query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }>;
}

export interface SqlClient extends SqlExecutor {
  /** Runs `fn` in one transaction: all of it commits, or none of it. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Runs several statements separated by `;` (migrations). */
  exec(sql: string): Promise<void>;
  close(): Promise<void>;
}

/** A driver's failure as the project's own code (the driver's words as the cause); an EngineError passes as it is. */
export function databaseUnavailable(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  return new EngineError('UNAVAILABLE', 'the database is unreachable', { cause: err instanceof Error ? err.message : String(err) });
}
