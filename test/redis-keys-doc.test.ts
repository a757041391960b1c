import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { createRedisCoordination } from '../src/coordination/redis.js';
import { createLogger } from '../src/logger.js';
import { createHttpFixture, expectStatus, PASSWORD, S, STAFF, type HttpFixture } from './support/http-fixture.js';
import { deleteRedisKeys, REDIS_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe O2, finding 5: docs/operations.md lists the Redis keys an operator finds under
 * REDIS_PREFIX, and missed `logouts:<role>:<id>`. Here the real app on a real Redis (a prefix of
 * its own) logs in, fails a login, enrolls and logs out a student and a staff member; every key it
 * made must be in the list, with ids and addresses written as the docs write them.
 */

describe('the Redis keys docs/operations.md lists', async () => {
  const skip = await requireService('Redis', REDIS_URL);
  const prefix = `${uniqueName('keys-doc')}:`;
  let fx: HttpFixture | null = null;
  let store: ReturnType<typeof createRedisCoordination> | null = null;
  after(async () => {
    await fx?.close();
    await store?.close();
    if (!skip) await deleteRedisKeys([prefix]);
  });

  test('are every key the engine makes', { skip, timeout: 30_000 }, async () => {
    store = createRedisCoordination({ url: REDIS_URL, prefix, logger: createLogger('silent'), resyncMs: 60_000 });
    await store.start();
    fx = await createHttpFixture({ logLevel: 'silent', app: { coordination: store, throttle: { studentWriteLimit: 30 } } });
    expectStatus(await fx.request('POST', '/login', { body: { user: S.alice, password: 'wrong-password' } }), 401);
    const student = (await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD } })).body.token as string;
    expectStatus(await fx.request('PUT', '/student/course', { token: student, body: { course_id: 108, group_id: 1 } }), 204);
    expectStatus(await fx.request('POST', '/logout', { token: student }), 204);
    const staff = (await fx.request('POST', '/login', { body: { user: STAFF, password: PASSWORD, staff: true } })).body.token as string;
    expectStatus(await fx.request('POST', '/logout', { token: staff }), 204);

    const redis = new Redis(REDIS_URL);
    let keys: string[];
    try {
      keys = await redis.keys(`${prefix}*`);
    } finally {
      redis.disconnect();
    }
    // inject's client address is 127.0.0.1; ids are the only numbers left after it.
    const patterns = [...new Set(keys.map((k) => k.slice(prefix.length).replace('127.0.0.1', '<address>').replace(/\d+/g, '<id>')))].sort();
    assert.ok(patterns.includes('logouts:student:<id>') && patterns.includes('logouts:staff:<id>') && patterns.includes('writes:student:<id>'), patterns.join(', '));
    const docs = readFileSync('docs/operations.md', 'utf8');
    const undocumented = patterns.filter((p) => !docs.includes(`\`<REDIS_PREFIX>${p}\``));
    assert.deepEqual(undocumented, [], `keys under REDIS_PREFIX that docs/operations.md does not list: ${undocumented.join(', ')}`);
  });
});
