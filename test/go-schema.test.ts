import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pg from 'pg';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { createPgliteClient } from '../src/persistence/pglite-client.js';
import type { SqlClient } from '../src/persistence/sql-client.js';
import { applyEvents, loadState } from '../src/persistence/state-store.js';
import { MemoryPersistence, replayLog } from './support/memory-persistence.js';
import { createTestDatabase } from './support/pg.js';
import { NOW, normalize, scenario } from './support/scenario.js';
import { PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * Issue 13, item 3: the Go service's tables keep the Go service's column types (its database.sql):
 * INTEGER ids, SMALLINT units and counters, SMALLSERIAL department ids, SERIAL enrolled_courses.id.
 * Checked in information_schema on PostgreSQL and on the embedded PGlite, after all migrations.
 */
const GO_TYPES: Record<string, Record<string, string>> = {
  departments: { id: 'smallint' },
  staff: { id: 'integer', department_id: 'smallint' },
  students: {
    id: 'integer',
    enrollment_start_time: 'timestamp with time zone',
    max_units: 'smallint',
    remaining_actions: 'smallint',
    department_id: 'smallint',
    entry_year: 'smallint',
    gender: 'sex',
  },
  courses: {
    course_id: 'integer',
    group_id: 'integer',
    for_department: 'smallint',
    units: 'smallint',
    capacity: 'integer',
    reserve_capacity: 'integer',
    class_time: 'integer',
    sex_lock: 'sex',
  },
  enrolled_courses: { id: 'integer', course_id: 'integer', group_id: 'integer', student_id: 'integer', reserved: 'boolean' },
};
/** SERIAL / SMALLSERIAL columns: a sequence of the column's own type behind the default. */
const SERIALS: [string, string, string][] = [
  ['departments', 'id', 'smallint'],
  ['enrolled_courses', 'id', 'integer'],
];

async function checkTypes(db: SqlClient): Promise<void> {
  const rows = (
    await db.query<{ table_name: string; column_name: string; data_type: string; udt_name: string; column_default: string | null }>(
      `SELECT table_name, column_name, data_type, udt_name, column_default FROM information_schema.columns
       WHERE table_schema = current_schema() AND table_name = ANY($1::text[])`,
      [Object.keys(GO_TYPES)],
    )
  ).rows;
  const actual = new Map(rows.map((r) => [`${r.table_name}.${r.column_name}`, r]));
  const wrong: string[] = [];
  for (const [table, cols] of Object.entries(GO_TYPES)) {
    for (const [col, type] of Object.entries(cols)) {
      const r = actual.get(`${table}.${col}`);
      const got = r ? (r.data_type === 'USER-DEFINED' ? r.udt_name : r.data_type) : 'missing';
      if (got !== type) wrong.push(`${table}.${col}: ${got}, Go has ${type}`);
    }
  }
  assert.deepEqual(wrong, [], 'columns whose type differs from the Go schema');
  for (const [table, col, type] of SERIALS) {
    assert.match(actual.get(`${table}.${col}`)?.column_default ?? '', /^nextval\(/, `${table}.${col} is serial`);
    const seq = await db.query<{ data_type: string }>(
      `SELECT s.data_type FROM information_schema.sequences s
       WHERE s.sequence_schema = current_schema() AND s.sequence_name = pg_get_serial_sequence($1, $2)::regclass::text`,
      [table, col],
    );
    assert.equal(seq.rows[0]?.data_type, type, `${table}.${col}'s sequence type`);
  }
}

/** The scenario's log, applied through the batcher's writer, must read back as the reference fold. */
async function roundTrip(db: SqlClient): Promise<void> {
  const mem = new MemoryPersistence();
  const engine = createEngine({ persistence: mem, logger: pino({ level: 'silent' }), enrollmentWindowMs: 3_600_000, now: () => NOW });
  await engine.start();
  await scenario(engine);
  for (let i = 0; i < mem.log.length; i += 97) await db.transaction((tx) => applyEvents(tx, mem.log.slice(i, i + 97)));
  assert.deepEqual(normalize(await loadState(db)), normalize(replayLog(mem.log)));
  engine.stop();
}

describe('the Go schema, exactly', async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);

  test('PostgreSQL: every Go column has its Go type; the engine writes and reads it; a plain pg client reads numbers', { skip }, async () => {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url);
    try {
      await migrate(db);
      await checkTypes(db);
      await roundTrip(db);
      // A client with node-postgres defaults (no bigint parser), as a Go-era tool would use.
      const plain = new pg.Client({ connectionString: tdb.url });
      await plain.connect();
      try {
        const r = await plain.query<{ id: unknown; remaining_actions: unknown; course_id: unknown }>(
          `SELECT s.id, s.remaining_actions, e.course_id FROM students s JOIN enrolled_courses e ON e.student_id = s.id LIMIT 1`,
        );
        assert.equal(typeof r.rows[0]?.id, 'number');
        assert.equal(typeof r.rows[0]?.remaining_actions, 'number');
        assert.equal(typeof r.rows[0]?.course_id, 'number');
      } finally {
        await plain.end();
      }
    } finally {
      await db.close();
      await tdb.drop();
    }
  });

  test('embedded PGlite applies the same migration', async () => {
    const db = await createPgliteClient(null);
    try {
      await migrate(db);
      await checkTypes(db);
      await roundTrip(db);
    } finally {
      await db.close();
    }
  });
});
