import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { SqlClient, SqlExecutor } from './sql-client.js';

/** sql/ beside src/ when run from source, or two levels further up when run from dist/src/. */
function sqlDir(): string {
  for (const rel of ['../../sql/', '../../../sql/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(dir)) return dir;
  }
  throw new Error('sql/ migrations folder not found');
}

export interface MigrateOptions {
  /** Where a migration that changed data says so (one warning); the caller's `module` child logger. */
  log?: Logger;
}

/** An enrolled_courses row moved to enrolled_courses_set_aside before 002 (see setAsideDuplicateEnrollments). */
interface SetAsideRow {
  id: number;
  studentId: number;
  courseId: number;
  groupId: number;
  reserved: boolean;
  keptId: number;
}

const SET_ASIDE_TABLE = 'enrolled_courses_set_aside';
/** The rows a warning names; the table holds them all. */
const SET_ASIDE_NAMED = 10;

/**
 * Applies the numbered files of sql/ that have not been applied yet, each in its own transaction,
 * under an advisory lock so two processes starting at once do not race. Migrations are
 * append-only: a shipped file is never edited; work a file needs done first (on data it would
 * refuse) runs in the same transaction, under the same lock, only when that file is applied.
 */
export async function migrate(db: SqlClient, options: MigrateOptions = {}): Promise<string[]> {
  const dir = sqlDir();
  const files = readdirSync(dir)
    .filter((f) => /^\d+_.*\.sql$/.test(f))
    .sort();
  await db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
  const applied: string[] = [];
  for (const file of files) {
    const sql = readFileSync(dir + file, 'utf8');
    const done = await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(727274)');
      const seen = await tx.query('SELECT 1 FROM schema_migrations WHERE version = $1', [file]);
      if (seen.rows.length > 0) return null;
      const setAside = file === '002_engine_log.sql' ? await setAsideDuplicateEnrollments(tx, dir) : [];
      for (const stmt of splitStatements(sql)) await tx.query(stmt);
      await tx.query('INSERT INTO schema_migrations (version) VALUES ($1)', [file]);
      return { setAside };
    });
    if (done === null) continue;
    applied.push(file);
    // Said once the transaction has committed (a failed one moved nothing, and is retried).
    if (done.setAside.length > 0) warnSetAside(options.log, done.setAside);
  }
  return applied;
}

/**
 * Before 002's unique index on enrolled_courses (student_id, course_id): the Go service's data can
 * hold more than one row for one student and course (its group change inserted the new row and
 * never deleted the old one; the same group twice, registered and reserved), and the index would
 * refuse the whole migration, so the engine never started. One row per student and course is kept:
 * a registered row (reserved = false) over a reserved one, so nobody loses a seat, and among rows
 * of the same kind the highest id (the later write, e.g. a group change's result). Every other row
 * is moved, with its id, to enrolled_courses_set_aside (sql/010, created here the same way), nothing
 * is lost; the rows kept keep their ids, so reserve queues (ordered by id) keep their order.
 */
async function setAsideDuplicateEnrollments(tx: SqlExecutor, dir: string): Promise<SetAsideRow[]> {
  for (const stmt of splitStatements(readFileSync(dir + '010_enrolled_courses_set_aside.sql', 'utf8'))) await tx.query(stmt);
  const r = await tx.query<{ id: unknown; student_id: unknown; course_id: unknown; group_id: unknown; reserved: boolean; kept_id: unknown }>(
    `WITH ranked AS (
       SELECT id, first_value(id) OVER w AS kept_id, row_number() OVER w AS n
       FROM enrolled_courses
       WINDOW w AS (PARTITION BY student_id, course_id ORDER BY reserved, id DESC)
     ), moved AS (
       DELETE FROM enrolled_courses e USING ranked r
       WHERE e.id = r.id AND r.n > 1
       RETURNING e.id, e.course_id, e.group_id, e.student_id, e.reserved, r.kept_id
     )
     INSERT INTO ${SET_ASIDE_TABLE} (id, course_id, group_id, student_id, reserved, kept_id, reason)
     SELECT m.id, m.course_id, m.group_id, m.student_id, m.reserved, m.kept_id,
            format('more than one enrolled_courses row for student %s in course %s (data written by the Go service): '
                   'kept id %s (group %s, %s); a registered row is kept over a reserved one, then the highest id',
                   m.student_id, m.course_id, k.id, k.group_id, CASE WHEN k.reserved THEN 'reserved' ELSE 'registered' END)
     FROM moved m JOIN enrolled_courses k ON k.id = m.kept_id
     RETURNING id, student_id, course_id, group_id, reserved, kept_id`,
  );
  return r.rows
    .map((x) => ({
      id: Number(x.id),
      studentId: Number(x.student_id),
      courseId: Number(x.course_id),
      groupId: Number(x.group_id),
      reserved: Boolean(x.reserved),
      keptId: Number(x.kept_id),
    }))
    .sort((a, b) => a.studentId - b.studentId || a.courseId - b.courseId || a.id - b.id);
}

function warnSetAside(log: Logger | undefined, rows: SetAsideRow[]): void {
  log?.warn(
    {
      setAside: rows.length,
      table: SET_ASIDE_TABLE,
      rows: rows.slice(0, SET_ASIDE_NAMED).map((r) => ({ student: r.studentId, course: r.courseId, group: r.groupId, reserved: r.reserved, id: r.id, keptId: r.keptId })),
    },
    `enrolled_courses held more than one row for a student and course (data written by the Go service): one was kept for each ` +
      `(a registered row over a reserved one, then the highest id); ${rows.length} other row${rows.length === 1 ? ' was' : 's were'} ` +
      `moved to ${SET_ASIDE_TABLE} with ${rows.length === 1 ? 'its id' : 'their ids'} (docs/operations.md, Migrations)`,
  );
}

/** Splits on `;` at line ends outside dollar-quoted blocks (enough for our own migration files). */
function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inDollar = false;
  for (const line of sql.split('\n')) {
    if (/^\s*--/.test(line)) continue;
    const dollars = (line.match(/\$\$/g) ?? []).length;
    if (dollars % 2 === 1) inDollar = !inDollar;
    cur += line + '\n';
    if (!inDollar && /;\s*$/.test(line)) {
      out.push(cur.trim());
      cur = '';
    }
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}
