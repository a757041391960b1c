import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadMigrateConfig } from '../src/config.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService } from './support/services.js';

/** `npm run migrate` needs the database and nothing else (no broker, no token secret). */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const skip = await requireService('PostgreSQL', PG_ADMIN_URL);

describe('npm run migrate', () => {
  it('reads only DATABASE_URL, DATA_DIR and LOG_LEVEL', () => {
    assert.deepEqual(loadMigrateConfig({ DATABASE_URL: 'postgres://x@h/db' }), { databaseUrl: 'postgres://x@h/db', dataDir: './data', logLevel: 'info' });
    assert.throws(() => loadMigrateConfig({ DATABASE_URL: 'mysql://x@h/db' }), /DATABASE_URL must use postgres/);
  });

  it('migrates a PostgreSQL database with only DATABASE_URL set', { skip, timeout: 120_000 }, async () => {
    const db = await createTestDatabase();
    try {
      const r = spawnSync('npm', ['run', 'migrate'], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATABASE_URL: db.url },
      });
      assert.equal(r.status, 0, `npm run migrate failed:\n${r.stdout}\n${r.stderr}`);
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        const t = await c.query<{ n: string }>("SELECT count(*) AS n FROM information_schema.tables WHERE table_name IN ('students', 'courses', 'enrolled_courses')");
        assert.equal(Number(t.rows[0]?.n), 3);
      } finally {
        await c.end();
      }
    } finally {
      await db.drop();
    }
  });
});
