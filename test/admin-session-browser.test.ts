import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createHttpFixture, PASSWORD, STAFF, type HttpFixture } from './support/http-fixture.js';

/**
 * The admin page keeps its session: it trades its token for a fresh one (POST /refresh) before the
 * token expires, so a registrar is not logged out at every token expiry while the session lasts.
 * Tokens live 5 s here; the server's clock is the fixture's, moved by the test.
 */

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(`${CHROMIUM} is missing; the admin browser test cannot run in CI without it`);
}
const TTL = 5;

describe('admin page session in a real browser', { skip: haveChromium ? false : `${CHROMIUM} not found` }, () => {
  let fx: HttpFixture;
  let base: string;
  let context: BrowserContext;
  let page: Page;
  let profile: string;

  before(async () => {
    fx = await createHttpFixture({ app: { tokenTtlSeconds: TTL } });
    await fx.app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(fx.app.server.address() as AddressInfo).port}`;
    profile = await mkdtemp(join(tmpdir(), 'admin-session-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
  });

  after(async () => {
    await context?.close();
    await fx?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  const storedToken = (): Promise<string | null> => page.evaluate("sessionStorage.getItem('enrollment.admin.token')") as Promise<string | null>;

  it('refreshes its token before it expires and stays logged in past the first token\'s expiry', { timeout: 60_000 }, async () => {
    const refreshes: number[] = [];
    page.on('response', (r) => {
      if (new URL(r.url()).pathname === '/refresh') refreshes.push(r.status());
    });
    await page.goto(`${base}/admin`);
    await page.fill('#login-user', String(STAFF));
    await page.fill('#login-password', PASSWORD);
    await page.click('#login-submit');
    await page.waitForSelector('#app-view', { state: 'visible' });
    const first = await storedToken();
    assert.ok(first);
    const loginAt = fx.clock.now;

    // Two seconds later on the server: the refreshed token ends two seconds after the first one.
    fx.clock.now = loginAt + 2_000;
    // The page refreshes at four fifths of the token's life (4 s of its own clock).
    const deadline = Date.now() + 15_000;
    while (refreshes.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(refreshes.slice(0, 1), [200], 'the page asked for a fresh token');
    const second = await storedToken();
    assert.ok(second && second !== first, 'and keeps the fresh one');

    // Past the first token's expiry, within the second's: the page still works, the first token does not.
    fx.clock.now = loginAt + (TTL + 1) * 1_000;
    assert.equal((await fx.request('GET', '/admin/api/sections', { headers: { authorization: `Bearer ${first}` } })).status, 401);
    const status = await page.evaluate(
      `fetch('/admin/api/sections', { headers: { authorization: 'Bearer ' + sessionStorage.getItem('enrollment.admin.token') } }).then((r) => r.status)`,
    );
    assert.equal(status, 200);
    assert.equal(await page.isVisible('#app-view'), true, 'still logged in');
    assert.equal(await page.isVisible('#login-view'), false);
  });
});
