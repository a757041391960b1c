import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import pg from 'pg';
import { pino } from 'pino';
import { createRedisCoordination } from '../src/coordination/redis.js';
import { createLogger } from '../src/logger.js';
import { AmqpLog } from '../src/persistence/amqp-log.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { storageSettingHint } from '../src/persistence/setting-hints.js';
import { AMQP_URL, PG_ADMIN_URL, REDIS_URL, requireService } from './support/services.js';

/**
 * Probe J: a wrong setting looked exactly like an outage at start ("unreachable", retried for
 * ever). The drivers' real failures (never stand-ins) are told apart: a setting to fix, or an
 * outage to wait out; and no URL (which may hold a password) is quoted.
 */
const silent = pino({ level: 'silent' });

async function dbFailure(url: string): Promise<unknown> {
  const db = createPgClient(url);
  try {
    await db.query('SELECT 1');
    return null;
  } catch (err) {
    return err;
  } finally {
    await db.close();
  }
}

async function brokerFailure(url: string): Promise<unknown> {
  const log = new AmqpLog({ url, stream: `hints-${randomUUID()}`, logger: silent });
  try {
    await log.connect();
    return null;
  } catch (err) {
    return err;
  } finally {
    await log.close();
  }
}

describe('storage failures at start that are settings, not outages', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('the database: a database that is not there, a user it does not know, a host that does not resolve; a refused port is an outage', { skip }, async () => {
    const base = new URL(PG_ADMIN_URL);
    const missing = new URL(base);
    missing.pathname = `/no_such_db_${randomUUID().slice(0, 8)}`;
    assert.equal(storageSettingHint(await dbFailure(missing.href)), 'the database named in DATABASE_URL does not exist');
    const badHost = new URL(base);
    badHost.hostname = 'no-such-host.invalid';
    assert.equal(storageSettingHint(await dbFailure(badHost.href)), 'the host name of DATABASE_URL does not resolve');
    // The server here trusts local connections (no password is checked), but a user it does not know is refused.
    const noRole = new URL(base);
    noRole.username = `no_such_role_${randomUUID().slice(0, 8)}`;
    assert.equal(storageSettingHint(await dbFailure(noRole.href)), 'the database refused the user or password of DATABASE_URL');
    const closed = new URL(base);
    closed.port = '1';
    assert.equal(storageSettingHint(await dbFailure(closed.href)), null);
  });

  test('a DATABASE_URL without a user name, where the OS account has no name either: the hint says to put the user in the URL', { skip: skip || (process.env.PGUSER ? 'PGUSER is set' : false) }, async () => {
    const noUser = new URL(PG_ADMIN_URL);
    noUser.username = '';
    // What pg-client.ts leaves in the driver's defaults when neither $USER nor the OS account has a name.
    const saved = pg.defaults.user;
    pg.defaults.user = undefined;
    try {
      const err = await dbFailure(noUser.href);
      assert.match(String(err), /no PostgreSQL user name specified/);
      assert.equal(storageSettingHint(err), 'DATABASE_URL names no user, and the OS account has no name to use instead: put the user in the URL (postgres://USER@host/db)');
    } finally {
      pg.defaults.user = saved;
    }
  });

  test('the broker: a wrong password, a virtual host that is not there, a host that does not resolve; a refused port is an outage', { skip }, async () => {
    const base = new URL(AMQP_URL);
    const wrong = new URL(base);
    wrong.password = `wrong-${randomUUID().slice(0, 8)}`;
    const refused = await brokerFailure(wrong.href);
    assert.equal(storageSettingHint(refused), 'the message broker refused the user or password of RABBITMQ_URL');
    assert.doesNotMatch(String((refused as Error).message), /wrong-/, 'the password is not quoted');
    const vhost = new URL(base);
    vhost.pathname = `/no-such-vhost-${randomUUID().slice(0, 8)}`;
    assert.match(String(storageSettingHint(await brokerFailure(vhost.href))), /virtual host of RABBITMQ_URL/);
    const badHost = new URL(base);
    badHost.hostname = 'no-such-host.invalid';
    assert.equal(storageSettingHint(await brokerFailure(badHost.href)), 'the host name of RABBITMQ_URL does not resolve');
    const closed = new URL(base);
    closed.port = '1';
    assert.equal(storageSettingHint(await brokerFailure(closed.href)), null);
  });
});

describe('Redis at start: a host name that does not resolve is said, not taken for an outage', () => {
  test('the warning names the setting (and no URL); a refused port stays an outage', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const bad = createRedisCoordination({ url: 'redis://:s3cret@no-such-host.invalid:6379', prefix: `hints-${randomUUID()}:`, logger });
    const down = createRedisCoordination({ url: 'redis://127.0.0.1:1', prefix: `hints-${randomUUID()}:`, logger });
    try {
      await bad.start();
      await down.start();
      const msgs = lines.map((l) => String(l.msg));
      assert.ok(msgs.some((m) => m.includes('the host name of REDIS_URL does not resolve')), msgs.join('\n'));
      assert.ok(msgs.some((m) => m.includes('(ECONNREFUSED)')), msgs.join('\n'));
      assert.doesNotMatch(JSON.stringify(lines), /s3cret/);
    } finally {
      await bad.close();
      await down.close();
    }
  });
});

describe('Redis at start: a refused password is said, not taken for an outage', async () => {
  const skip = await requireService('Redis', REDIS_URL);
  test('a wrong password of an ACL user: the warning names REDIS_URL, and the password is not logged (ioredis puts it on the error)', { skip }, async () => {
    const { Redis } = await import('ioredis');
    const admin = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await admin.connect();
    // A user of this test's own, removed afterwards (the shared Redis has no password otherwise).
    const user = `hints-${randomUUID().slice(0, 8)}`;
    await admin.call('ACL', 'SETUSER', user, 'on', '>the-right-password', '~*', '&*', '+@all');
    const lines: Record<string, unknown>[] = [];
    // The engine's own logger: ioredis puts the failed command (HELLO 3 AUTH <user> <password>) on its error.
    const logger = createLogger('warn', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const url = new URL(REDIS_URL);
    url.username = user;
    url.password = 'a-wrong-s3cret';
    const refused = createRedisCoordination({ url: url.href, prefix: `hints-${randomUUID()}:`, logger });
    try {
      await refused.start();
      const msgs = lines.map((l) => String(l.msg));
      assert.ok(msgs.some((m) => m.includes('redis refused the user or password of REDIS_URL')), msgs.join('\n'));
      assert.ok(lines.length > 0);
      assert.doesNotMatch(JSON.stringify(lines), /a-wrong-s3cret/, 'the password is in the log');
      assert.ok(JSON.stringify(lines).includes('"command":{"name":"hello"}'), 'the failed command is still named');
    } finally {
      await refused.close();
      await admin.call('ACL', 'DELUSER', user).catch(() => undefined);
      admin.disconnect();
    }
  });
});
