import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { formatBanner } from '../src/banner.js';
import { freePort } from './support/fault-harness.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * Issue 15, the front door: a terminal gets a short human banner (URLs, mode, demo logins), a pipe
 * gets JSON lines only; every npm entry point reads `.env` when present.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const pgSkip = await requireService('PostgreSQL', PG_ADMIN_URL);
const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups) c();
});

/** Starts the engine (embedded, empty, no demo) with stdout as given and returns its output once it is ready. */
async function startEngine(tty: boolean, extraEnv: Record<string, string> = {}): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'enroll-front-'));
  const port = await freePort();
  const env = {
    PATH: process.env['PATH'] ?? '',
    HOME: process.env['HOME'] ?? '',
    DATA_DIR: dataDir,
    PORT: String(port),
    DEMO_DATA: 'false',
    LOG_LEVEL: 'info',
    ...extraEnv,
  };
  const cmd = `${process.execPath} --import tsx src/main.ts`;
  // `script` gives the engine a pseudo-terminal as stdout, as a person's shell would.
  const child: ChildProcess = tty
    ? spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    : spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  cleanups.push(() => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(dataDir, { recursive: true, force: true });
  });
  let stdout = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
  for (let i = 0; i < 600; i++) {
    if (/enrollment engine ready/.test(stdout) && (!tty || /Stop with `npm stop`/.test(stdout))) break;
    const done = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 200))]);
    if (done !== null) assert.fail(`the engine exited with ${done}:\n${stdout}`);
  }
  process.kill(-(child.pid as number), 'SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  return stdout;
}

describe('start-up output', () => {
  it('the banner names the URLs, the mode, Redis and the demo logins', () => {
    const text = formatBanner({
      base: 'http://127.0.0.1:8080',
      mode: 'embedded',
      startupMs: 1234,
      coordination: { kind: 'memory', connected: true },
      metricsUrl: null,
      demo: { student: { user: 40000001, password: 'student-pass' }, staff: { user: 1, password: 'staff-pass' } },
      logLevel: 'info',
    });
    for (const s of ['embedded mode', 'http://127.0.0.1:8080/docs', 'http://127.0.0.1:8080/admin', '/metrics', '"user": 40000001', '"password": "staff-pass", "staff": true', 'not configured', 'revocations kept in the data directory']) {
      assert.ok(text.includes(s), `banner lacks ${s}:\n${text}`);
    }
    const full = formatBanner({
      base: 'http://localhost:8080',
      mode: 'full',
      startupMs: 10,
      coordination: { kind: 'redis', connected: false },
      metricsUrl: 'http://localhost:9464/metrics',
      demo: null,
      logLevel: 'warn',
    });
    assert.ok(!full.includes('Demo logins'));
    assert.match(full, /UNREACHABLE: rate limits fail open/);
    assert.match(full, /9464\/metrics \(Prometheus\)/);
    assert.ok(full.split('\n').length <= 16, 'a short banner');
  });

  it('stdout that is not a terminal gets JSON lines only', { timeout: 120_000 }, async () => {
    const out = await startEngine(false);
    const lines = out.split('\n').filter((l) => l.trim() !== '');
    assert.ok(lines.length > 0);
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not a JSON line: ${l}`);
    assert.ok(!out.includes('Stop with `npm stop`'));
  });

  it('a terminal gets the banner too, the JSON log lines unchanged', { timeout: 120_000 }, async () => {
    const out = await startEngine(true);
    assert.match(out, /Course-enrollment engine starting \(embedded mode\)/);
    assert.match(out, /Course-enrollment engine ready \(embedded mode/);
    assert.match(out, /API docs +http:\/\/127\.0\.0\.1:\d+\/docs/);
    assert.match(out, /\{"level":30,.*"msg":"enrollment engine ready/);
  });
});

describe('.env', () => {
  it('every npm entry point that runs node reads .env when present (node --env-file-if-exists)', () => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    for (const name of ['start:prod', 'migrate', 'batcher', 'create-staff']) {
      assert.match(scripts[name] ?? '', /^(MALLOC_[A-Z_]+=\S+ )*node (--[a-z-]+(=\d+)? )*--env-file-if-exists=\.env /, `npm run ${name}`);
    }
    // npm start runs the launcher, which starts the compiled engine with the flag (and no loader).
    assert.equal(scripts['start'], 'node scripts/start.mjs');
    assert.match(readFileSync(join(ROOT, 'scripts', 'start.mjs'), 'utf8'), /'--env-file-if-exists=\.env', join\('dist', 'src', 'main\.js'\)/);
    assert.match(scripts['dev'] ?? '', /--env-file-if-exists=\.env /, 'npm run dev');
  });

  it('npm run migrate takes DATABASE_URL from a .env file in the project folder', { skip: pgSkip, timeout: 120_000 }, async () => {
    // A copy of the project folder (package.json copied, the rest linked) holding its own .env, so
    // this test never writes a .env into the real folder other runs read.
    const dir = mkdtempSync(join(tmpdir(), 'enroll-dotenv-'));
    const db = await createTestDatabase();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    try {
      copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
      for (const name of ['node_modules', 'src', 'sql', 'tsconfig.json']) symlinkSync(join(ROOT, name), join(dir, name));
      writeFileSync(join(dir, '.env'), `# read by npm run migrate\nDATABASE_URL=${db.url}\n`);
      const r = spawnSync('npm', ['run', 'migrate'], {
        cwd: dir,
        encoding: 'utf8',
        env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '' },
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout + r.stderr, /"target":"postgres"/);
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        const t = await c.query<{ n: string }>("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'students'");
        assert.equal(Number(t.rows[0]?.n), 1, 'the database named in .env was not migrated');
      } finally {
        await c.end();
      }
    } finally {
      await db.drop();
    }
  });
});
