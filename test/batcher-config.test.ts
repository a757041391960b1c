import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { deleteQueues } from './support/amqp.js';
import { quietLogger, startNoticesWorld, type NoticesWorld } from './support/notices-world.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe Q, finding 7: the standalone batcher refused to start without JWT_SECRET ("JWT_SECRET is
 * required in full mode"), a setting only the server reads (it signs tokens); and a wrong setting
 * ended it with a stack trace where the server says the problems in lines and exits 2.
 */

const ROOT = new URL('..', import.meta.url).pathname;
const full = { DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h' };

test('loadConfig for the batcher does not require or check the server-only settings (JWT_SECRET, BOOTSTRAP_STAFF_*)', () => {
  assert.throws(() => loadConfig(full), (e: unknown) => e instanceof ConfigError && /JWT_SECRET is required/.test(e.problems.join('\n')));
  const b = loadConfig(full, { role: 'batcher' });
  assert.equal(b.mode, 'full');
  assert.equal(b.jwtSecret, null);
  assert.equal(loadConfig({ ...full, JWT_SECRET: 'short', BOOTSTRAP_STAFF_ID: '1', BOOTSTRAP_STAFF_PASSWORD: '1234' }, { role: 'batcher' }).bootstrapStaff, null);
  // Its own settings are still checked.
  assert.throws(() => loadConfig({ ...full, BATCH_MAX_EVENTS: '0' }, { role: 'batcher' }), (e: unknown) => e instanceof ConfigError && /BATCH_MAX_EVENTS/.test(e.problems.join('\n')));
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function runBatcher(env: Record<string, string>, untilLine?: RegExp): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/batcher.ts'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let signalled = false;
  const seen = (d: Buffer) => {
    out += d.toString();
    // One SIGTERM: a second one during the graceful stop would be the default kill.
    if (!signalled && untilLine && untilLine.test(out)) {
      signalled = true;
      child.kill('SIGTERM');
    }
  };
  child.stdout.on('data', seen);
  child.stderr.on('data', seen);
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((r) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      r({ code, out });
    }),
  );
}

test('the batcher starts without JWT_SECRET (it waits for storage that is not there yet), and stops on SIGTERM with exit 0', { timeout: 90_000 }, async () => {
  const r = await runBatcher(
    { DATABASE_URL: `postgres://nobody@127.0.0.1:${await freePort()}/none`, RABBITMQ_URL: `amqp://guest:guest@127.0.0.1:${await freePort()}` },
    /storage unavailable at start; retrying/,
  );
  assert.match(r.out, /storage unavailable at start; retrying/, r.out);
  assert.doesNotMatch(r.out, /JWT_SECRET/, r.out);
  assert.equal(r.code, 0, r.out);
});

test('a wrong setting: the problems in lines, exit 2, no stack trace', { timeout: 90_000 }, async () => {
  const r = await runBatcher({ ...full, LOG_LEVEL: 'loud' });
  assert.equal(r.code, 2, r.out);
  assert.match(r.out, /^invalid configuration:\n {2}- LOG_LEVEL must be one of/m, r.out);
  assert.doesNotMatch(r.out, /at .*config\.ts|ConfigError/, r.out);
});

test('BATCH_MAX_EVENTS at its top (100,000): the batcher still writes the stream into PostgreSQL (AMQP prefetch is 16 bits)', { timeout: 120_000 }, async (t) => {
  if ((await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL))) return t.skip('services');
  const tdb = await createTestDatabase();
  const prefix = uniqueName('batch-max');
  const store = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger: quietLogger, batchMaxEvents: 100_000, runBatcher: true });
  let w: NoticesWorld | null = null;
  try {
    await store.migrate();
    w = await startNoticesWorld({ persistence: store, seed: true });
    const db = createPgClient(tdb.url);
    try {
      const end = Date.now() + 30_000;
      let sections = 0;
      while (Date.now() < end) {
        sections = Number((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM courses')).rows[0]?.n ?? 0);
        if (sections > 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(sections > 0, 'the seeded sections reached the database (before: the batcher failed at basic.qos with 200,000 and wrote nothing)');
    } finally {
      await db.close();
    }
  } finally {
    await w?.stop();
    await store.close();
    await deleteQueues(Object.values(streamNames(prefix))).catch(() => undefined);
    await tdb.drop();
  }
});
