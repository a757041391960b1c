import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHttpFixture, PASSWORD, S, type HttpFixture } from './support/http-fixture.js';

/** Issue 11: security headers on every route, not only /admin; pages keep the policy they need. */

let fx: HttpFixture;
before(async () => {
  fx = await createHttpFixture();
});
after(async () => {
  await fx.close();
});

describe('security headers on every route', () => {
  it('JSON routes, errors and 404s: nosniff, a deny-all CSP with frame-ancestors none, no framing, no referrer', async () => {
    const replies = [
      await fx.request('GET', '/health'),
      await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD } }),
      await fx.request('POST', '/login', { body: { user: S.alice, password: 'wrong' } }),
      await fx.request('GET', '/student/course', { token: fx.studentToken() }),
      await fx.request('GET', '/student/course'),
      await fx.request('GET', '/no/such/route'),
      await fx.request('POST', '/login', { rawBody: '{bad json' }),
    ];
    for (const r of replies) {
      const where = `${r.status} ${r.raw.slice(0, 80)}`;
      assert.equal(r.headers['x-content-type-options'], 'nosniff', where);
      assert.equal(r.headers['content-security-policy'], "default-src 'none';base-uri 'none';form-action 'none';frame-ancestors 'none'", where);
      assert.equal(r.headers['x-frame-options'], 'SAMEORIGIN', where);
      assert.equal(r.headers['referrer-policy'], 'no-referrer', where);
      assert.match(String(r.headers['strict-transport-security']), /^max-age=\d+$/, where);
    }
  });

  it('/docs gets a policy swagger-ui can run under (own scripts only), /admin keeps its stricter one', async () => {
    for (const url of ['/docs/', '/docs/static/swagger-ui.css', '/docs/json']) {
      const r = await fx.request('GET', url);
      assert.equal(r.status, 200, url);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', url);
      const csp = String(r.headers['content-security-policy']);
      assert.match(csp, /script-src 'self';/, url);
      assert.match(csp, /frame-ancestors 'none'/, url);
      assert.doesNotMatch(csp, /unsafe-eval|script-src[^;]*unsafe-inline/, url);
    }
    const admin = await fx.request('GET', '/admin');
    assert.match(String(admin.headers['content-security-policy']), /^default-src 'none'; script-src 'self'; style-src 'self';/);
    assert.equal(admin.headers['x-content-type-options'], 'nosniff');
  });
});
