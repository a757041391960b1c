import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { loadConfig, ConfigError } from '../src/config.js';
import {
  checkWebhookTarget,
  forbiddenAddressClass,
  forbiddenTargetReason,
  guardedLookup,
  systemResolveHost,
  targetRefusal,
  type ResolveHost,
} from '../src/notices/webhook-target.js';
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
 * A non-internal IPv4 address of the machine running the tests (eth0's, say), or undefined when it
 * has none: the engine's own network address, which a webhook must not reach.
 */
const OWN_V4 = Object.values(networkInterfaces())
  .flatMap((list) => list ?? [])
  .find((i) => i.family === 'IPv4' && !i.internal)?.address;
const NO_OWN_V4 = OWN_V4 === undefined ? 'this machine has no non-internal IPv4 address to test with' : false;

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
      case 'self.test': // this machine's own network address (none: a public one, never connected to)
        return [{ address: OWN_V4 ?? PUBLIC_V4, family: 4 }];
      case 'docs.test':
        return [{ address: '198.51.100.20', family: 4 }];
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

  test('every special-purpose block that is not globally reachable (IANA registries) is refused, naming the block; the globally reachable ones are not', () => {
    const none = () => [];
    // [address, class, the block the reason names]
    const refused: [string, string, string][] = [
      ['192.0.2.2', 'reserved', '192.0.2.0/24, reserved for documentation'],
      ['198.51.100.7', 'reserved', '198.51.100.0/24, reserved for documentation'],
      ['203.0.113.9', 'reserved', '203.0.113.0/24, reserved for documentation'],
      ['198.18.0.1', 'reserved', '198.18.0.0/15, reserved for benchmarking'],
      ['198.19.255.254', 'reserved', '198.18.0.0/15, reserved for benchmarking'],
      ['192.0.0.8', 'reserved', '192.0.0.0/24, reserved for IETF protocol assignments'],
      ['192.88.99.1', 'reserved', '192.88.99.0/24'],
      ['240.0.0.1', 'reserved', '240.0.0.0/4, reserved for future use'],
      ['255.255.255.255', 'reserved', '255.255.255.255/32, the limited broadcast address'],
      ['10.1.2.3', 'private', '10.0.0.0/8, private use'],
      ['100.64.0.1', 'CGNAT', '100.64.0.0/10'],
      ['2001:db8::1', 'reserved', '2001:db8::/32, reserved for documentation'],
      ['3fff::1', 'reserved', '3fff::/20, reserved for documentation'],
      ['100::1', 'reserved', '100::/64, discard-only'],
      ['2001:2::1', 'reserved', '2001:2::/48, reserved for benchmarking'],
      ['2001::1', 'reserved', '2001::/32, Teredo'],
      ['2001:10::1', 'reserved', '2001:10::/28'],
      ['2001:1::4', 'reserved', '2001::/23, reserved for IETF protocol assignments'],
      ['64:ff9b:1::1', 'reserved', '64:ff9b:1::/48'],
      ['5f00::1', 'reserved', '5f00::/16'],
      ['4000::1', 'reserved', 'outside 2000::/3'],
      ['fd00::2', 'private', 'fc00::/7, unique local'],
      ['fe80::1', 'link-local', 'fe80::/10'],
      ['ff0e::1', 'multicast', 'ff00::/8'],
      // 6to4 and NAT64 addresses are judged by the IPv4 address they embed.
      ['2002:a00:1::1', 'private', '10.0.0.0/8'],
      ['2002:c000:202::1', 'reserved', '192.0.2.0/24'],
      ['2002:7f00:1::1', 'loopback', '127.0.0.0/8'],
      ['64:ff9b::198.18.0.1', 'reserved', '198.18.0.0/15'],
      ['::ffff:203.0.113.1', 'reserved', '203.0.113.0/24'],
      ['::8.8.8.8', 'reserved', '::/96'], // IPv4-compatible: deprecated, whatever it embeds
    ];
    for (const [address, cls, block] of refused) {
      assert.equal(forbiddenAddressClass(address), cls, address);
      const reason = forbiddenTargetReason(address, none);
      assert.ok(reason?.startsWith(`${address} is a${cls === 'unspecified' ? 'n' : ''} ${cls} address (`), `${address}: ${reason}`);
      assert.ok(reason?.includes(block), `${address}: ${reason} should name ${block}`);
    }
    // Globally reachable: public unicast, and the registries' globally reachable sub-blocks.
    for (const address of ['8.8.8.8', '198.20.0.1', '203.0.114.1', '192.0.0.9', '192.0.0.10', '2001:1::1', '2001:3::1', '2001:4:112::1', '2001:20::1', '2002:808:808::1', '64:ff9b::8.8.8.8', '2606:4700::1111']) {
      assert.equal(forbiddenAddressClass(address), null, address);
      assert.equal(forbiddenTargetReason(address, none), null, address);
    }
  });

  test("the machine's own interface addresses are refused (an injected list), also embedded in IPv6, at registration and at the delivery's lookup", async () => {
    // Public addresses stand for this machine's: only what the guard says is looked at, nothing is sent.
    const own = () => [PUBLIC_V4, PUBLIC_V6, '127.0.0.1'];
    for (const address of [PUBLIC_V4, `::ffff:${PUBLIC_V4}`, `64:ff9b::${PUBLIC_V4}`, PUBLIC_V6, `[${PUBLIC_V6}]`]) {
      assert.equal(targetRefusal(address, own)?.class, 'this-machine', address);
      assert.match(forbiddenTargetReason(address, own) ?? '', /is an address of this machine/, address);
      assert.equal(targetRefusal(address, () => []), null, `${address} is public when it is not this machine's`);
    }
    // Loopback says already that it is this machine.
    assert.equal(targetRefusal('127.0.0.1', own)?.class, 'loopback');
    assert.equal(targetRefusal('8.8.8.8', own), null);
    // The list is asked at each check: an address the machine gets later (DHCP) is refused from then on.
    let current: string[] = [];
    const changing = () => [...current];
    assert.equal(targetRefusal('8.8.4.4', changing), null);
    current = ['8.8.4.4'];
    assert.equal(targetRefusal('8.8.4.4', changing)?.class, 'this-machine');

    const { resolve } = testResolver();
    for (const url of [`http://${PUBLIC_V4}/hook`, `https://[${PUBLIC_V6}]:8443/hook`, 'https://public.test/hook']) {
      await assert.rejects(
        checkWebhookTarget(new URL(url), resolve, own),
        (e: { code?: string; statusCode?: number; message?: string }) =>
          e.code === 'WEBHOOK_TARGET_FORBIDDEN' && e.statusCode === 400 && /(is|resolves to) an address of this machine .*WEBHOOK_ALLOW_PRIVATE_TARGETS=true/.test(e.message ?? ''),
        url,
      );
      await checkWebhookTarget(new URL(url), resolve, () => []);
    }
    const lookup = guardedLookup(resolve, own);
    const r = await new Promise<{ err: (Error & { code?: string }) | null }>((done) => lookup('public.test', { all: true, family: 0 }, (err) => done({ err })));
    assert.equal(r.err?.code, 'WEBHOOK_TARGET_FORBIDDEN');
    assert.match(r.err?.message ?? '', /public\.test resolves only to refused addresses: .* is an address of this machine/);
  });

  test("this machine's real non-internal addresses (os.networkInterfaces()) are refused by default", { skip: NO_OWN_V4 }, async () => {
    const all = Object.values(networkInterfaces()).flatMap((list) => list ?? []).filter((i) => !i.internal);
    assert.ok(all.length > 0);
    for (const i of all) {
      assert.match(forbiddenTargetReason(i.address) ?? '', /is an address of this machine/, `${i.family} ${i.address}`);
      const host = i.family === 'IPv6' ? `[${i.address}]` : i.address;
      if (i.address.startsWith('fe80:')) continue; // a URL cannot name a link-local address without its zone
      await assert.rejects(
        checkWebhookTarget(new URL(`http://${host}:8080/hook`)),
        (e: { code?: string; message?: string }) => e.code === 'WEBHOOK_TARGET_FORBIDDEN' && /is an address of this machine/.test(e.message ?? ''),
        i.address,
      );
    }
    await assert.rejects(checkWebhookTarget(new URL('http://self.test/hook'), testResolver().resolve), /resolves to an address of this machine/);
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

/** An HTTP listener on this machine's own network address (port picked), recording what it gets. */
async function startOwnAddressListener(address: string): Promise<{ url: string; got: string[]; close: () => Promise<void> }> {
  const got: string[] = [];
  const server = http.createServer((req, res) => {
    got.push(req.url ?? '');
    req.resume();
    res.statusCode = 204;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, address, () => r()));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://${address}:${port}`, got, close: () => new Promise<void>((r) => server.close(() => r())) };
}

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
      assert.match(r.body.reason, /(loopback|private|link-local|unspecified|CGNAT|multicast) address \(in \S+\/\d+, .*\); .*WEBHOOK_ALLOW_PRIVATE_TARGETS=true/, url);
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

  test('registration refuses the IANA special-purpose blocks that are not globally reachable (documentation, benchmarking, ...), naming the block', async () => {
    const refused: [string, RegExp][] = [
      ['http://192.0.2.10:8080/hook', /192\.0\.2\.0\/24, reserved for documentation/],
      ['http://198.51.100.1/', /198\.51\.100\.0\/24, reserved for documentation/],
      ['http://203.0.113.5/', /203\.0\.113\.0\/24, reserved for documentation/],
      ['http://198.18.0.1/', /198\.18\.0\.0\/15, reserved for benchmarking/],
      ['http://192.0.0.170/', /192\.0\.0\.0\/24, reserved for IETF protocol assignments/],
      ['http://240.0.0.1/', /240\.0\.0\.0\/4, reserved for future use/],
      ['http://[2001:db8::1]/', /2001:db8::\/32, reserved for documentation/],
      ['http://[100::1]/', /100::\/64, discard-only/],
      ['http://[2002:a00:1::1]/', /10\.0\.0\.0\/8, private use/], // 6to4 embedding 10.0.0.1
      ['http://docs.test/hook', /resolves to a reserved address \(in 198\.51\.100\.0\/24/],
    ];
    for (const [url, why] of refused) {
      const r = await register(url);
      assert.equal(r.status, 400, `${url}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'WEBHOOK_TARGET_FORBIDDEN', url);
      assert.match(r.body.reason, why, url);
      assert.match(r.body.reason, /WEBHOOK_ALLOW_PRIVATE_TARGETS=true/, url);
    }
    assert.doesNotMatch((await register('http://docs.test/hook')).body.reason, /198\.51\.100\.20/, 'what a name resolved to is not told');
    assert.equal((await w.call('GET', '/webhooks', w.token(STAFF, 'staff'))).body.webhooks.filter((h: { active: boolean }) => h.active).length, 0, 'nothing was stored');
  });

  test("registration refuses this machine's own network address, literal or by name", { skip: NO_OWN_V4 }, async () => {
    for (const url of [`http://${OWN_V4}:8080/hook`, `http://[::ffff:${OWN_V4}]/hook`, 'http://self.test/hook']) {
      const r = await register(url);
      assert.equal(r.status, 400, `${url}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'WEBHOOK_TARGET_FORBIDDEN', url);
      assert.match(r.body.reason, /(is|resolves to) an address of this machine .*WEBHOOK_ALLOW_PRIVATE_TARGETS=true/, url);
    }
    assert.equal((await w.call('GET', '/webhooks', w.token(STAFF, 'staff'))).body.webhooks.filter((h: { active: boolean }) => h.active).length, 0, 'nothing was stored');
  });

  test("delivery refuses this machine's own network address (a stored row, a name resolving to it), and nothing reaches a service listening there", { skip: NO_OWN_V4 }, async () => {
    const notices = store.notices!;
    const staff = w.token(STAFF, 'staff');
    const listener = await startOwnAddressListener(OWN_V4!);
    try {
      const port = new URL(listener.url).port;
      const literal = await notices.createWebhook({ url: `${listener.url}/own-literal`, secret: SECRET, kinds: null, createdBy: STAFF });
      const named = await notices.createWebhook({ url: `http://self.test:${port}/own-named`, secret: SECRET, kinds: null, createdBy: STAFF });
      const hooks = [literal.id, named.id];
      await notices.insertDeliveries(hooks.map((webhookId) => ({ webhookId, noticeKey: `own-${webhookId}`, kind: 'promoted', studentId: S.alice, body: '{"type":"notice"}' })));
      w.webhooks!.wake();
      for (const id of hooks) {
        await until(async () => {
          const d = (await w.call('GET', `/webhooks/${id}/deliveries`, staff)).body.deliveries[0];
          return d?.status === 'dead' || d?.status === 'delivered';
        }, `webhook ${id}'s delivery to finish`);
        const [d] = (await w.call('GET', `/webhooks/${id}/deliveries`, staff)).body.deliveries;
        assert.equal(d.status, 'dead', JSON.stringify(d));
        for (const a of d.attempt_log) {
          assert.equal(a.status_code, null, 'no answer: nothing was sent');
          assert.match(a.error, /^WEBHOOK_TARGET_FORBIDDEN: .*is an address of this machine/);
        }
        await w.call('DELETE', `/webhooks/${id}`, staff);
      }
      assert.deepEqual(listener.got, [], `the service on ${OWN_V4} got nothing`);
    } finally {
      await listener.close();
    }
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
      // Non-global special-purpose blocks and this machine's own address are allowed too.
      for (const url of ['http://198.18.0.1/hook', 'http://192.0.2.10/hook', 'http://[2001:db8::1]/hook', ...(OWN_V4 ? [`http://${OWN_V4}:8080/hook`] : [])]) {
        const r = await w.call('POST', '/webhooks', staff, { url, secret: SECRET });
        assert.equal(r.status, 201, `${url}: ${JSON.stringify(r.body)}`);
        assert.equal((await w.call('DELETE', `/webhooks/${r.body.id}`, staff)).status, 204);
      }
      if (OWN_V4) {
        const listener = await startOwnAddressListener(OWN_V4);
        try {
          const r = await w.call('POST', '/webhooks', staff, { url: `${listener.url}/own`, secret: SECRET });
          assert.equal(r.status, 201, JSON.stringify(r.body));
          await store.notices!.insertDeliveries([{ webhookId: r.body.id, noticeKey: 'allowed-own', kind: 'promoted', studentId: S.alice, body: '{"type":"notice"}' }]);
          w.webhooks!.wake();
          await until(async () => (await w.call('GET', `/webhooks/${r.body.id}/deliveries`, staff)).body.deliveries[0]?.status === 'delivered', 'the delivery to this machine');
          assert.deepEqual(listener.got, ['/own']);
        } finally {
          await listener.close();
        }
      }
    } finally {
      await w.stop();
      await receiver.close();
      await store.close();
    }
  });
});
