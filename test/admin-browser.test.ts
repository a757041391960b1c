import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { StudentRecord } from '../src/actors/student-rules.js';
import type { NewSection } from '../src/engine/engine.js';
import { C, createHttpFixture, expectStatus, PASSWORD, PW_HASH, S, STAFF, T0, type HttpFixture } from './support/http-fixture.js';

/**
 * The admin page in a real headless Chromium against the real app on a real port: login (refused
 * for wrong credentials and for students), the live list, the statechart of a section with its
 * state highlighted, live updates without a reload while students enroll through the API, staff
 * actions with their refusals shown, and the page data closed to student tokens.
 *
 * Screenshots go to test-artifacts/ (git-ignored). Without /usr/bin/chromium the test is skipped
 * locally and fails in CI.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(`${CHROMIUM} is missing; the admin browser test cannot run in CI without it`);
}

/** As many sections as the demo (1,500) so the list is exercised at its real size. */
function bulkSections(): NewSection[] {
  const out: NewSection[] = [];
  for (let i = 0; i < 1500; i += 1) {
    const courseId = 2000 + Math.floor(i / 5);
    out.push({
      info: {
        courseId,
        groupId: (i % 5) + 1,
        forDepartment: (i % 2) + 1,
        name: `Bulk course ${courseId}`,
        lecturer: `Lecturer ${i % 37}`,
        units: 1,
        examTime: null,
        classTime: null,
        notes: '',
      },
      capacity: 5 + (i % 40),
      reserveCapacity: i % 4,
      sexLock: null,
      closed: i % 97 === 0,
    });
  }
  return out;
}

function bulkStudents(): StudentRecord[] {
  return Array.from({ length: 200 }, (_, i) => ({
    id: 5000 + i,
    passwordHash: PW_HASH,
    enrollmentStart: T0,
    maxUnits: 20,
    remainingActions: 5,
    departmentId: 1,
    entryYear: 2024,
    gender: 'male' as const,
  }));
}

describe('admin page in a real browser', { skip: haveChromium ? false : `${CHROMIUM} not found` }, () => {
  let fx: HttpFixture;
  let base: string;
  let context: BrowserContext;
  let page: Page;
  let profile: string;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    fx = await createHttpFixture();
    await fx.engine.importBatch(
      { departments: [], staff: [], students: bulkStudents(), sections: bulkSections() },
      { requestId: 'bulk', actor: 'system' },
    );
    // Some load, so the busiest-first order has something to show.
    for (let i = 0; i < 200; i += 1) {
      for (const k of [0, 1, 2]) {
        const course = 2000 + ((i * 7 + k * 13) % 40);
        await fx.engine.enroll(5000 + i, course, 1, { requestId: `bulk-${i}-${k}`, actor: `student:${5000 + i}` }).catch(() => undefined);
      }
    }
    await fx.app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(fx.app.server.address() as AddressInfo).port}`;
    profile = await mkdtemp(join(tmpdir(), 'admin-browser-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1600, height: 1000 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    watch(page);
  });

  /** Content-Security-Policy violations Chromium reports, and page requests with a token in the URL, all run long. */
  const cspViolations: string[] = [];
  const tokenUrls: string[] = [];
  function watch(p: Page): void {
    p.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(`${p.url()}: ${m.text()}`);
    });
    p.on('request', (r) => {
      if (/[?&]token=/.test(r.url()) || /eyJ[\w-]+\.eyJ/.test(r.url())) tokenUrls.push(r.url());
    });
  }

  after(async () => {
    await context?.close();
    await fx?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  /** Polls the page from Node until `check` holds (the page's DOM types are not in this project's lib). */
  async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await check().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const text = async (selector: string): Promise<string> => (await page.locator(selector).first().textContent({ timeout: 1000 })) ?? '';
  const untilText = (selector: string, test: (t: string) => boolean) =>
    until(`${selector} text`, async () => test(await text(selector)));

  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `admin-${name}.png`), fullPage: false });
  const enroll = (student: number, [course_id, group_id]: readonly [number, number]) =>
    fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } });

  it('refuses a wrong login and a student login on the page', async () => {
    const failures: string[] = [];
    page.on('pageerror', (err) => failures.push(err.message));
    // Every request the page makes must go to this server (no CDN, no internet).
    page.on('request', (r) => {
      if (!r.url().startsWith(base) && !r.url().startsWith('data:')) failures.push(`external request ${r.url()}`);
    });
    await page.goto(`${base}/admin`);
    await page.waitForSelector('#login-form', { state: 'visible' });
    await page.fill('#login-user', String(STAFF));
    await page.fill('#login-password', 'not the password');
    await page.click('#login-submit');
    await untilText('#login-error', (t) => t.includes('refused'));
    await shot('1-login-refused');
    // A student's own credentials: login is as staff, so they are refused too.
    await page.fill('#login-user', String(S.alice));
    await page.fill('#login-password', PASSWORD);
    await page.click('#login-submit');
    await untilText('#login-error', (t) => t.includes('refused'));
    assert.equal(await page.isVisible('#app-view'), false);
    assert.deepEqual(failures, []);
  });

  it('logs in as staff and lists every section, busiest first, filtered and searched', async () => {
    await page.fill('#login-user', String(STAFF));
    await page.fill('#login-password', PASSWORD);
    await page.click('#login-submit');
    await page.waitForSelector('#app-view', { state: 'visible' });
    await page.waitForSelector('#conn[data-state="live"]');
    await untilText('#count', (t) => t === '1509 of 1509 sections');
    // Only the rows in view exist in the DOM.
    const rendered = await page.locator('#list .row:not([hidden])').count();
    assert.ok(rendered > 10 && rendered < 100, `rendered ${rendered} rows`);
    // Busiest first: the first row is at least as full as the second.
    const fills = (await page.locator('#list .row:not([hidden]) .r-num').allTextContents()).slice(0, 2).map((t) => {
      const [a, b] = t.split('/').map(Number);
      return (a ?? 0) / (b || 1);
    });
    assert.ok((fills[0] ?? 0) >= (fills[1] ?? 0), `fills ${fills.join(',')}`);
    await shot('2-list');
    await page.selectOption('#department', '2');
    await untilText('#count', (t) => t === '751 of 1509 sections');
    await page.selectOption('#department', '');
    await page.fill('#search', 'knuth');
    await untilText('#count', (t) => t === '1 of 1509 sections');
  });

  it('draws the statechart of a section and follows it live, without a reload, as it fills', async () => {
    await page.evaluate(() => {
      (globalThis as unknown as { marker: string }).marker = 'same page';
    });
    await page.click('#list .row[data-key="101/1"]');
    await page.waitForSelector('#detail-body', { state: 'visible' });
    await page.waitForSelector('#chart .node.active[data-path="open.seatsAvailable"]');
    const layout = (await fx.request('GET', '/admin/api/machine', { token: fx.staffToken() })).body;
    // Every state and every transition of the machine is drawn.
    for (const s of layout.states as { id: string }[]) {
      assert.equal(await page.locator(`#chart [data-state-id="${s.id}"]`).count() > 0, true, s.id);
    }
    for (const t of layout.transitions as { id: string }[]) {
      assert.equal(await page.locator(`#chart [data-transition="${t.id}"]`).count(), 1, t.id);
    }
    assert.equal(await page.textContent('#d-registered'), '0 / 2');
    await shot('3-section-open');

    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    await page.waitForSelector('#chart .node.active[data-path="open.reserveOnly"]');
    await untilText('#d-registered', (t) => t === '2 / 2');
    await shot('4-reserve-only');
    // The choice pseudostates are drawn as diamonds, never lit.
    assert.equal(await page.locator('#chart .node.n-choice polygon').count(), 2);

    expectStatus(await enroll(S.f3, C.algo1), 204);
    expectStatus(await enroll(S.f4, C.algo1), 204);
    await page.waitForSelector('#chart .node.active[data-path="open.full"]');
    await untilText('#d-queue', (t) => t === '2 / 2');
    await until('the queue in order', async () => (await page.locator('#d-queue-list li .sid').allTextContents()).join(',') === '12,13');
    await until('the transitions', async () => (await page.locator('#d-transitions tr').count()) >= 5);
    const firstTransition = await page.textContent('#d-transitions tr:first-child');
    assert.match(firstTransition ?? '', /Student 13 joined the reserve queue/);
    assert.match(firstTransition ?? '', /student 13/);
    // Only one state node is lit, and it is the one the engine reports.
    assert.equal(await page.locator('#chart .node.n-state.active').count(), 1);
    assert.equal(fx.engine.getSection(101, 1).state, 'open.full');
    // The list row followed too.
    await untilText('#list .row[data-key="101/1"] .badge', (t) => t === 'full');
    assert.equal(await page.evaluate(() => (globalThis as unknown as { marker?: string }).marker), 'same page');
    await shot('5-full');

    // A drop takes the section back out of full: the queue head gets the seat, a queue place is free.
    expectStatus(await fx.request('DELETE', `/student/course?course_id=${C.algo1[0]}`, { token: fx.studentToken(S.f1) }), 204);
    await page.waitForSelector('#chart .node.active[data-path="open.reserveOnly"]');
    assert.equal(await page.locator('#chart .node.n-state.active').count(), 1, 'only the new state is lit');
    assert.equal(await page.locator('#chart .node.active[data-path="open.full"]').count(), 0, 'full is no longer lit');
    assert.equal(fx.engine.getSection(101, 1).state, 'open.reserveOnly');
    await untilText('#d-queue', (t) => t === '1 / 2');
    await shot('5b-dropped-out-of-full');
    // And back into full, for the staff actions below.
    expectStatus(await enroll(S.f1, C.algo1), 204);
    await page.waitForSelector('#chart .node.active[data-path="open.full"]');
  });

  it('draws the chart readably at 900 px: no text smaller than 11 px on screen, the legend colours the states', async () => {
    await page.setViewportSize({ width: 900, height: 1000 });
    try {
      await page.locator('#chart').scrollIntoViewIfNeeded();
      const scale = await page.evaluate(() => {
        const g = globalThis as unknown as { document: { getElementById(id: string): { getBoundingClientRect(): { width: number }; viewBox: { baseVal: { width: number } } } } };
        const chart = g.document.getElementById('chart');
        return chart.getBoundingClientRect().width / chart.viewBox.baseVal.width;
      });
      // The smallest font in the chart is 12 px (transition lists, labels).
      assert.ok(12 * scale >= 11, `chart text is drawn at ${(12 * scale).toFixed(1)} px at 900 px wide (scale ${scale.toFixed(2)})`);
      await shot('5c-900px');
      // Each state's legend swatch has the colour the chart fills that state with when current.
      const colours = await page.evaluate(() => {
        const g = globalThis as unknown as { document: { querySelector(s: string): unknown }; getComputedStyle(e: unknown): { backgroundColor: string } };
        const out: Record<string, string> = {};
        for (const k of ['seats', 'reserve', 'full', 'closed']) out[k] = g.getComputedStyle(g.document.querySelector(`.legend .lg-${k}`)).backgroundColor;
        return out;
      });
      const fill = await page.evaluate(() => {
        const g = globalThis as unknown as { document: { querySelector(s: string): unknown }; getComputedStyle(e: unknown): { fill: string } };
        return g.getComputedStyle(g.document.querySelector('#chart .node.n-state.active > rect')).fill;
      });
      assert.equal(fill, colours.full, 'the lit full state has the legend colour of full');
      assert.equal(new Set(Object.values(colours)).size, 4, 'four distinct state colours');
    } finally {
      await page.setViewportSize({ width: 1600, height: 1000 });
    }
  });

  it('runs staff actions through the staff API and shows its refusals', async () => {
    await page.fill('#a-capacity', '3');
    await page.click('#f-capacity button[type="submit"]');
    await untilText('#a-result', (t) => t.includes('done'));
    // Growth promotes the queue head: 3 registered, one still queued, a seat is no longer free.
    await untilText('#d-registered', (t) => t === '3 / 3');
    await page.waitForSelector('#chart .node.active[data-path="open.reserveOnly"]');

    await page.fill('#a-capacity', '1');
    await page.click('#f-capacity button[type="submit"]');
    await untilText('#a-result', (t) => t.includes('CAPACITY_BELOW_REGISTERED'));
    await page.locator('.actions').scrollIntoViewIfNeeded();
    await shot('6-refused');

    await page.click('#a-close');
    await page.click('#confirm-ok');
    await page.waitForSelector('#chart .node.active[data-path="closed"]');
    await page.click('#a-reopen');
    await page.waitForSelector('#chart .node.active[data-path="open.reserveOnly"]');

    await page.fill('#a-student', String(S.alice));
    await page.click('#a-enroll');
    // Forcing into a section with no free seat grows it by one.
    await untilText('#d-registered', (t) => t === '4 / 4');
    await untilText('#d-queue', (t) => t === '1 / 2');
    await page.click('#a-drop');
    await page.click('#confirm-ok');
    // The freed seat goes to the queue head.
    await untilText('#d-queue', (t) => t === '0 / 2');
    await untilText('#d-registered', (t) => t === '4 / 4');
    await page.waitForSelector('#chart .node.active[data-path="open.reserveOnly"]');
    await page.fill('#a-student', '999999');
    await page.click('#a-drop');
    await page.click('#confirm-ok');
    await untilText('#a-result', (t) => /refused \(400 STUDENT_NOT_FOUND\)/.test(t));
    await page.locator('#d-transitions').scrollIntoViewIfNeeded();
    await shot('7-actions');
  });

  it('Log out ends the session on the server too: the page\'s token is refused afterwards', async () => {
    const token = await page.evaluate(() => (globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }).sessionStorage.getItem('enrollment.admin.token'));
    assert.ok(token, 'logged in as staff before this test');
    const before = await fx.app.inject({ method: 'GET', url: '/admin/api/sections', headers: { authorization: `Bearer ${token}` } });
    assert.equal(before.statusCode, 200);
    await page.click('#logout');
    await page.waitForSelector('#login-form', { state: 'visible' });
    await until('the token to be revoked', async () => {
      const r = await fx.app.inject({ method: 'GET', url: '/admin/api/sections', headers: { authorization: `Bearer ${token}` } });
      return r.statusCode === 401 && (JSON.parse(r.body) as { code: string }).code === 'TOKEN_REVOKED';
    });
  });

  it('gives a student token neither the page data nor its feed', async () => {
    const student = fx.studentToken();
    const statuses = await page.evaluate(async (token) => {
      const h = { authorization: `Bearer ${token}` };
      const data = await fetch('/admin/api/sections', { headers: h });
      const one = await fetch('/admin/api/sections/101/1', { headers: h });
      const ticket = await fetch('/admin/feed-ticket', { method: 'POST', headers: h });
      const events = await fetch('/admin/events', { headers: h });
      const inUrl = await fetch(`/admin/events?token=${encodeURIComponent(token)}`);
      const anonymous = await fetch('/admin/events');
      return [data.status, one.status, ticket.status, events.status, inUrl.status, anonymous.status];
    }, student);
    assert.deepEqual(statuses, [403, 403, 403, 403, 401, 401]);
    // A student token smuggled into the page's storage is refused on load.
    await page.evaluate((token) => {
      const g = globalThis as unknown as { sessionStorage: { setItem(k: string, v: string): void } };
      g.sessionStorage.setItem('enrollment.admin.token', token);
    }, student);
    await page.reload();
    await page.waitForSelector('#login-form', { state: 'visible' });
    assert.equal(await page.isVisible('#app-view'), false);
    await shot('8-student-refused');
  });

  it('the admin page ran under its CSP without a violation, and never put a token in a URL', () => {
    assert.deepEqual(cspViolations, []);
    // The page's own requests only (the test above probes ?token= on purpose with fetch from the page).
    assert.deepEqual(tokenUrls.filter((u) => !u.includes('/admin/events?token=')), []);
  });

  it('the API docs (swagger-ui) render under the security headers, with no CSP violation', async () => {
    const docs = await context.newPage();
    watch(docs);
    const errors: string[] = [];
    docs.on('pageerror', (err) => errors.push(err.message));
    const external: string[] = [];
    docs.on('request', (r) => {
      if (!r.url().startsWith(base) && !r.url().startsWith('data:')) external.push(r.url());
    });
    const res = await docs.goto(`${base}/docs`);
    assert.ok(res);
    const csp = String(res.headers()['content-security-policy']);
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers()['x-content-type-options'], 'nosniff');
    await docs.waitForSelector('.swagger-ui .info .title');
    assert.match((await docs.locator('.swagger-ui .info .title').textContent()) ?? '', /Course enrollment engine/);
    // The operations are listed (the UI fetched /docs/json and rendered it).
    await docs.waitForSelector('.opblock-summary-path[data-path="/login"]');
    await docs.screenshot({ path: join(ARTIFACTS, 'docs.png') });
    await docs.close();
    assert.deepEqual(errors, []);
    assert.deepEqual(external, []);
    assert.deepEqual(cspViolations, []);
  });
});
