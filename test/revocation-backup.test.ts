import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createRedisCoordination } from '../src/coordination/redis.js';
import type { Coordination, RevocationBackup } from '../src/coordination/types.js';
import { isEngineError } from '../src/errors.js';
import { createLogger } from '../src/logger.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { createPgRevocationBackup } from '../src/persistence/revocation-backup.js';
import { FIRST_STUDENT, freePort, msg, withFaultEnv } from './support/fault-harness.js';
import { createHttpFixture, expectError, expectStatus, S } from './support/http-fixture.js';
import { createTestDatabase } from './support/pg.js';
import { deleteRedisKeys, PG_ADMIN_URL, REDIS_URL, requireService, uniqueName } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

/**
 * Full mode with REDIS_URL: a revocation made while Redis is away is answered only once it is
 * durable (Redis, or else the database: sql/008_token_revocations.sql), so a restart before Redis
 * is back does not bring the revoked token back (found by a black-box probe: the revocation lived
 * only in the process's memory). Real PostgreSQL and real Redis; Redis is "away" at a closed port
 * or behind a TCP proxy that is cut.
 */

const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('Redis', REDIS_URL));

const cleanups: (() => Promise<void>)[] = [];
const prefixes: string[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  if (skip) return;
  await deleteRedisKeys(prefixes);
});

function keyPrefix(): string {
  const p = `${uniqueName('rvb')}:`;
  prefixes.push(p);
  return p;
}

/** A fresh database with the engine's migrations applied. */
async function migratedDatabase(): Promise<string> {
  const db = await createTestDatabase();
  cleanups.push(() => db.drop());
  const c = createPgClient(db.url, { max: 1 });
  try {
    await migrate(c);
  } finally {
    await c.close();
  }
  return db.url;
}

function backupOn(url: string): RevocationBackup {
  const b = createPgRevocationBackup(url, { queryTimeoutMs: 2000 });
  cleanups.push(() => b.close());
  return b;
}

/** A Redis store on `url` (started), logging into `logs`. */
async function store(url: string, prefix: string, backup: RevocationBackup | undefined, logs: string[] = [], resyncMs = 60_000): Promise<Coordination> {
  const c = createRedisCoordination({
    url,
    prefix,
    logger: createLogger('debug', { write: (l: string) => void logs.push(l) }),
    resyncMs,
    ...(backup ? { backup } : {}),
  });
  cleanups.push(() => c.close());
  await c.start();
  return c;
}

const deadRedis = async () => `redis://127.0.0.1:${await freePort()}`;
const token = (over: Partial<{ jti: string; sid: string; subject: string; authTimeMs: number }> = {}) => ({
  jti: 'jti-1',
  sid: 'sid-1',
  subject: 'student:40000001',
  authTimeMs: Date.now() - 60_000,
  ...over,
});
const until = () => Math.floor(Date.now() / 1000) + 600;

async function waitUntil(what: string, ok: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const t0 = performance.now();
  while (!(await ok())) {
    if (performance.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('token revocations while Redis is away (full mode: saved to the database)', { skip }, () => {
  it('the migration applies on a fresh database and on one made by the Go service, and again without change', async () => {
    for (const goSchema of [false, true]) {
      const db = await createTestDatabase();
      cleanups.push(() => db.drop());
      const c = createPgClient(db.url, { max: 1 });
      try {
        if (goSchema) {
          await c.exec(`CREATE TYPE sex AS ENUM ('male', 'female');
            CREATE TABLE staff ( id INTEGER PRIMARY KEY NOT NULL, password TEXT NOT NULL, department_id SMALLSERIAL NOT NULL);
            CREATE TABLE departments ( id SMALLSERIAL PRIMARY KEY NOT NULL, name TEXT NOT NULL);
            CREATE TABLE students ( id INTEGER PRIMARY KEY NOT NULL, password TEXT NOT NULL, enrollment_start_time TIMESTAMPTZ NOT NULL,
              max_units SMALLINT NOT NULL, remaining_actions SMALLINT NOT NULL, department_id SMALLSERIAL NOT NULL, entry_year SMALLINT NOT NULL, gender sex NOT NULL);
            CREATE TABLE courses ( course_id INTEGER NOT NULL, group_id INTEGER NOT NULL, for_department SMALLSERIAL NOT NULL, name TEXT NOT NULL,
              lecturer TEXT NOT NULL, units SMALLINT NOT NULL, capacity INTEGER NOT NULL, reserve_capacity INTEGER NOT NULL, exam_time TIMESTAMPTZ,
              class_time INTEGER NOT NULL, sex_lock sex, notes TEXT NOT NULL, PRIMARY KEY (course_id, group_id));
            CREATE TABLE enrolled_courses ( id SERIAL PRIMARY KEY NOT NULL, course_id INTEGER NOT NULL, group_id INTEGER NOT NULL, student_id INTEGER NOT NULL, reserved BOOLEAN NOT NULL DEFAULT FALSE);`);
        }
        const applied = await migrate(c);
        assert.ok(applied.includes('008_token_revocations.sql'), JSON.stringify(applied));
        assert.deepEqual(await migrate(c), []);
        const cols = await c.query<{ column_name: string }>("SELECT column_name FROM information_schema.columns WHERE table_name = 'token_revocations' ORDER BY ordinal_position");
        assert.deepEqual(cols.rows.map((r) => r.column_name), ['key', 'until_s', 'at_ms']);
      } finally {
        await c.close();
      }
    }
  });

  it('the backup keeps the later until and cut-off of a key, and forgets (and deletes) expired entries', async () => {
    const url = await migratedDatabase();
    const b = backupOn(url);
    const now = Date.now();
    const s = Math.floor(now / 1000);
    await b.save([{ key: 'u:student:1', until: s + 100, at: now - 5000 }, { key: 'j:old', until: s + 1 }]);
    await b.save([{ key: 'u:student:1', until: s + 50, at: now - 1000 }, { key: 'u:student:1', until: s + 200, at: now - 9000 }, { key: 's:x', until: s + 60 }]);
    const loaded = (await b.load(now)).sort((x, y) => x.key.localeCompare(y.key));
    assert.deepEqual(loaded, [
      { key: 'j:old', until: s + 1 },
      { key: 's:x', until: s + 60 },
      { key: 'u:student:1', until: s + 200, at: now - 1000 },
    ]);
    assert.deepEqual((await b.load(now + 2000)).map((e) => e.key).sort(), ['s:x', 'u:student:1']);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      assert.equal((await c.query("SELECT 1 FROM token_revocations WHERE key = 'j:old'")).rowCount, 0, 'the expired row is deleted');
    } finally {
      await c.end();
    }
  });

  it('a revocation made while Redis is unreachable is answered, survives a restart (Redis still away), and reaches Redis once it is back', async () => {
    const url = await migratedDatabase();
    const prefix = keyPrefix();
    const proxy = await TcpProxy.start('127.0.0.1', Number(new URL(REDIS_URL).port || 6379));
    cleanups.push(() => proxy.close());
    proxy.cut();
    const logs: string[] = [];
    const first = await store(proxy.rewrite(REDIS_URL), prefix, backupOn(url), logs);
    assert.equal(first.connected, false);
    const stolen = token();
    const registrarResetAt = Date.now();
    await first.revocations.revoke({ jti: stolen.jti, sid: stolen.sid, until: until() });
    await first.revocations.revoke({ subject: 'staff:7', at: registrarResetAt, until: until() });
    assert.equal(first.revocations.isRevoked(stolen), true);
    await first.close();

    // The restart: a new process's store over the same database, Redis still away.
    const restartLogs: string[] = [];
    const second = await store(proxy.rewrite(REDIS_URL), prefix, backupOn(url), restartLogs);
    assert.equal(second.connected, false);
    assert.equal(second.revocations.isRevoked(stolen), true, 'the revoked token works again after a restart');
    assert.equal(second.revocations.isRevoked(token({ jti: 'other', sid: 'other-session' })), false);
    assert.equal(second.revocations.isRevoked(token({ jti: 'x', sid: 'y', subject: 'staff:7', authTimeMs: registrarResetAt - 1 })), true);
    assert.equal(second.revocations.isRevoked(token({ jti: 'x', sid: 'y', subject: 'staff:7', authTimeMs: registrarResetAt + 1 })), false);
    assert.ok(
      logs.some((l) => /3 revocations not yet written to redis: 3 are kept in the database/.test(l)),
      `the first store's close said what was not sent to Redis and where it is kept:\n${logs.join('\n')}`,
    );

    // Redis is back: the restarted store writes what it read back, and another instance sees it.
    proxy.resume();
    await waitUntil('reconnected', () => second.connected, 10_000);
    const redis = new Redis(REDIS_URL);
    cleanups.push(async () => redis.disconnect());
    await waitUntil('the entries are in Redis', async () => (await redis.hlen(`${prefix}revocations`)) === 3);
    const third = await store(REDIS_URL, prefix, undefined);
    assert.equal(third.connected, true);
    assert.equal(third.revocations.isRevoked(stolen), true, 'another instance sharing Redis refuses the token');
    assert.equal(third.revocations.isRevoked(token({ jti: 'x', sid: 'y', subject: 'staff:7', authTimeMs: registrarResetAt - 1 })), true);
    assert.ok(restartLogs.some((l) => /revocations saved to the database during a redis outage read back/.test(l)), restartLogs.join('\n'));
  });

  it('while Redis is away, another instance learns a revocation from the database at its periodic resync', async () => {
    const url = await migratedDatabase();
    const prefix = keyPrefix();
    const dead = await deadRedis();
    const a = await store(dead, prefix, backupOn(url), [], 100);
    const b = await store(dead, prefix, backupOn(url), [], 100);
    const t = token({ jti: 'jti-periodic', sid: 'sid-periodic' });
    await a.revocations.revoke({ jti: t.jti, until: until() });
    assert.equal(b.revocations.isRevoked(t), false);
    await waitUntil('the other instance refuses the token', () => b.revocations.isRevoked(t), 3000);
  });

  it('with Redis and the database both unreachable: UNAVAILABLE, and the token is still refused on this instance', async () => {
    const logs: string[] = [];
    const deadDb = `postgres://postgres@127.0.0.1:${await freePort()}/nothing`;
    const c = createRedisCoordination({
      url: await deadRedis(),
      prefix: keyPrefix(),
      logger: createLogger('debug', { write: (l: string) => void logs.push(l) }),
      resyncMs: 60_000,
      backup: backupOn(deadDb),
    });
    cleanups.push(() => c.close());
    // Its start reads the backup first, and fails while that is unreachable (main retries it).
    await assert.rejects(c.start(), (err: unknown) => isEngineError(err) && err.code === 'UNAVAILABLE');
    const t = token({ jti: 'jti-lost', sid: 'sid-lost' });
    await assert.rejects(
      c.revocations.revoke({ jti: t.jti, sid: t.sid, until: until() }),
      (err: unknown) => isEngineError(err) && err.code === 'UNAVAILABLE' && /could not be saved/.test(err.message),
    );
    assert.equal(c.revocations.isRevoked(t), true);
    await c.close();
    assert.ok(logs.some((l) => /could be saved neither to redis nor to the database/.test(l)), logs.join('\n'));
    assert.ok(logs.some((l) => /2 could not be saved there either/.test(l)), logs.join('\n'));
  });

  it('HTTP: POST /logout while Redis is away answers 204, and after a restart the token is still refused', async () => {
    const url = await migratedDatabase();
    const prefix = keyPrefix();
    const dead = await deadRedis();
    const first = await store(dead, prefix, backupOn(url));
    const fx = await createHttpFixture({ now: Date.now(), app: { coordination: first } });
    cleanups.push(() => fx.close());
    const t = fx.studentToken(S.alice);
    expectStatus(await fx.request('GET', '/student/courses', { token: t }), 200);
    expectStatus(await fx.request('POST', '/logout', { token: t }), 204);
    expectError(await fx.request('GET', '/student/courses', { token: t }), 401, 'TOKEN_REVOKED');
    await fx.close();
    await first.close();

    const second = await store(dead, prefix, backupOn(url));
    const fx2 = await createHttpFixture({ now: Date.now(), app: { coordination: second } });
    cleanups.push(() => fx2.close());
    expectError(await fx2.request('GET', '/student/courses', { token: t }), 401, 'TOKEN_REVOKED');
    expectStatus(await fx2.request('GET', '/student/courses', { token: fx2.studentToken(S.bea) }), 200);
  });

  it('the server (src/main.ts, full mode): a logout while Redis is away is answered, a SIGTERM says it is kept in the database, and the restarted server refuses the token', { timeout: 60_000 }, async (t) => {
    await withFaultEnv(t, { students: 3 }, async (env) => {
      // No drain wait at the SIGTERM (5 s by default: nothing here needs it).
      const redisEnv = { REDIS_URL: await deadRedis(), REDIS_PREFIX: keyPrefix(), SHUTDOWN_DRAIN_MS: '0' };
      const first = await env.startEngine(redisEnv);
      const token = env.studentToken(FIRST_STUDENT);
      assert.equal((await env.api.request('GET', '/student/courses', token)).status, 200);
      assert.equal((await env.api.request('POST', '/logout', token)).status, 204);
      assert.equal((await env.api.request('GET', '/student/courses', token)).status, 401);
      await first.child.stop(10_000);
      assert.equal(first.child.exitCode, 0, first.child.output());
      assert.ok(first.child.hasLog((l) => /revocations not yet written to redis: 2 are kept in the database/.test(String(l.msg))), first.child.output());
      assert.ok(first.child.hasLog(msg('stopped')) || first.child.exitCode === 0);

      await env.startEngine(redisEnv);
      const r = await env.api.request('GET', '/student/courses', token);
      assert.equal(r.status, 401, `the revoked token works again after a restart: ${JSON.stringify(r.body)}`);
      assert.equal((r.body as { code?: string }).code, 'TOKEN_REVOKED');
      assert.equal((await env.api.request('GET', '/student/courses', env.studentToken(FIRST_STUDENT + 1))).status, 200);
    });
  });
});
