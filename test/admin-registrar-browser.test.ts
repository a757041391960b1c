import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { generateDemoData } from '../src/demo/demo-data.js';
import { createHttpFixture, PASSWORD, PW_HASH, type HttpFixture } from './support/http-fixture.js';

/**
 * Issue 16 item 4 in a real headless Chromium, with the demo data (1,500 sections, 1,000 students,
 * the first minutes of registration already played): totals and filters, student lookup,
 * settings edits, confirmation steps, fill charts, CSV downloads, and the readability fixes
 * (history in words, local time to the second, positions apart from ids, tables not cut off).
 * The browser runs in New York time with British English, so "local time" is tested as such.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) throw new Error(`${CHROMIUM} is missing; the admin browser test cannot run in CI without it`);
const TIME_ZONE = 'America/New_York';
const LOCALE = 'en-GB';
const STAFF_ID = 1;

/** What the page should show for an instant: the browser's zone and language, to the second. */
const localTime = (iso: string): string =>
  new Date(iso).toLocaleString(LOCALE, {
    timeZone: TIME_ZONE,
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });

/** RFC 4180 parser (quoted fields, doubled quotes, CRLF). */
function parseCsv(document: string): string[][] {
  // The download keeps the UTF-8 byte-order mark the server sends (Excel then reads UTF-8).
  assert.ok(document.startsWith('\uFEFF'), 'the saved file starts with the UTF-8 byte-order mark');
  const text = document.slice(1);
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += ch;
  }
  return rows;
}

interface Box {
  left: number;
  right: number;
}

describe('admin page for a registrar, with the demo data, in a real browser', { skip: haveChromium ? false : `${CHROMIUM} not found` }, () => {
  let fx: HttpFixture;
  let base: string;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  const failures: string[] = [];

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    fx = await createHttpFixture({ seed: false, logLevel: 'silent' });
    const data = generateDemoData({ now: fx.clock.now, passwordHash: PW_HASH, staffPasswordHash: PW_HASH });
    await fx.engine.importBatch(data, { requestId: 'demo-data', actor: 'system' });
    await fx.app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(fx.app.server.address() as AddressInfo).port}`;
    profile = await mkdtemp(join(tmpdir(), 'admin-registrar-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1600, height: 1000 },
      locale: LOCALE,
      timezoneId: TIME_ZONE,
      acceptDownloads: true,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(20_000);
    page.on('pageerror', (err) => failures.push(err.message));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) failures.push(`CSP: ${m.text()}`);
    });
    page.on('request', (r) => {
      if (!r.url().startsWith(base) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) failures.push(`external request ${r.url()}`);
      if (/[?&](token|ticket)=eyJ/.test(r.url()) || /eyJ[\w-]+\.eyJ/.test(r.url())) failures.push(`token in URL ${r.url()}`);
    });
  });

  after(async () => {
    await context?.close();
    await fx?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await check().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const text = async (selector: string): Promise<string> => (await page.locator(selector).first().textContent({ timeout: 1000 })) ?? '';
  const untilText = (selector: string, test: (t: string) => boolean) => until(`${selector} text`, async () => test(await text(selector)));
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `registrar-${name}.png`), fullPage: false });
  const summary = async () => (await fx.request('GET', '/admin/api/summary', { token: fx.staffToken(STAFF_ID) })).body;
  const selectSection = async (courseId: number, groupId: number) => {
    await page.fill('#search', String(courseId));
    await page.click(`#list .row[data-key="${courseId}/${groupId}"]`);
    await page.waitForSelector('#detail-body', { state: 'visible' });
    await untilText('#d-title', (t) => t.startsWith(`${courseId}/${groupId}`));
    await page.fill('#search', '');
  };

  /** Every visible table fits its box (no column cut off or pushed out on the right), and the pane scrolls no sideways. */
  async function assertTablesFit(where: string): Promise<void> {
    const r = await page.evaluate(() => {
      const g = globalThis as unknown as {
        document: { querySelectorAll(s: string): { scrollWidth: number; clientWidth: number; offsetParent: unknown; getBoundingClientRect(): { right: number; width: number } }[]; getElementById(id: string): { scrollWidth: number; clientWidth: number; getBoundingClientRect(): { right: number } } };
      };
      const detail = g.document.getElementById('detail');
      const pane = detail.getBoundingClientRect();
      const out: string[] = [];
      for (const w of g.document.querySelectorAll('.table-wrap')) {
        if (w.offsetParent === null) continue; // hidden
        if (w.scrollWidth > w.clientWidth + 1) out.push(`table wider than its box: ${w.scrollWidth} > ${w.clientWidth}`);
        if (w.getBoundingClientRect().right > pane.right + 1) out.push(`table box past the pane: ${w.getBoundingClientRect().right} > ${pane.right}`);
      }
      return { out, detailScroll: [detail.scrollWidth, detail.clientWidth] };
    });
    assert.deepEqual(r.out, [], where);
    assert.ok((r.detailScroll[0] ?? 0) <= (r.detailScroll[1] ?? 0) + 1, `${where}: the pane scrolls sideways ${r.detailScroll.join(' > ')}`);
  }

  it('opens on a term in progress: totals from the engine, busy sections, the term fill chart', async () => {
    await page.goto(`${base}/admin`);
    await page.fill('#login-user', String(STAFF_ID));
    await page.fill('#login-password', PASSWORD);
    await page.click('#login-submit');
    await page.waitForSelector('#app-view', { state: 'visible' });
    await page.waitForSelector('#totals[data-loaded="true"]');
    const s = await summary();
    assert.ok(s.students_holding > 500 && s.students_queued > 0 && s.sections_full > 0 && s.sections_closed === 8, JSON.stringify(s));
    assert.equal(await text('#t-holding'), s.students_holding.toLocaleString('en-GB'));
    assert.equal(await text('#t-queued'), s.students_queued.toLocaleString('en-GB'));
    assert.equal(await text('#t-full'), String(s.sections_full));
    assert.equal(await text('#t-closed'), '8');
    assert.equal(await text('#t-waitlisted'), String(s.sections_waitlisted));
    // Busiest first: the top row is a full section, not 0/N.
    await untilText('#count', (t) => t === '1500 of 1500 sections');
    const top = await text('#list .row:not([hidden]) .r-num');
    const [reg, cap] = top.split('/').map(Number);
    assert.ok((reg ?? 0) > 0 && reg === cap, `top row ${top}`);
    // The term chart: seats taken over the demo's first minutes, ending at the live total.
    await until('the term chart', async () => Number(await page.getAttribute('#term-fill', 'data-points')) > 10);
    const registered = fx.engine.listSections().reduce((n, v) => n + v.registeredCount, 0);
    const queued = fx.engine.listSections().reduce((n, v) => n + v.queueLength, 0);
    assert.equal(Number(await page.getAttribute('#term-fill', 'data-last-registered')), registered);
    assert.equal(Number(await page.getAttribute('#term-fill', 'data-last-queued')), queued);
    assert.notEqual(await page.getAttribute('#term-fill path.f-registered', 'd'), null);
    // The filter controls fit the list pane (none cut off on the right).
    const overflow = await page.evaluate(() => {
      const g = globalThis as unknown as { document: { querySelector(s: string): { getBoundingClientRect(): { right: number } }; querySelectorAll(s: string): { id: string; getBoundingClientRect(): { right: number } }[] } };
      const pane = g.document.querySelector('.list-pane').getBoundingClientRect().right;
      return [...g.document.querySelectorAll('.filters select, .filters input')].filter((e) => e.getBoundingClientRect().right > pane + 0.5).map((e) => e.id);
    });
    assert.deepEqual(overflow, []);
    await shot('1-term');
  });

  it('filters full, closed and waitlisted sections, from the totals and from the list', async () => {
    const s = await summary();
    await page.click('#totals [data-filter="full"]');
    await untilText('#count', (t) => t === `${s.sections_full} of 1500 sections`);
    const badges = await page.locator('#list .row:not([hidden]) .badge').allTextContents();
    assert.ok(badges.length > 0 && badges.every((b) => b === 'reserveOnly' || b === 'full'), badges.join(','));
    await page.selectOption('#status-filter', 'closed');
    await untilText('#count', (t) => t === '8 of 1500 sections');
    assert.deepEqual([...new Set(await page.locator('#list .row:not([hidden]) .badge').allTextContents())], ['closed']);
    await page.click('#totals [data-filter="waitlisted"]');
    await untilText('#count', (t) => t === `${s.sections_waitlisted} of 1500 sections`);
    assert.equal(await page.getAttribute('#totals [data-filter="waitlisted"]', 'aria-pressed'), 'true');
    await shot('2-waitlisted');
    await page.click('#totals [data-filter="waitlisted"]'); // again: back to all
    await untilText('#count', (t) => t === '1500 of 1500 sections');
    // The totals follow live changes (a student enrolls through the API).
    const free = fx.engine.listSections().find((v) => !v.closed && v.registeredCount === 0 && v.sexLock === null && v.info.courseId !== 40101);
    assert.ok(free);
    const before = (await summary()).students_holding;
    const r = await fx.request('PUT', '/student/course', { token: fx.studentToken(40000002), body: { course_id: free.info.courseId, group_id: free.info.groupId } });
    assert.equal(r.status, 204, r.raw);
    await untilText('#t-holding', (t) => t === (before + 1).toLocaleString('en-GB'));
  });

  it("looks a student up: timetable, and a history in words with local times to the second", async () => {
    const student = fx.engine
      .dumpState()
      .students.map((s) => s.id)
      .find((id) => {
        const held = fx.engine.studentSections(id);
        return held.length >= 2 && held.some((h) => h.status === 'queued');
      });
    assert.ok(student, 'a demo student with a queue place and another section');
    const held = fx.engine.studentSections(student);
    await page.fill('#lookup-id', String(student));
    await page.click('#lookup-submit');
    await page.waitForSelector('#student-view', { state: 'visible' });
    await untilText('#s-title', (t) => t === `Student ${student}`);
    assert.equal(await page.locator('#s-timetable tbody tr').count(), held.length);
    const statuses = await page.locator('#s-timetable tbody tr td:nth-child(3)').allTextContents();
    const queued = held.find((h) => h.status === 'queued');
    assert.ok(statuses.includes(`queued, place ${queued?.queuePosition}`), statuses.join('|'));
    const history = (await fx.request('GET', `/admin/api/students/${student}`, { token: fx.staffToken(STAFF_ID) })).body.history as { at: string; text: string }[];
    assert.equal(await page.locator('#s-history tbody tr').count(), history.length);
    const rows = await page.locator('#s-history tbody tr').allInnerTexts();
    for (const [i, row] of rows.entries()) {
      const h = history[i];
      assert.ok(h);
      assert.ok(row.includes(localTime(h.at)), `"${row}" shows ${localTime(h.at)}`);
      assert.ok(row.includes(h.text));
      assert.doesNotMatch(row, /movedIn|movedOut|=false|=true|demo-data|\d\.\d{3}\b|Z\b/);
    }
    assert.ok(rows.some((r) => /Joined the reserve queue of \d+-\d+ /.test(r)), rows.join('\n'));
    await assertTablesFit('student view at 1600 px');
    await shot('3-student');
    await page.setViewportSize({ width: 900, height: 1000 });
    try {
      await assertTablesFit('student view at 900 px');
      await shot('3b-student-900');
    } finally {
      await page.setViewportSize({ width: 1600, height: 1000 });
    }
    await page.fill('#lookup-id', '12');
    await page.click('#lookup-submit');
    await untilText('#s-title', (t) => t === 'No student 12.');
    await page.click('#s-close');
    await page.waitForSelector('#student-view', { state: 'hidden' });
  });

  it("corrects a student's record from the student view: actions left, unit limit, window, and a password reset after a confirmation", async () => {
    const student = 40000003;
    const before = fx.engine.getStudent(student);
    assert.ok(before, 'a demo student');
    await page.fill('#lookup-id', String(student));
    await page.click('#lookup-submit');
    await page.waitForSelector('#student-view', { state: 'visible' });
    await untilText('#s-title', (t) => t === `Student ${student}`);
    assert.equal(await page.inputValue('#s-set-actions'), String(before.remainingActions));
    assert.equal(await page.inputValue('#s-set-units'), String(before.maxUnits));
    // Nothing changed: nothing sent.
    await page.click('#s-save');
    await untilText('#s-result', (t) => t === 'Nothing to change.');
    // The window an hour earlier, in the browser's own time zone; more actions and units.
    const earlier = before.enrollmentStart - 3_600_000;
    // The browser's zone is TIME_ZONE: 'sv-SE' writes a date and time as datetime-local wants them.
    const local = new Intl.DateTimeFormat('sv-SE', { timeZone: TIME_ZONE, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
      .format(new Date(earlier))
      .replace(' ', 'T');
    await page.fill('#s-set-actions', String(before.remainingActions + 3));
    await page.fill('#s-set-units', String(before.maxUnits + 2));
    await page.fill('#s-set-window', local);
    await page.click('#s-save');
    await untilText('#s-result', (t) => /saved\.$/.test(t));
    const after = fx.engine.getStudent(student);
    assert.deepEqual(
      { actions: after?.remainingActions, units: after?.maxUnits, opens: after?.enrollmentStart },
      { actions: before.remainingActions + 3, units: before.maxUnits + 2, opens: Math.floor(earlier / 1000) * 1000 },
    );
    await untilText('#s-actions', (t) => t === String(before.remainingActions + 3));
    await untilText('#s-history tbody tr:first-child', (t) => t.includes('Record changed by staff') && t.includes(`unit limit ${before.maxUnits + 2}`));
    // A password reset asks first; cancel changes nothing, confirm resets it.
    await page.fill('#s-set-password', 'reset at the desk 7');
    await page.click('#s-reset');
    await page.waitForSelector('#confirm', { state: 'visible' });
    await page.click('#confirm-cancel');
    assert.equal((await fx.request('POST', '/login', { body: { user: student, password: 'reset at the desk 7' } })).status, 401);
    await page.fill('#s-set-password', 'reset at the desk 7');
    await page.click('#s-reset');
    await page.waitForSelector('#confirm', { state: 'visible' });
    await page.click('#confirm-ok');
    await untilText('#s-result', (t) => t === 'Password reset: saved.');
    fx.clock.now += 1;
    assert.equal((await fx.request('POST', '/login', { body: { user: student, password: 'reset at the desk 7' } })).status, 200);
    assert.equal(await page.inputValue('#s-set-password'), '', 'the password is not left in the form');
    await untilText('#s-history tbody tr:first-child', (t) => t.includes('password reset'));
    await shot('3c-student-corrected');
    await page.click('#s-close');
    await page.waitForSelector('#student-view', { state: 'hidden' });
  });

  it('shows a busy section: its fill chart, positions apart from ids, history in words, tables that fit', async () => {
    const busy = fx.engine
      .listSections()
      .filter((v) => v.queueLength >= 10)
      .sort((a, b) => b.registeredCount - a.registeredCount)[0];
    assert.ok(busy, 'a demo section with 10 or more queued');
    const { courseId, groupId } = busy.info;
    await selectSection(courseId, groupId);
    await until('the section chart', async () => Number(await page.getAttribute('#section-fill', 'data-last-registered')) === busy.registeredCount);
    assert.equal(Number(await page.getAttribute('#section-fill', 'data-last-queued')), busy.queueLength);
    assert.ok(Number(await page.getAttribute('#section-fill', 'data-points')) >= 2);
    // Lists of 10 and more: each position ends before its id starts, in both lists.
    for (const list of ['#d-registered-list', '#d-queue-list']) {
      await until(`${list} filled`, async () => (await page.locator(`${list} li`).count()) >= 10);
      const boxes = await page.evaluate((sel) => {
        const g = globalThis as unknown as { document: { querySelectorAll(s: string): { querySelector(s: string): { getBoundingClientRect(): { left: number; right: number } } }[] } };
        return [...g.document.querySelectorAll(`${sel} li`)].slice(0, 40).map((li) => ({
          pos: li.querySelector('.pos').getBoundingClientRect(),
          sid: li.querySelector('.sid').getBoundingClientRect(),
        }));
      }, list);
      boxes.forEach((b: { pos: Box; sid: Box }, i) => assert.ok(b.pos.right + 3 <= b.sid.left, `${list} entry ${i + 1}: position ends at ${b.pos.right}, id starts at ${b.sid.left}`));
      const first = await page.locator(`${list} li`).nth(9).innerText();
      assert.match(first.replace(/\s+/g, ' '), /^10 \d{8}$/);
    }
    const rows = await page.locator('#d-transitions tr').allInnerTexts();
    assert.ok(rows.length >= 10);
    for (const r of rows) assert.doesNotMatch(r, /movedIn|=false|=true|demo-data|\d\.\d{3}\b|student:\d/);
    assert.ok(rows.some((r) => /Student \d+ (took a seat|joined the reserve queue)/.test(r)));
    const records = (await fx.request('GET', `/admin/api/sections/${courseId}/${groupId}?limit=30`, { token: fx.staffToken(STAFF_ID) })).body.transitions as { at: string }[];
    assert.ok((rows[0] ?? '').includes(localTime(records[0]?.at ?? '')), `${rows[0]} shows ${localTime(records[0]?.at ?? '')}`);
    await assertTablesFit('section at 1600 px');
    await page.locator('#d-queue-list').scrollIntoViewIfNeeded();
    await shot('4-busy-section');
    await page.setViewportSize({ width: 900, height: 1000 });
    try {
      await assertTablesFit('section at 900 px');
    } finally {
      await page.setViewportSize({ width: 1600, height: 1000 });
    }
  });

  it('exports the roster and the section list as CSV downloads', async () => {
    const sel = await text('#d-title');
    const [courseId, groupId] = (sel.split(' ')[0] ?? '').split('/').map(Number) as [number, number];
    const members = fx.engine.sectionMembers(courseId, groupId);
    const [roster] = await Promise.all([page.waitForEvent('download'), page.click('#a-roster')]);
    assert.equal(roster.suggestedFilename(), `roster-${courseId}-${groupId}.csv`);
    const rows = parseCsv(await readFile((await roster.path()) as string, 'utf8'));
    assert.deepEqual(rows[0], ['student_id', 'status', 'position', 'gender', 'department', 'entry_year']);
    assert.deepEqual(rows.slice(1).map((r) => Number(r[0])), [...members.registered, ...members.queue]);
    await page.selectOption('#status-filter', 'closed');
    const [list] = await Promise.all([page.waitForEvent('download'), page.click('#export-sections')]);
    assert.equal(list.suggestedFilename(), 'sections-closed.csv');
    const sections = parseCsv(await readFile((await list.path()) as string, 'utf8'));
    assert.equal(sections.length, 1 + 8);
    assert.ok(sections.slice(1).every((r) => r[11] === 'closed'));
    await page.selectOption('#status-filter', 'all');
  });

  it('edits reserve places and the sex lock, and shows a refusal', async () => {
    await selectSection(40101, 1);
    await page.fill('#a-reserve', '7');
    await page.selectOption('#a-sexlock', 'female');
    await page.click('#a-settings');
    await untilText('#a-result', (t) => t.includes('done'));
    const v = fx.engine.getSection(40101, 1);
    assert.equal(v.reserveCapacity, 7);
    assert.equal(v.sexLock, 'female');
    await untilText('#d-sexlock', (t) => t === 'female only');
    await until('the history', async () => (await page.locator('#d-transitions').innerText()).includes('Sex lock set: female students only'));
    assert.ok((await page.locator('#d-transitions').innerText()).includes('Reserve queue size set to 7'));
    // A lock that would exclude a member is refused, and the page says why.
    const mixed = fx.engine.listSections().find((s) => {
      if (s.closed || s.sexLock !== null) return false;
      const m = fx.engine.sectionMembers(s.info.courseId, s.info.groupId).registered;
      return new Set(m.map((id) => fx.engine.getStudent(id)?.gender)).size === 2;
    });
    assert.ok(mixed);
    await selectSection(mixed.info.courseId, mixed.info.groupId);
    await page.selectOption('#a-sexlock', 'male');
    await page.click('#a-settings');
    await untilText('#a-result', (t) => t.includes('SEX_LOCK_CONFLICT'));
    assert.equal(fx.engine.getSection(mixed.info.courseId, mixed.info.groupId).sexLock, null);
    await shot('5-refused-lock');
  });

  it('asks for confirmation before closing a section or force-dropping a student; cancel changes nothing', async () => {
    const sel = await text('#d-title');
    const [courseId, groupId] = (sel.split(' ')[0] ?? '').split('/').map(Number) as [number, number];
    await page.click('#a-close');
    await page.waitForSelector('#confirm', { state: 'visible' });
    assert.match(await text('#confirm-text'), new RegExp(`Close section ${courseId}-${groupId}`));
    await shot('6-confirm-close');
    await page.click('#confirm-cancel');
    await page.waitForSelector('#confirm', { state: 'hidden' });
    assert.equal(fx.engine.getSection(courseId, groupId).closed, false);
    await page.click('#a-close');
    await page.click('#confirm-ok');
    await until('closed', async () => fx.engine.getSection(courseId, groupId).closed);
    await untilText('#d-closed', (t) => t === 'yes');

    const victim = fx.engine.sectionMembers(courseId, groupId).registered[0];
    assert.ok(victim !== undefined);
    await page.fill('#a-student', String(victim));
    await page.click('#a-drop');
    await page.waitForSelector('#confirm', { state: 'visible' });
    assert.match(await text('#confirm-text'), new RegExp(`Remove student ${victim}`));
    await page.click('#confirm-cancel');
    assert.ok(fx.engine.sectionMembers(courseId, groupId).registered.includes(victim));
    await page.click('#a-drop');
    await page.click('#confirm-ok');
    await until('dropped', async () => !fx.engine.sectionMembers(courseId, groupId).registered.includes(victim));
    await until('the history', async () => (await page.locator('#d-transitions').innerText()).includes(`Staff removed student ${victim} from their seat`));
  });

  it('a staff member changes their own password from the header; the page stays logged in, the old password stops working', async () => {
    fx.clock.now += 10;
    await page.click('#change-password');
    await page.waitForSelector('#password-dialog', { state: 'visible' });
    await page.fill('#pw-current', PASSWORD);
    await page.fill('#pw-new', 'registrar desk 2026 one');
    await page.fill('#pw-again', 'registrar desk 2026 two');
    await page.click('#pw-save');
    await untilText('#pw-error', (t) => t === 'The two new passwords differ.');
    await page.fill('#pw-current', 'not my password');
    await page.fill('#pw-again', 'registrar desk 2026 one');
    await page.click('#pw-save');
    await untilText('#pw-error', (t) => t.includes('403 WRONG_PASSWORD'));
    await page.fill('#pw-current', PASSWORD);
    await page.click('#pw-save');
    await page.waitForSelector('#password-dialog', { state: 'hidden' });
    fx.clock.now += 10;
    const login = (password: string) => fx.request('POST', '/login', { body: { user: STAFF_ID, password, staff: true } });
    assert.equal((await login(PASSWORD)).status, 401, 'the old password no longer works');
    assert.equal((await login('registrar desk 2026 one')).status, 200);
    // The page goes on with the reply's token: a lookup still works, no login form.
    await page.fill('#lookup-id', '40000002');
    await page.click('#lookup-submit');
    await untilText('#s-title', (t) => t === 'Student 40000002');
    assert.equal(await page.locator('#login-form').isVisible(), false);
    await page.click('#s-close');
  });

  it('ran with no page error, no CSP violation, no outside request and no token in a URL', () => {
    assert.deepEqual(failures, []);
  });
});
