import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { userInfo } from 'node:os';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadMigrateConfig } from '../src/config.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

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

  /** The environment of a service started without a login shell: no USER, no PGUSER. */
  const bareEnv = (databaseUrl: string) => ({ PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATABASE_URL: databaseUrl });
  /** The URL without its user name (and password), as an operator may write it for psql. */
  const withoutUser = (url: string) => {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  };

  it('a DATABASE_URL without a user name connects as the OS account, with USER unset (as libpq does)', { skip, timeout: 120_000 }, async () => {
    const osUser = userInfo().username;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    const hasRole = (await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [osUser])).rowCount === 1;
    await admin.end();
    const db = await createTestDatabase();
    try {
      const url = withoutUser(db.url);
      assert.doesNotMatch(url, /@/);
      const r = spawnSync('npm', ['run', '-s', 'migrate'], { cwd: ROOT, encoding: 'utf8', env: bareEnv(url) });
      if (hasRole) {
        assert.equal(r.status, 0, `npm run migrate failed:\n${r.stdout}\n${r.stderr}`);
        assert.match(r.stdout, /migrations applied/);
        // The engine's own pool (full mode's, the batcher's) connects the same way, as that account.
        const probe = spawnSync(
          process.execPath,
          [
            '--import',
            'tsx',
            '--input-type=module',
            '-e',
            "import { createPgClient } from './src/persistence/pg-client.ts'; const db = createPgClient(process.env.DATABASE_URL); const r = await db.query('SELECT current_user AS u'); console.log(r.rows[0].u); await db.close();",
          ],
          { cwd: ROOT, encoding: 'utf8', env: bareEnv(url) },
        );
        assert.equal(probe.status, 0, probe.stderr);
        assert.equal(probe.stdout.trim(), osUser);
      } else {
        // No role for the OS account: the server's refusal, said in one line.
        assert.equal(r.status, 1);
        assert.match(r.stderr, /^npm run migrate: the database refused the user or password of DATABASE_URL/m);
      }
    } finally {
      await db.drop();
    }
  });

  it('a refused connection is one line on stderr, no stack trace, exit 1', { skip, timeout: 120_000 }, () => {
    const base = new URL(PG_ADMIN_URL);
    const missingDb = new URL(base);
    missingDb.pathname = `/${uniqueName('enroll_absent')}`;
    const unknownRole = new URL(base);
    unknownRole.username = uniqueName('no_such_role');
    for (const [url, reason] of [
      [missingDb.toString(), /the database named in DATABASE_URL does not exist/],
      [unknownRole.toString(), /the database refused the user or password of DATABASE_URL/],
    ] as const) {
      const r = spawnSync('npm', ['run', '-s', 'migrate'], { cwd: ROOT, encoding: 'utf8', env: bareEnv(url) });
      assert.equal(r.status, 1, `${r.stdout}\n${r.stderr}`);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('npm run migrate:'));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, reason);
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    }
  });
});
