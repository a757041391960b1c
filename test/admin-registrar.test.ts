import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { DEMO_STUDENT_ID, generateDemoData } from '../src/demo/demo-data.js';
import { createEngine } from '../src/engine/engine.js';
import { C, createHttpFixture, expectError, expectStatus, MINUTE, S, T0, type HttpFixture } from './support/http-fixture.js';
import { MemoryPersistence } from './support/memory-persistence.js';
import { normalize } from './support/scenario.js';
import { embeddedMode, fullMode, seededStore, type ModeFactory } from './support/store-harness.js';

/**
 * Issue 16 item 4, the registrar's reads behind the admin page: totals, a student's timetable and
 * history in words, fill over time, CSV exports, and demo data that starts mid-term. The browser
 * side is test/admin-registrar-browser.test.ts.
 */

type Sec = readonly [number, number];

/** RFC 4180 parser for the tests (quoted fields, doubled quotes, CRLF). */
function parseCsv(document: string): string[][] {
  assert.ok(document.startsWith('\uFEFF'), 'the UTF-8 byte-order mark first (Excel then reads UTF-8)');
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
  assert.equal(field, '', 'the document ends with CRLF');
  return rows;
}

describe('admin registrar reads', () => {
  let fx: HttpFixture;
  beforeEach(async () => {
    fx = await createHttpFixture({ logLevel: 'silent' });
  });
  afterEach(async () => {
    await fx.close();
  });
  const enroll = async (student: number, [course_id, group_id]: Sec) =>
    expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } }), 204);
  const staffGet = (url: string) => fx.request('GET', url, { token: fx.staffToken() });

  it('are staff only', async () => {
    for (const url of [
      '/admin/api/summary',
      `/admin/api/students/${S.alice}`,
      '/admin/api/fill',
      '/admin/api/sections/101/1/fill',
      '/admin/api/sections.csv',
      '/admin/api/sections/101/1/roster.csv',
    ]) {
      expectError(await fx.request('GET', url), 401, 'UNAUTHENTICATED');
      expectError(await fx.request('GET', url, { token: fx.studentToken() }), 403, 'FORBIDDEN');
      expectStatus(await staffGet(url), 200);
    }
  });

  it('totals count students holding seats, queued students, and full, closed and waitlisted sections', async () => {
    const r0 = await staffGet('/admin/api/summary');
    assert.deepEqual(r0.body, {
      sections: 9,
      students: 9,
      students_holding: 0,
      students_queued: 0,
      sections_full: 0,
      sections_closed: 1,
      sections_waitlisted: 0,
    });
    await enroll(S.f1, C.algo1);
    await enroll(S.f2, C.algo1);
    await enroll(S.alice, C.algo1); // queued
    await enroll(S.f1, C.physics);
    await enroll(S.f3, C.tiny); // full (no reserve)
    const r = await staffGet('/admin/api/summary');
    assert.deepEqual(r.body, {
      sections: 9,
      students: 9,
      students_holding: 3, // f1, f2, f3 (f1 twice)
      students_queued: 1,
      sections_full: 2, // algo1 and tiny: no free seat
      sections_closed: 1,
      sections_waitlisted: 1,
    });
  });

  it("shows a student's timetable by weekday and history in words, with no request ids or flags", async () => {
    await enroll(S.f1, C.algo1);
    await enroll(S.f2, C.algo1);
    await enroll(S.alice, C.physics);
    await enroll(S.alice, C.algo1); // queued, position 1
    // Refused (db's exam clashes with algo1's): no trace in the history.
    expectError(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 102, group_id: 1 } }), 400, 'EXAM_CONFLICT');
    const r = await staffGet(`/admin/api/students/${S.alice}`);
    expectStatus(r, 200);
    assert.equal(r.body.student.id, S.alice);
    assert.equal(r.body.student.remaining_actions, 5);
    assert.equal(r.body.student.max_units, 20);
    const rows = r.body.timetable.map((t: { course_id: number; status: string; queue_position: number | null }) => [t.course_id, t.status, t.queue_position]);
    // algo1 meets Sunday 08:00, physics has no class time (last).
    assert.deepEqual(rows, [
      [101, 'queued', 1],
      [108, 'registered', null],
    ]);
    assert.equal(r.body.student.units_held, 6);
    const texts = r.body.history.map((h: { text: string }) => h.text);
    assert.deepEqual(texts, ['Joined the reserve queue of 101-1 Algorithms', 'Took a seat in 108-1 Physics']);
    assert.deepEqual(r.body.history.map((h: { by: string }) => h.by), ['student 1', 'student 1']);
    // f1 drops: alice moves up; then alice drops physics (uses an action); staff remove her from algo1.
    expectStatus(await fx.request('DELETE', '/student/course?course_id=101', { token: fx.studentToken(S.f1) }), 204);
    expectStatus(await fx.request('DELETE', '/student/course?course_id=108', { token: fx.studentToken(S.alice) }), 204);
    expectStatus(await fx.request('DELETE', `/staff/force-std?std_id=${S.alice}&course_id=101&group_id=1`, { token: fx.staffToken() }), 204);
    const h = (await staffGet(`/admin/api/students/${S.alice}`)).body.history as { text: string; by: string; at: string }[];
    assert.deepEqual(
      h.map((x) => `${x.by}: ${x.text}`),
      [
        'staff 900: Removed by staff from their seat in 101-1 Algorithms',
        'student 1: Used a drop or change action (4 left)',
        'student 1: Dropped their seat in 108-1 Physics',
        'student 10: Moved up from the reserve queue to a seat in 101-1 Algorithms',
        'student 1: Joined the reserve queue of 101-1 Algorithms',
        'student 1: Took a seat in 108-1 Physics',
      ],
    );
    const raw = JSON.stringify(h);
    assert.doesNotMatch(raw, /movedIn|movedOut|request|req-/);
    expectError(await staffGet('/admin/api/students/424242'), 404, 'STUDENT_NOT_FOUND');
  });

  it('section transitions carry a sentence and who asked', async () => {
    await enroll(S.f1, C.algo1);
    await enroll(S.f2, C.algo1);
    await enroll(S.alice, C.algo1);
    expectStatus(await fx.request('POST', '/student/swap', { token: fx.studentToken(S.f1), body: { drop: { course_id: 101, group_id: 1 }, enroll: { course_id: 108, group_id: 1 } } }), 200);
    const d = (await staffGet('/admin/api/sections/101/1')).body;
    assert.deepEqual(
      d.transitions.map((t: { by: string; text: string }) => `${t.by}: ${t.text}`),
      [
        'student 10: Student 1 moved up from the reserve queue to a seat',
        'student 10: Student 10 gave up their seat for another section',
        'student 1: Student 1 joined the reserve queue',
        'student 11: Student 11 took a seat',
        'student 10: Student 10 took a seat',
        'system: Section created with 2 seats and 2 reserve places',
      ],
    );
  });

  it('fill over time: running totals per section and for the term, ending at the live numbers', async () => {
    await enroll(S.f1, C.algo1);
    fx.clock.now += MINUTE;
    await enroll(S.f2, C.algo1);
    fx.clock.now += MINUTE;
    await enroll(S.alice, C.algo1);
    fx.clock.now += MINUTE;
    await enroll(S.bea, C.physics);
    fx.clock.now += MINUTE;
    expectStatus(await fx.request('DELETE', '/student/course?course_id=101', { token: fx.studentToken(S.f1) }), 204);
    const sec = (await staffGet('/admin/api/sections/101/1/fill?buckets=100')).body;
    assert.equal(sec.capacity, 2);
    assert.equal(sec.reserve_capacity, 2);
    assert.deepEqual(
      sec.points.map((p: { registered: number; queued: number }) => [p.registered, p.queued]),
      [
        [1, 0],
        [2, 0],
        [2, 1],
        [2, 0], // f1 dropped and alice moved up, in the same minute
      ],
    );
    const term = (await staffGet('/admin/api/fill?buckets=100')).body;
    const last = term.points.at(-1);
    assert.deepEqual([last.registered, last.queued], [3, 0]);
    assert.equal(term.points.length, 5);
    // At most `buckets` points.
    const coarse = (await staffGet('/admin/api/fill?buckets=2')).body;
    assert.ok(coarse.points.length <= 2);
    assert.deepEqual([coarse.points.at(-1).registered, coarse.points.at(-1).queued], [3, 0]);
    expectError(await staffGet('/admin/api/sections/999/1/fill'), 404, 'SECTION_NOT_FOUND');
    expectError(await staffGet('/admin/api/fill?buckets=1'), 400, 'BAD_REQUEST');
  });

  it('exports the section list as CSV with RFC 4180 quoting and formulas neutralised, with the filters', async () => {
    expectStatus(
      await fx.request('POST', '/sections', {
        token: fx.staffToken(),
        body: { course_id: 300, group_id: 1, name: 'Ethics, "Law"\r\nand Society', lecturer: '=HYPERLINK("http://x")', units: 2, capacity: 1, reserve_capacity: 0 },
      }),
      201,
    );
    await enroll(S.alice, [300, 1]);
    const r = await staffGet('/admin/api/sections.csv');
    expectStatus(r, 200);
    assert.match(String(r.headers['content-type']), /^text\/csv; charset=utf-8/);
    assert.match(String(r.headers['content-disposition']), /attachment; filename="sections.csv"/);
    assert.ok(r.raw.includes('"Ethics, ""Law""\r\nand Society"'), 'quoted, quotes doubled, line break kept inside quotes');
    assert.ok(r.raw.includes(`,"'=HYPERLINK(""http://x"")",`), 'formula prefixed and quoted');
    const rows = parseCsv(r.raw);
    assert.deepEqual(rows[0], ['course_id', 'group_id', 'name', 'lecturer', 'department', 'units', 'capacity', 'registered', 'reserve_capacity', 'queued', 'sex_lock', 'status', 'state', 'class_time', 'exam_time_utc']);
    assert.equal(rows.length, 1 + 10);
    const ethics = rows.find((x) => x[0] === '300');
    assert.deepEqual(ethics, ['300', '1', 'Ethics, "Law"\r\nand Society', `'=HYPERLINK("http://x")`, '', '2', '1', '1', '0', '0', '', 'open', 'open.full', '', '']);
    const algo = rows.find((x) => x[0] === '101' && x[1] === '1');
    assert.deepEqual(algo?.slice(2, 6), ['Algorithms', 'Donald Knuth', 'Computer Science', '3']);
    assert.equal(algo?.[13], 'Sun Tue 08:00-09:30');
    const full = parseCsv((await staffGet('/admin/api/sections.csv?filter=full')).raw);
    assert.deepEqual(full.slice(1).map((x) => `${x[0]}-${x[1]}`), ['300-1']);
    const closed = parseCsv((await staffGet('/admin/api/sections.csv?filter=closed')).raw);
    assert.deepEqual(closed.slice(1).map((x) => `${x[0]}-${x[1]}`), ['105-1']);
    expectError(await staffGet('/admin/api/sections.csv?filter=nonsense'), 400, 'BAD_REQUEST');
  });

  it('exports a roster as CSV: registered in seat order, then the queue in order', async () => {
    await enroll(S.f1, C.algo1);
    await enroll(S.bea, C.algo1);
    await enroll(S.alice, C.algo1);
    await enroll(S.f2, C.algo1);
    const r = await staffGet('/admin/api/sections/101/1/roster.csv');
    expectStatus(r, 200);
    assert.match(String(r.headers['content-type']), /^text\/csv/);
    assert.match(String(r.headers['content-disposition']), /filename="roster-101-1.csv"/);
    assert.deepEqual(parseCsv(r.raw), [
      ['student_id', 'status', 'position', 'gender', 'department', 'entry_year'],
      ['10', 'registered', '1', 'male', 'Computer Science', '2024'],
      ['2', 'registered', '2', 'female', 'Computer Science', '2024'],
      ['1', 'queued', '1', 'male', 'Computer Science', '2024'],
      ['11', 'queued', '2', 'male', 'Computer Science', '2024'],
    ]);
    expectError(await staffGet('/admin/api/sections/999/1/roster.csv'), 404, 'SECTION_NOT_FOUND');
  });

  it('documents the new routes in the OpenAPI document', async () => {
    const paths = (await fx.request('GET', '/docs/json')).body.paths;
    for (const p of ['/admin/api/summary', '/admin/api/students/{studentId}', '/admin/api/fill', '/admin/api/sections/{courseId}/{groupId}/fill', '/admin/api/sections.csv', '/admin/api/sections/{courseId}/{groupId}/roster.csv']) {
      assert.ok(paths[p]?.get, p);
    }
    assert.ok(paths['/admin/api/sections.csv'].get.responses['200'].content['text/csv']);
  });
});

// The SQL reads (studentTransitions, fillHistory) over the real stores.
const NOW = T0 + 5 * MINUTE;
for (const mode of [embeddedMode, fullMode] as ModeFactory[]) {
  describe(`registrar reads over the ${mode.name} store`, async () => {
    const { skip, harness } = await seededStore(mode, NOW);

    it('history and fill come from the transitions table, the same as the in-memory log gives', { skip, timeout: 120_000 }, async () => {
      const h = harness();
      const put = async (id: number, [course_id, group_id]: Sec) =>
        expectStatus(await h.request('PUT', '/student/course', { token: h.token(id, 'student'), body: { course_id, group_id } }), 204);
      await put(S.f1, C.algo1);
      h.clock.now += MINUTE;
      await put(S.f2, C.algo1);
      h.clock.now += MINUTE;
      await put(S.alice, C.algo1);
      h.clock.now += MINUTE;
      expectStatus(await h.request('DELETE', '/student/course?course_id=101', { token: h.token(S.f1, 'student') }), 204);
      await h.databaseState(); // full mode: wait for the batcher
      const staff = h.token(900, 'staff');
      const fill = (await h.request('GET', '/admin/api/sections/101/1/fill', { token: staff })).body;
      assert.deepEqual(
        fill.points.map((p: { registered: number; queued: number }) => [p.registered, p.queued]),
        [
          [1, 0],
          [2, 0],
          [2, 1],
          [2, 0],
        ],
      );
      const term = (await h.request('GET', '/admin/api/fill', { token: staff })).body;
      assert.deepEqual([term.points.at(-1).registered, term.points.at(-1).queued], [2, 0]);
      const hist = (await h.request('GET', `/admin/api/students/${S.alice}`, { token: staff })).body.history;
      assert.deepEqual(hist.map((x: { text: string }) => x.text), [
        'Moved up from the reserve queue to a seat in 101-1 Algorithms',
        'Joined the reserve queue of 101-1 Algorithms',
      ]);
      const f1 = (await h.request('GET', `/admin/api/students/${S.f1}`, { token: staff })).body.history;
      assert.deepEqual(f1.map((x: { text: string }) => x.text), [
        'Used a drop or change action (4 left)',
        'Dropped their seat in 101-1 Algorithms',
        'Took a seat in 101-1 Algorithms',
      ]);
    });
  });
}

describe('demo data starts mid-term', () => {
  const now = Date.UTC(2026, 0, 12, 9, 0);
  const data = generateDemoData({ now, passwordHash: 'x', staffPasswordHash: 'y' });

  it('is deterministic, inside each student\'s window, and leaves the README\'s student and section alone', () => {
    assert.deepEqual(generateDemoData({ now, passwordHash: 'x', staffPasswordHash: 'y' }), data);
    assert.ok(data.enrollments.length > 1000, `${data.enrollments.length} requests`);
    assert.equal(data.closures.length, 8);
    const students = new Map(data.students.map((s) => [s.id, s]));
    for (const e of data.enrollments) {
      assert.ok(e.studentId > DEMO_STUDENT_ID + 99, 'students 40000001-40000100 start empty');
      assert.notEqual(e.courseId, 40101);
      const st = students.get(e.studentId);
      assert.ok(st && e.at >= st.enrollmentStart && e.at < now);
    }
    for (let i = 1; i < data.enrollments.length; i++) assert.ok((data.enrollments[i - 1]?.at ?? 0) <= (data.enrollments[i]?.at ?? 0));
    for (const c of data.closures) assert.notEqual(c.courseId, 40101);
  });

  it('loads as one durable batch: seats taken, queues, full and closed sections, and the same state after a restart', { timeout: 120_000 }, async () => {
    const store = new MemoryPersistence();
    const logger = pino({ level: 'silent' });
    const e = createEngine({ persistence: store, logger, enrollmentWindowMs: 60 * MINUTE, now: () => now });
    await e.start();
    await e.importBatch(data, { requestId: 'demo-data', actor: 'system' });
    assert.equal(store.appendCount, 1);
    const s = e.registrarSummary();
    assert.ok(s.studentsHolding > 500, `${s.studentsHolding} holding`);
    assert.ok(s.studentsQueued > 20, `${s.studentsQueued} queued`);
    assert.ok(s.sectionsFull >= 10, `${s.sectionsFull} full`);
    assert.equal(s.sectionsClosed, 8);
    assert.ok(s.sectionsWaitlisted >= 5, `${s.sectionsWaitlisted} waitlisted`);
    // Nobody breaks a rule: no overbooking, one group per course, units within the limit.
    const state = e.dumpState();
    for (const sec of state.sections) {
      assert.ok(sec.registered.length <= sec.capacity);
      assert.ok(sec.queue.length <= sec.reserveCapacity);
    }
    assert.deepEqual(e.studentSections(DEMO_STUDENT_ID), []);
    assert.equal(e.getSection(40101, 1).registeredCount, 0);
    const again = createEngine({ persistence: store, logger, enrollmentWindowMs: 60 * MINUTE, now: () => now });
    await again.start();
    assert.deepEqual(normalize(again.dumpState()), normalize(state));
    // The README's example: the first demo student enrolls in 40101 group 1.
    assert.equal(await again.enroll(DEMO_STUDENT_ID, 40101, 1, { requestId: 'readme', actor: `student:${DEMO_STUDENT_ID}` }), 'registered');
    e.stop();
    again.stop();
  });

  it('is kept by the embedded store (PGlite) across a restart, as one append', { timeout: 180_000 }, async () => {
    const h = await embeddedMode.open({ now });
    try {
      let appends = 0;
      const orig = h.store.append.bind(h.store);
      h.store.append = (events) => {
        appends += 1;
        return orig(events);
      };
      await h.engine.importBatch(data, { requestId: 'demo-data', actor: 'system' });
      h.store.append = orig;
      assert.equal(appends, 1);
      const state = normalize(h.engine.dumpState());
      assert.ok(h.engine.registrarSummary().studentsQueued > 20);
      await h.restart();
      assert.deepEqual(normalize(h.engine.dumpState()), state);
      const fill = await h.engine.fillHistory(50);
      const registered = h.engine.listSections().reduce((n, v) => n + v.registeredCount, 0);
      assert.equal(fill.at(-1)?.registered, registered, 'the term chart ends at the seats taken');
    } finally {
      await h.close();
    }
  });
});
