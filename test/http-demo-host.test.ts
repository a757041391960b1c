import assert from 'node:assert/strict';
import net from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { isLoopbackHostHeader } from '../src/http/host-guard.js';
import { createHttpFixture, expectError, expectStatus, PASSWORD, STAFF, type HttpFixture } from './support/http-fixture.js';

/**
 * Probe F5: while the demo's public passwords are live (on a loopback listener), a web page that
 * points its own name at 127.0.0.1 (DNS rebinding) must not reach the demo admin. Requests whose
 * Host is not a loopback name or address are refused (421 DEMO_HOST_REFUSED); /health and /ready
 * answer whatever the Host; outside demo mode nothing changes.
 */

let fx: HttpFixture | null = null;
afterEach(async () => {
  await fx?.close();
  fx = null;
});

const LOOPBACK = ['localhost', 'localhost:8080', 'LocalHost:1', 'localhost.', 'admin.localhost:8080', '127.0.0.1', '127.0.0.1:8080', '127.8.9.10:80', '[::1]', '[::1]:8080', '[0:0:0:0:0:0:0:1]:8080', '[::ffff:127.0.0.1]:8080'];
const OTHERS = ['attacker.example', 'attacker.example:8080', 'localhost.attacker.example', 'localhost:8080.attacker.example', '127.0.0.1.nip.io', '10.0.0.5:8080', '0.0.0.0:8080', '[::]:8080', '[fe80::1]', '::1', 'localhost:80:80', '[::1', '', 'localhostx'];

describe('the Host header while the demo accounts are live', () => {
  it('tells loopback names and addresses from anything else', () => {
    for (const h of LOOPBACK) assert.equal(isLoopbackHostHeader(h), true, h);
    for (const h of OTHERS) assert.equal(isLoopbackHostHeader(h), false, h);
  });

  it('refuses a login and a staff request addressed to another name (DNS rebinding), with the reason and nothing done', async () => {
    fx = await createHttpFixture({ app: { loopbackHostsOnly: true } });
    const login = await fx.request('POST', '/login', {
      body: { user: STAFF, password: PASSWORD, staff: true },
      headers: { host: 'attacker.example:8080', 'content-type': 'text/plain' },
    });
    expectError(login, 421, 'DEMO_HOST_REFUSED');
    assert.equal(login.body.token, undefined);
    assert.match(login.body.reason, /demo accounts.*localhost, 127\.0\.0\.1 or \[::1\].*"attacker\.example:8080".*DNS rebinding.*http:\/\/localhost/);
    assert.equal(typeof login.headers['x-request-id'], 'string', 'the refusal carries the request id');
    assert.equal(login.headers['x-content-type-options'], 'nosniff', 'and the security headers');

    const token = fx.staffToken();
    expectError(await fx.request('GET', '/sections', { token, headers: { host: 'attacker.example' } }), 421, 'DEMO_HOST_REFUSED');
    expectError(await fx.request('POST', '/sections/101/1/close', { token, headers: { host: '10.0.0.5:8080' } }), 421, 'DEMO_HOST_REFUSED');
    const section = await fx.request('GET', '/sections/101/1', { token, headers: { host: 'localhost' } });
    expectStatus(section, 200);
    assert.equal(section.body.closed, false, 'the refused close did nothing');
    expectError(await fx.request('GET', '/docs/json', { headers: { host: 'attacker.example' } }), 421, 'DEMO_HOST_REFUSED');
    expectError(await fx.request('GET', '/no-such-route', { headers: { host: 'attacker.example' } }), 421, 'DEMO_HOST_REFUSED');

    for (const host of ['localhost:8080', '127.0.0.1:8080', '[::1]:8080', 'demo.localhost']) {
      expectStatus(await fx.request('GET', '/sections', { token, headers: { host } }), 200);
    }
    const ok = await fx.request('POST', '/login', { body: { user: STAFF, password: PASSWORD, staff: true }, headers: { host: 'localhost:8080' } });
    expectStatus(ok, 200);
    assert.equal(typeof ok.body.token, 'string');
  });

  it('answers /health and /ready whatever the Host (orchestrators probe by IP; they carry nothing a page could use)', async () => {
    fx = await createHttpFixture({ app: { loopbackHostsOnly: true } });
    for (const url of ['/health', '/ready', '/health?x=1', '/ready/']) {
      expectStatus(await fx.request('GET', url, { headers: { host: '10.1.2.3:8080' } }), 200);
    }
    expectStatus(await fx.request('HEAD', '/health', { headers: { host: 'attacker.example' } }), 200);
    expectError(await fx.request('GET', '/', { headers: { host: '10.1.2.3:8080' } }), 421, 'DEMO_HOST_REFUSED');
  });

  it('two Host headers, or an absolute-form target naming another host, are refused too (RFC 9112: the target\'s authority wins)', async () => {
    fx = await createHttpFixture({ app: { loopbackHostsOnly: true } });
    await fx.app.listen({ host: '127.0.0.1', port: 0 });
    const port = (fx.app.server.address() as net.AddressInfo).port;
    const token = fx.staffToken();
    const send = (head: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port }, () => s.write(`${head}Authorization: Bearer ${token}\r\nConnection: close\r\n\r\n`));
        let got = '';
        s.on('data', (d) => (got += d.toString('latin1')));
        s.on('end', () => resolve(got));
        s.on('error', reject);
      });
    const status = (reply: string) => reply.split('\r\n', 1)[0];
    assert.match(status(await send('GET /sections HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\n')) ?? '', / 421 /);
    assert.match(status(await send('GET http://attacker.example/sections HTTP/1.1\r\nHost: localhost\r\n')) ?? '', / 421 /);
    assert.match(status(await send('GET http://localhost:8080/sections HTTP/1.1\r\nHost: localhost\r\n')) ?? '', / 200 /);
    assert.match(status(await send('GET /sections HTTP/1.1\r\nHost: localhost\r\n')) ?? '', / 200 /);
  });

  it('outside demo mode any Host is served as before', async () => {
    fx = await createHttpFixture();
    expectStatus(await fx.request('GET', '/sections', { token: fx.staffToken(), headers: { host: 'attacker.example:8080' } }), 200);
    expectStatus(await fx.request('POST', '/login', { body: { user: STAFF, password: PASSWORD, staff: true }, headers: { host: 'enroll.example.edu' } }), 200);
  });
});
