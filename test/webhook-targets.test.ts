import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { after, before, describe, test } from 'node:test';
import { loadConfig, ConfigError } from '../src/config.js';
import { checkWebhookTarget, forbiddenAddressClass, guardedLookup, systemResolveHost, type ResolveHost } from '../src/notices/webhook-target.js';
import { createDatabaseDeliveryQueue } from '../src/persistence/delivery-queue.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import type { Persistence } from '../src/persistence/types.js';
import { S, STAFF } from './support/http-fixture.js';
import { quietLogger, startNoticesWorld, type NoticesWorld } from './support/notices-world.js';
import { startWebhookReceiver } from './support/webhook-receiver.js';

/**
 * Webhook targets on internal networks (SSRF): refused by default at registration (400
 * WEBHOOK_TARGET_FORBIDDEN, nothing stored) and again at delivery, where a name is resolved anew
 * and only allowed addresses are connected to (DNS rebinding); allowed with
 * WEBHOOK_ALLOW_PRIVATE_TARGETS=true. Nothing here is ever sent to the internet: public addresses
 * are only registered, then stopped before any notice exists.
 */

const SECRET = 'ssrf-test-webhook-secret-0123456789';
/** A public address (example.com's): registered only, never delivered to. */
const PUBLIC_V4 = '93.184.215.14';
const PUBLIC_V6 = '2606:2800:21f:cb07:6820:80da:af6b:8b2c';

/**
 * Names under `.test` (RFC 2606: never in real DNS) resolve as the test says; anything else goes to
 * the system resolver (`localhost` resolves to loopback from /etc/hosts). `rebind.test` answers a
 * public address to its first question and loopback afterwards, as a rebinding attacker's DNS does.
 */
function testResolver(): { resolve: ResolveHost; asked: string[] } {
  const asked: string[] = [];
  let rebindAnswers = 0;
  const resolve: ResolveHost = async (host) => {
    asked.push(host);
    switch (host) {
      case 'public.test':
        return [{ address: PUBLIC_V4, family: 4 }];
      case 'mixed.test':
        return [{ address: PUBLIC_V4, family: 4 }, { address: '10.1.2.3', family: 4 }];
      case 'metadata.test':
        return [{ address: '169.254.169.254', family: 4 }];
      case 'mapped.test':
        return [{ address: '::ffff:127.0.0.1', family: 6 }];
      case 'rebind.test':
        return rebindAnswers++ === 0 ? [{ address: PUBLIC_V4, family: 4 }] : [{ address: '127.0.0.1', family: 4 }];
      case 'nowhere.test':
        throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.test'), { code: 'ENOTFOUND' });
      default:
        return systemResolveHost(host);
    }
  };
  return { resolve, asked };
}

async function until(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('webhook target addresses (unit)', () => {
  test('internal addresses of every class are forbidden, public ones are not', () => {
    const cases: [string, string | null][] = [
      ['127.0.0.1', 'loopback'],
      ['127.255.0.9', 'loopback'],
      ['10.0.0.1', 'private'],
      ['172.16.0.1', 'private'],
      ['172.31.255.254', 'private'],
      ['192.168.1.1', 'private'],
      ['169.254.169.254', 'link-local'],
      ['169.254.0.1', 'link-local'],
      ['0.0.0.0', 'unspecified'],
      ['100.64.0.1', 'CGNAT'],
      ['100.127.255.254', 'CGNAT'],
      ['224.0.0.251', 'multicast'],
      ['255.255.255.255', 'reserved'],
      ['::1', 'loopback'],
      ['[::1]', 'loopback'],
      ['::', 'unspecified'],
      ['fc00::1', 'private'],
      ['fd12:3456:789a::1', 'private'],
      ['fe80::1', 'link-local'],
      ['fe80::1%eth0', 'link-local'],
      ['ff02::1', 'multicast'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['::ffff:7f00:1', 'loopback'],
      ['::ffff:a9fe:a9fe', 'link-local'],
      ['::ffff:10.0.0.1', 'private'],
      ['0:0:0:0:0:ffff:c0a8:0101', 'private'],
      ['64:ff9b::10.0.0.1', 'private'],
      ['::127.0.0.1', 'loopback'],
      [PUBLIC_V4, null],
      ['8.8.8.8', null],
      ['172.32.0.1', null],
      ['100.128.0.1', null],
      ['::ffff:8.8.8.8', null],
      [PUBLIC_V6, null],
      ['localhost', null], // a name: judged by what it resolves to
    ];
    for (const [address, cls] of cases) assert.equal(forbiddenAddressClass(address), cls, address);
  });

  test('registration resolves a name and refuses it when any of its addresses is internal', async () => {
    const { resolve } = testResolver();
    await checkWebhookTarget(new URL('https://public.test/hook'), resolve);
    for (const [url, code] of [
      ['http://localhost/x', 'WEBHOOK_TARGET_FORBIDDEN'],
      ['http://mixed.test/x', 'WEBHOOK_TARGET_FORBIDDEN'],
      ['http://metadata.test/x', 'WEBHOOK_TARGET_FORBIDDEN'],
      ['http://mapped.test/x', 'WEBHOOK_TARGET_FORBIDDEN'],
      ['http://nowhere.test/x', 'WEBHOOK_TARGET_UNRESOLVED'],
    ] as const) {
      await assert.rejects(checkWebhookTarget(new URL(url), resolve), (e: { code?: string; statusCode?: number }) => e.code === code && e.statusCode === 400, url);
    }
  });

  test("the delivery's lookup hands the socket only allowed addresses, and fails when none is", async () => {
    const { resolve } = testResolver();
    const lookup = guardedLookup(resolve);
    const ask = (host: string, all: boolean) =>
      new Promise<{ err: (Error & { code?: string }) | null; address: string | LookupAddress[] }>((done) =>
        lookup(host, { all, family: 0 }, (err, address) => done({ err, address })),
      );
    const mixed = await ask('mixed.test', true);
    assert.equal(mixed.err, null);
    assert.deepEqual(mixed.address, [{ address: PUBLIC_V4, family: 4 }], 'the internal address is filtered out');
    assert.equal((await ask('mixed.test', false)).address, PUBLIC_V4);
    for (const host of ['localhost', 'metadata.test', 'mapped.test']) {
      for (const all of [true, false]) {
        const r = await ask(host, all);
        assert.equal(r.err?.code, 'WEBHOOK_TARGET_FORBIDDEN', host);
        assert.match(r.err?.message ?? '', /WEBHOOK_TARGET_FORBIDDEN: .* (loopback|link-local) address/);
      }
    }
  });
});

describe('WEBHOOK_ALLOW_PRIVATE_TARGETS', () => {
  test('is false by default, read as a boolean, and a bad value is a configuration problem', () => {
    assert.equal(loadConfig({}).webhookAllowPrivateTargets, false);
    assert.equal(loadConfig({ WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' }).webhookAllowPrivateTargets, true);
    assert.equal(loadConfig({ WEBHOOK_ALLOW_PRIVATE_TARGETS: 'false' }).webhookAllowPrivateTargets, false);
    assert.throws(
      () => loadConfig({ WEBHOOK_ALLOW_PRIVATE_TARGETS: 'sometimes' }),
      (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('WEBHOOK_ALLOW_PRIVATE_TARGETS')),
    );
  });
});

async function openStore(): Promise<Persistence> {
  const store = await createEmbeddedStore({ dataDir: null, logger: quietLogger, batchMaxEvents: 500, groupCommitLingerMs: 1 });
  await store.migrate();
  return store;
}

describe('webhook targets through the API (embedded store, allowance off: the default)', { timeout: 120_000 }, () => {
  let store: Persistence;
  let w: NoticesWorld;
  let receiver: Awaited<ReturnType<typeof startWebhookReceiver>>;
  const resolver = testResolver();

  before(async () => {
    store = await openStore();
    receiver = await startWebhookReceiver();
    w = await startNoticesWorld({
      persistence: store,
      seed: true,
      queue: (p) => createDatabaseDeliveryQueue({ store: p.notices!, logger: quietLogger, pollMs: 50 }),
      // No allowPrivateTargets: the default is what is tested.
      webhooks: { maxAttempts: 2, baseDelayMs: 50, resolveHost: resolver.resolve },
    });
  });
  after(async () => {
    await w.stop();
    await receiver.close();
    await store.close();
  });

  const register = (url: string) => w.call('POST', '/webhooks', w.token(STAFF, 'staff'), { url, secret: SECRET });

  test('registration refuses loopback, private, link-local, CGNAT, unspecified, multicast and mapped targets: 400 with a reason, nothing stored', async () => {
    const port = new URL(receiver.url).port;
    const refused = [
      'http://169.254.169.254/latest/meta-data/',
      'http://127.0.0.1:6379/',
      `${receiver.url}/hook`,
      'http://10.0.0.1:8080/admin',
      'http://172.16.4.5/',
      'http://192.168.0.10/',
      'http://100.64.1.1/',
      'http://0.0.0.0:8080/',
      'http://224.0.0.1/',
      'http://2130706433/', // 127.0.0.1 spelled as one number
      'http://0x7f.1/', // and in hex
      'http://[::1]:5432/',
      'http://[::]/',
      'http://[fc00::1]/',
      'http://[fd00:ec2::254]/',
      'http://[fe80::1]/',
      'http://[ff02::1]/',
      'http://[::ffff:127.0.0.1]/',
      'http://[::ffff:169.254.169.254]/',
      'http://[::ffff:10.0.0.1]/',
      `http://localhost:${port}/hook`, // a name that resolves to loopback
      'http://localhost:15672/api/users',
      'http://metadata.test/', // a name that resolves to the metadata address
      'http://mixed.test/', // one of its addresses is private
    ];
    for (const url of refused) {
      const r = await register(url);
      assert.equal(r.status, 400, `${url}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'WEBHOOK_TARGET_FORBIDDEN', url);
      assert.match(r.body.reason, /(loopback|private|link-local|unspecified|CGNAT|multicast) address; .*WEBHOOK_ALLOW_PRIVATE_TARGETS=true/, url);
    }
    const unresolved = await register('http://nowhere.test/hook');
    assert.equal(unresolved.status, 400);
    assert.equal(unresolved.body.code, 'WEBHOOK_TARGET_UNRESOLVED');
    assert.equal((await w.call('GET', '/webhooks', w.token(STAFF, 'staff'))).body.webhooks.length, 0, 'nothing was stored');
  });

  test('public targets (literal IPv4, IPv6 and a name resolving to public addresses) are accepted; registration only, never delivered', async () => {
    const staff = w.token(STAFF, 'staff');
    for (const url of [`http://${PUBLIC_V4}/hook`, `https://[${PUBLIC_V6}]/hook`, 'https://public.test/hook']) {
      const r = await register(url);
      assert.equal(r.status, 201, `${url}: ${JSON.stringify(r.body)}`);
      // Stopped at once: no notice exists yet, so nothing is ever sent to the internet.
      assert.equal((await w.call('DELETE', `/webhooks/${r.body.id}`, staff)).status, 204);
    }
    assert.ok(resolver.asked.includes('public.test'), 'the name was resolved at registration');
  });

  test('delivery refuses an internal target even when registration was bypassed: a stored loopback URL, a name resolving to loopback, DNS rebinding', async () => {
    const notices = store.notices!;
    const staff = w.token(STAFF, 'staff');
    const port = new URL(receiver.url).port;
    // DNS rebinding: rebind.test resolved to a public address when registered, to 127.0.0.1 (where
    // the receiver listens) at delivery.
    const rebind = await register(`http://rebind.test:${port}/rebind`);
    assert.equal(rebind.status, 201, JSON.stringify(rebind.body));
    // Rows written straight into the store, as by an older version that did not check, or by hand.
    const literal = await notices.createWebhook({ url: `${receiver.url}/literal`, secret: SECRET, kinds: null, createdBy: STAFF });
    const named = await notices.createWebhook({ url: `http://localhost:${port}/named`, secret: SECRET, kinds: null, createdBy: STAFF });
    const mapped = await notices.createWebhook({ url: `http://[::ffff:127.0.0.1]:${port}/mapped`, secret: SECRET, kinds: null, createdBy: STAFF });
    const hooks = [rebind.body.id as number, literal.id, named.id, mapped.id];
    const ids = await notices.insertDeliveries(
      hooks.map((webhookId) => ({ webhookId, noticeKey: `ssrf-${webhookId}`, kind: 'promoted', studentId: S.alice, body: '{"type":"notice"}' })),
    );
    assert.equal(ids.length, hooks.length);
    w.webhooks!.wake();

    for (const id of hooks) {
      await until(async () => (await w.call('GET', `/webhooks/${id}/deliveries`, staff)).body.deliveries[0]?.status === 'dead', `webhook ${id}'s delivery to be dead-lettered`);
      const [d] = (await w.call('GET', `/webhooks/${id}/deliveries`, staff)).body.deliveries;
      assert.equal(d.attempts, 2, 'refused attempts are recorded and retried like failed ones');
      for (const a of d.attempt_log) {
        assert.equal(a.status_code, null, 'no answer: nothing was sent');
        assert.match(a.error, /^WEBHOOK_TARGET_FORBIDDEN: .*loopback address/);
      }
    }
    assert.deepEqual(receiver.got, [], 'the receiver on 127.0.0.1 got nothing');
    assert.ok(resolver.asked.filter((h) => h === 'rebind.test').length >= 3, 'the name was resolved again at each delivery');
    // Nothing crashed: the server still answers.
    assert.equal((await w.call('GET', '/webhooks', staff)).status, 200);
  });
});

describe('webhook targets with WEBHOOK_ALLOW_PRIVATE_TARGETS=true (embedded store)', { timeout: 120_000 }, () => {
  test('loopback targets are accepted, literal or by name, and delivered', async () => {
    const store = await openStore();
    const receiver = await startWebhookReceiver();
    const w = await startNoticesWorld({
      persistence: store,
      seed: true,
      queue: (p) => createDatabaseDeliveryQueue({ store: p.notices!, logger: quietLogger, pollMs: 50 }),
      webhooks: { maxAttempts: 2, baseDelayMs: 50, allowPrivateTargets: true },
    });
    try {
      const staff = w.token(STAFF, 'staff');
      const port = new URL(receiver.url).port;
      const hooks: number[] = [];
      for (const url of [`${receiver.url}/literal`, `http://localhost:${port}/named`]) {
        const r = await w.call('POST', '/webhooks', staff, { url, secret: SECRET });
        assert.equal(r.status, 201, `${url}: ${JSON.stringify(r.body)}`);
        hooks.push(r.body.id);
      }
      await store.notices!.insertDeliveries(hooks.map((webhookId) => ({ webhookId, noticeKey: `allowed-${webhookId}`, kind: 'promoted', studentId: S.alice, body: '{"type":"notice"}' })));
      w.webhooks!.wake();
      for (const id of hooks) {
        await until(async () => (await w.call('GET', `/webhooks/${id}/deliveries`, staff)).body.deliveries[0]?.status === 'delivered', `webhook ${id}'s delivery`);
      }
      assert.deepEqual(receiver.got.map((r) => r.path).sort(), ['/literal', '/named']);
    } finally {
      await w.stop();
      await receiver.close();
      await store.close();
    }
  });
});
