import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { createEngine } from '../src/engine/engine.js';
import { createLogger } from '../src/logger.js';
import { hashPassword, verifyPassword } from '../src/password.js';
import { C, createHttpFixture, expectError, expectStatus, OTHER_STAFF, S, STAFF, T0, type HttpFixture } from './support/http-fixture.js';
import { replayLog } from './support/memory-persistence.js';

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

const login = (user: number, password: string, staff = false) => fx.request('POST', '/login', { body: { user, password, staff } });

describe('POST /students', () => {
  const body = {
    id: 500,
    password: 'correct horse',
    enrollment_start_time: '2025-09-01T07:30:00Z',
    max_units: 12,
    remaining_actions: 2,
    department_id: 2,
    entry_year: 2025,
    gender: 'female',
  };
  const create = (b: unknown) => fx.request('POST', '/students', { token: fx.staffToken(), body: b });

  it('creates a student with 201 {id}, who can log in and enroll at once', async () => {
    const r = await create(body);
    expectStatus(r, 201);
    assert.deepEqual(r.body, { id: 500 });
    const l = await login(500, 'correct horse');
    expectStatus(l, 200);
    const me = await fx.request('GET', '/me', { token: l.body.token });
    assert.deepEqual(me.body, {
      id: 500,
      role: 'student',
      department_id: 2,
      max_units: 12,
      remaining_actions: 2,
      enrollment_start_time: '2025-09-01T07:30:00.000Z',
      gender: 'female',
      entry_year: 2025,
    });
    expectStatus(await fx.request('PUT', '/student/course', { token: l.body.token, body: { course_id: 104, group_id: 1 } }), 204);
    expectError(await login(500, 'wrong'), 401, 'BAD_CREDENTIALS');
  });

  it('stores a bcrypt hash, never the password', async () => {
    expectStatus(await create(body), 201);
    const rec = fx.engine.getStudent(500);
    assert.ok(rec);
    assert.match(rec.passwordHash, /^\$2[aby]\$10\$/);
    assert.ok(!rec.passwordHash.includes('correct horse'));
  });

  it('accepts unix seconds and zone offsets for the window start, and optional fields may be omitted', async () => {
    const secs = Math.floor(T0 / 1000);
    expectStatus(await create({ id: 501, password: 'p-long-enough-1', enrollment_start_time: secs, max_units: 20, remaining_actions: 1, gender: 'male' }), 201);
    assert.equal(fx.engine.getStudent(501)?.enrollmentStart, secs * 1000);
    assert.equal(fx.engine.getStudent(501)?.departmentId, null);
    assert.equal(fx.engine.getStudent(501)?.entryYear, null);
    expectStatus(await create({ ...body, id: 502, enrollment_start_time: '2025-09-01T11:30:00+03:30' }), 201);
    assert.equal(fx.engine.getStudent(502)?.enrollmentStart, Date.parse('2025-09-01T08:00:00Z'));
  });

  it('refuses ambiguous or invalid times, unknown departments, over-long passwords, and duplicates', async () => {
    for (const t of ['2025-09-01T07:30:00', '2025-09-01', 'next monday', '2025-13-45T99:00:00Z', '2026-02-30T12:00:00Z', '2025-04-31T08:00:00Z', '2025-02-29T08:00:00Z', -5, 1.5]) {
      expectError(await create({ ...body, enrollment_start_time: t }), 400, 'BAD_REQUEST');
    }
    expectError(await create({ ...body, department_id: 99 }), 400, 'BAD_REQUEST');
    expectError(await create({ ...body, password: 'ü'.repeat(37) }), 400, 'BAD_REQUEST'); // 74 bytes
    expectError(await create({ ...body, gender: 'other' }), 400, 'BAD_REQUEST');
    assert.equal(fx.engine.getStudent(500), undefined);
    expectError(await create({ ...body, id: S.alice }), 409, 'ALREADY_EXISTS');
    expectStatus(await login(S.alice, 'pw'), 200); // the existing student is untouched
  });
});

describe('POST /staff', () => {
  it('creates a staff member with 201 {id}, who can log in as staff at once', async () => {
    const r = await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 950, password: 's3cret-staff-pw', department_id: 1 } });
    expectStatus(r, 201);
    assert.deepEqual(r.body, { id: 950 });
    const l = await login(950, 's3cret-staff-pw', true);
    expectStatus(l, 200);
    const me = await fx.request('GET', '/me', { token: l.body.token });
    assert.deepEqual(me.body, { id: 950, role: 'staff', department_id: 1 });
    expectStatus(await fx.request('GET', '/staff/student-courses?std_id=1', { token: l.body.token }), 200);
  });

  it('refuses duplicates with 409 and unknown departments with 400', async () => {
    expectError(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: OTHER_STAFF, password: 'x-long-enough' } }), 409, 'ALREADY_EXISTS');
    expectError(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 951, password: 'x-long-enough', department_id: 5 } }), 400, 'BAD_REQUEST');
    expectError(await login(951, 'x-long-enough', true), 401, 'BAD_CREDENTIALS');
  });
});

describe('GET /departments', () => {
  it('lists departments', async () => {
    const r = await fx.request('GET', '/departments', { token: fx.studentToken() });
    expectStatus(r, 200);
    assert.deepEqual(r.body, {
      departments: [
        { id: 1, name: 'Computer Science' },
        { id: 2, name: 'Mathematics' },
      ],
    });
  });
});

describe('POST /departments', () => {
  it('staff add a department that sections and students can then name; students may not, and ids are not reused', async () => {
    const staff = fx.staffToken();
    // Before: a section for department 7 is refused.
    const section = { course_id: 7001, group_id: 1, name: 'Geology', lecturer: 'L', units: 2, capacity: 10, reserve_capacity: 0, for_department: 7 };
    expectError(await fx.request('POST', '/sections', { token: staff, body: section }), 400, 'BAD_REQUEST');
    expectError(await fx.request('POST', '/departments', { token: fx.studentToken(), body: { id: 7, name: 'Geology' } }), 403, 'FORBIDDEN');
    expectError(await fx.request('POST', '/departments', { token: staff, body: { id: 7, name: '  ' } }), 400, 'BAD_REQUEST');
    expectError(await fx.request('POST', '/departments', { token: staff, body: { id: 7 } }), 400, 'BAD_REQUEST');
    const r = await fx.request('POST', '/departments', { token: staff, body: { id: 7, name: ' Geology ' } });
    expectStatus(r, 201);
    assert.deepEqual(r.body, { id: 7, name: 'Geology' });
    expectError(await fx.request('POST', '/departments', { token: staff, body: { id: 7, name: 'Other' } }), 409, 'ALREADY_EXISTS');
    assert.deepEqual((await fx.request('GET', '/departments', { token: staff })).body.departments.at(-1), { id: 7, name: 'Geology' });
    expectStatus(await fx.request('POST', '/sections', { token: staff, body: section }), 201);
    // Durable: appended like any other change.
    assert.ok(fx.persistence.log.some((e) => e.type === 'departmentCreated' && e.department.id === 7));
  });
});

describe('GET /me', () => {
  it('describes the student without the password hash', async () => {
    const r = await fx.request('GET', '/me', { token: fx.studentToken(S.eve) });
    expectStatus(r, 200);
    assert.deepEqual(r.body, {
      id: S.eve,
      role: 'student',
      department_id: 1,
      max_units: 20,
      remaining_actions: 0,
      enrollment_start_time: new Date(T0).toISOString(),
      gender: 'female',
      entry_year: 2024,
    });
    assert.ok(!r.raw.includes('$2'));
  });

  it('describes staff, and answers 401 for a token whose user is gone', async () => {
    const r = await fx.request('GET', '/me', { token: fx.staffToken(STAFF) });
    assert.deepEqual(r.body, { id: STAFF, role: 'staff', department_id: 1 });
    expectError(await fx.request('GET', '/me', { token: fx.staffToken(4242) }), 401, 'UNAUTHENTICATED');
    expectError(await fx.request('GET', '/me', { token: fx.studentToken(4242) }), 401, 'UNAUTHENTICATED');
  });
});

describe('account safety: admin role and password rules (issue 11)', () => {
  const student = { id: 520, enrollment_start_time: 0, max_units: 20, remaining_actions: 1, gender: 'male' };

  it('lets only admin staff create staff: ordinary staff get 403 ADMIN_REQUIRED and nothing is created', async () => {
    const r = await fx.request('POST', '/staff', { token: fx.staffToken(OTHER_STAFF), body: { id: 952, password: 'long-enough-pw' } });
    expectError(r, 403, 'ADMIN_REQUIRED');
    assert.equal(fx.engine.getStaff(952), undefined);
    // Ordinary staff still add students; the admin adds staff.
    expectStatus(await fx.request('POST', '/students', { token: fx.staffToken(OTHER_STAFF), body: { ...student, password: 'long-enough-pw' } }), 201);
    expectStatus(await fx.request('POST', '/staff', { token: fx.staffToken(STAFF), body: { id: 952, password: 'long-enough-pw' } }), 201);
  });

  it('refuses passwords under the minimum length with 400 WEAK_PASSWORD, for students and staff', async () => {
    for (const password of ['s', 'nine-char', '123456789']) {
      expectError(await fx.request('POST', '/students', { token: fx.staffToken(), body: { ...student, password } }), 400, 'WEAK_PASSWORD');
      expectError(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 953, password } }), 400, 'WEAK_PASSWORD');
    }
    assert.equal(fx.engine.getStudent(520), undefined);
    assert.equal(fx.engine.getStaff(953), undefined);
    expectStatus(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 953, password: 'ten-chars!' } }), 201);
  });
});

describe('account safety: demo passwords are refused outside demo mode', () => {
  it('refuses a configured demo password for new accounts with 400 WEAK_PASSWORD', async () => {
    await fx.close();
    fx = await createHttpFixture({ app: { refusedPasswords: ['student-pass', 'staff-pass'] } });
    expectError(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 954, password: 'staff-pass' } }), 400, 'WEAK_PASSWORD');
    const student = { id: 521, password: 'student-pass', enrollment_start_time: 0, max_units: 20, remaining_actions: 1, gender: 'male' };
    expectError(await fx.request('POST', '/students', { token: fx.staffToken(), body: student }), 400, 'WEAK_PASSWORD');
    assert.equal(fx.engine.getStudent(521), undefined);
    // Variants of a demo password are refused too (a probe got 'staff-pass ' and 'Staff-Pass' accepted).
    for (const password of ['staff-pass ', 'Staff-Pass', 'student-pass1']) {
      expectError(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 955, password } }), 400, 'WEAK_PASSWORD');
    }
  });

  it('refuses passwords any guesser tries first: one character repeated, runs, the most common ones; a good one passes', async () => {
    for (const password of ['aaaaaaaaaa', '          ', 'ababababab', '1234567890', '0123456789', 'qwertyuiop', 'abcdefghijk', 'Password123', 'letmein123']) {
      const r = await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 956, password } });
      expectError(r, 400, 'WEAK_PASSWORD');
    }
    assert.equal(fx.engine.getStaff(956), undefined);
    expectStatus(await fx.request('POST', '/staff', { token: fx.staffToken(), body: { id: 956, password: 'lime tram 42 orbit' } }), 201);
    expectError(await fx.request('POST', '/me/password', { token: fx.studentToken(S.alice), body: { current_password: 'pw', new_password: 'qwertyuiop' } }), 400, 'WEAK_PASSWORD');
  });
});

describe('GET and PATCH /students/{id}: a registrar corrects a student record', () => {
  const patch = (id: number, body: unknown, token = fx.staffToken(OTHER_STAFF)) => fx.request('PATCH', `/students/${id}`, { token, body });
  const view = async (id: number) => (await fx.request('GET', `/students/${id}`, { token: fx.staffToken() })).body as Record<string, unknown>;
  const enroll = (id: number, [course_id, group_id]: readonly [number, number]) =>
    fx.request('PUT', '/student/course', { token: fx.studentToken(id), body: { course_id, group_id } });
  const drop = (id: number, course: number) => fx.request('DELETE', `/student/course?course_id=${course}`, { token: fx.studentToken(id) });

  it('shows staff a record without its password hash; students may not; an unknown id is 404', async () => {
    const r = await fx.request('GET', `/students/${S.alice}`, { token: fx.staffToken(OTHER_STAFF) });
    expectStatus(r, 200);
    assert.deepEqual(r.body, {
      id: S.alice,
      department_id: 1,
      max_units: 20,
      remaining_actions: 5,
      enrollment_start_time: new Date(T0).toISOString(),
      gender: 'male',
      entry_year: 2024,
    });
    expectError(await fx.request('GET', `/students/${S.alice}`, { token: fx.studentToken(S.alice) }), 403, 'FORBIDDEN');
    expectError(await fx.request('GET', '/students/4242', { token: fx.staffToken() }), 404, 'STUDENT_NOT_FOUND');
  });

  it('gives actions back, opens a window early and raises a unit limit, each taking effect on the next request', async () => {
    expectStatus(await enroll(S.eve, C.physics), 204);
    expectError(await drop(S.eve, C.physics[0]), 400, 'NO_ACTIONS_LEFT');
    const r = await patch(S.eve, { remaining_actions: 2 });
    expectStatus(r, 200);
    assert.equal((r.body as Record<string, unknown>).remaining_actions, 2);
    expectStatus(await drop(S.eve, C.physics[0]), 204);
    assert.equal((await view(S.eve)).remaining_actions, 1);

    expectError(await enroll(S.carl, C.physics), 400, 'ENROLLMENT_WINDOW_CLOSED');
    expectStatus(await patch(S.carl, { enrollment_start_time: new Date(T0).toISOString() }), 200);
    expectStatus(await enroll(S.carl, C.physics), 204);

    expectError(await enroll(S.dan, C.heavy), 400, 'UNITS_EXCEEDED');
    expectStatus(await patch(S.dan, { max_units: 10 }), 200);
    expectStatus(await enroll(S.dan, C.heavy), 204);
    // A lower limit than what is held keeps the places; it binds the next enroll.
    expectStatus(await patch(S.dan, { max_units: 1 }), 200);
    const held = await fx.request('GET', '/student/course', { token: fx.studentToken(S.dan) });
    assert.equal((held.body as { data: unknown[] }).data.length, 1);
    expectError(await enroll(S.dan, C.physics), 400, 'UNITS_EXCEEDED');
  });

  it('is durable: a restarted engine loads the corrected record, and the history tells it without the password', async () => {
    expectStatus(await patch(S.alice, { remaining_actions: 9, max_units: 14, department_id: 2, entry_year: null, password: 'a brand new password' }), 200);
    const updates = fx.persistence.log.filter((e) => e.type === 'studentUpdated');
    assert.equal(updates.length, 1, 'one event for the whole correction');
    const restarted = createEngine({ persistence: fx.persistence, logger: createLogger('silent'), enrollmentWindowMs: 60 * 60_000, now: () => fx.clock.now });
    await restarted.start();
    try {
      const rec = restarted.getStudent(S.alice);
      assert.ok(rec);
      assert.deepEqual(
        { remaining: rec.remainingActions, units: rec.maxUnits, dep: rec.departmentId, year: rec.entryYear },
        { remaining: 9, units: 14, dep: 2, year: null },
      );
      assert.ok(await verifyPassword('a brand new password', rec.passwordHash));
    } finally {
      restarted.stop();
    }
    const history = await fx.request('GET', `/admin/api/students/${S.alice}`, { token: fx.staffToken() });
    expectStatus(history, 200);
    const entry = (history.body as { history: { type: string; text: string }[] }).history.find((h) => h.type === 'studentUpdated');
    assert.ok(entry, 'the correction is in the student history');
    assert.match(entry.text, /Record changed by staff: unit limit 14, 9 drop or change actions left, department 2, no entry year, password reset/);
    assert.doesNotMatch(JSON.stringify(history.body), /\$2[aby]\$/);
  });

  it('a new password works at once, the old one no longer does, and the student\'s earlier tokens are revoked', async () => {
    const before = await login(S.alice, 'pw');
    expectStatus(before, 200);
    const oldToken = (before.body as { token: string }).token;
    fx.clock.now += 1000;
    expectStatus(await patch(S.alice, { password: 'another long password' }), 200);
    fx.clock.now += 1; // a login after the reset, not in the same millisecond as its revocation
    expectError(await login(S.alice, 'pw'), 401, 'BAD_CREDENTIALS');
    const after = await login(S.alice, 'another long password');
    expectStatus(after, 200);
    expectStatus(await fx.request('GET', '/student/course', { token: (after.body as { token: string }).token }), 200);
    assert.equal((await fx.request('GET', '/student/course', { token: oldToken })).status, 401);
    assert.ok(!fx.logs.some((l) => l.includes('another long password')), 'the password is never logged');
  });

  it('refuses bad corrections with 400 and changes nothing; only staff may correct; unknown students are 404', async () => {
    const before = await view(S.alice);
    const appends = fx.persistence.appendCount;
    for (const body of [
      {},
      { gender: 'female' },
      { id: 77 },
      { max_units: -1 },
      { remaining_actions: 40_000 },
      { remaining_actions: 1.5 },
      { enrollment_start_time: '2025-09-01' },
      { enrollment_start_time: '2026-02-30T12:00:00Z' },
      { department_id: 99 },
      { entry_year: 99 },
      { password: 'ü'.repeat(37) },
      { max_units: 3, department_id: 99 },
    ]) {
      expectError(await patch(S.alice, body), 400, 'BAD_REQUEST');
    }
    expectError(await patch(S.alice, { password: 'short' }), 400, 'WEAK_PASSWORD');
    expectError(await patch(S.alice, { remaining_actions: 1 }, fx.studentToken(S.alice)), 403, 'FORBIDDEN');
    expectError(await patch(4242, { remaining_actions: 1 }), 404, 'STUDENT_NOT_FOUND');
    assert.deepEqual(await view(S.alice), before);
    assert.equal(fx.persistence.appendCount, appends, 'nothing was written');
    expectStatus(await login(S.alice, 'pw'), 200);
  });

  it('a correction that changes nothing writes nothing; a failed write is 503 and leaves the record as it was', async () => {
    const appends = fx.persistence.appendCount;
    expectStatus(await patch(S.alice, { max_units: 20, remaining_actions: 5 }), 200);
    assert.equal(fx.persistence.appendCount, appends);
    fx.persistence.failNext = 1;
    expectError(await patch(S.alice, { remaining_actions: 0 }), 503, 'UNAVAILABLE');
    assert.equal((await view(S.alice)).remaining_actions, 5);
    expectStatus(await patch(S.alice, { remaining_actions: 0 }), 200);
    assert.equal((await view(S.alice)).remaining_actions, 0);
  });

  it('is decided between the student\'s own requests: concurrent drops and a correction never lose one another', async () => {
    for (const c of [C.physics, C.heavy, C.algo2]) expectStatus(await enroll(S.alice, c), 204);
    let release!: () => void;
    fx.persistence.holdAppends = new Promise((r) => (release = r));
    const replies = Promise.all([drop(S.alice, C.physics[0]), patch(S.alice, { remaining_actions: 10 }), drop(S.alice, C.heavy[0])] as const);
    await new Promise((r) => setTimeout(r, 20));
    fx.persistence.holdAppends = null;
    release();
    const [d1, p, d2] = await replies;
    expectStatus(d1, 204);
    expectStatus(p, 200);
    expectStatus(d2, 204);
    // One after the other, in the student's stream: each step numbered once, in log order, and the
    // count after the correction is 10 less one per drop decided after it.
    assert.equal((p.body as Record<string, unknown>).remaining_actions, 10);
    const steps = fx.persistence.log.filter((e) => (e.type === 'actionUsed' || e.type === 'studentUpdated') && e.studentId === S.alice);
    assert.deepEqual(steps.map((e) => e.type).sort(), ['actionUsed', 'actionUsed', 'studentUpdated']);
    const seqs = steps.map((e) => e.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in log order');
    assert.equal(new Set(seqs).size, 3, 'no step numbered twice');
    const dropsAfter = steps.length - 1 - steps.findIndex((e) => e.type === 'studentUpdated');
    assert.equal((await view(S.alice)).remaining_actions, 10 - dropsAfter);
    const replayed = replayLog(fx.persistence.log).students.find((s) => s.id === S.alice);
    assert.equal(replayed?.remainingActions, 10 - dropsAfter);
  });
});

describe('POST /me/password and PATCH /staff/{id}: changing a password', () => {
  const change = (token: string, current_password: string, new_password: string) =>
    fx.request('POST', '/me/password', { token, body: { current_password, new_password } });
  const tokenOf = (r: { body: unknown }) => (r.body as { token: string }).token;

  it('a student changes their own password: the reply carries a working token, every earlier token and the old password stop working', async () => {
    const first = tokenOf(await login(S.alice, 'pw'));
    fx.clock.now += 5;
    const second = tokenOf(await login(S.alice, 'pw'));
    fx.clock.now += 5;
    const r = await change(second, 'pw', 'my own new password');
    expectStatus(r, 200);
    const fresh = tokenOf(r);
    expectStatus(await fx.request('GET', '/student/course', { token: fresh }), 200);
    expectError(await fx.request('GET', '/student/course', { token: first }), 401, 'TOKEN_REVOKED');
    expectError(await fx.request('GET', '/student/course', { token: second }), 401, 'TOKEN_REVOKED');
    fx.clock.now += 5;
    expectError(await login(S.alice, 'pw'), 401, 'BAD_CREDENTIALS');
    expectStatus(await login(S.alice, 'my own new password'), 200);
    assert.equal(fx.persistence.log.filter((e) => e.type === 'studentUpdated').length, 1, 'durable, as a step of the student stream');
    assert.ok(!fx.logs.some((l) => l.includes('my own new password')), 'never logged');
    const history = (await fx.request('GET', `/admin/api/students/${S.alice}`, { token: fx.staffToken() })).body as { history: { type: string; text: string; by: string }[] };
    assert.deepEqual(
      history.history.filter((h) => h.type === 'studentUpdated').map((h) => h.text),
      ['Changed their own password'],
      'told as the student\'s own change, not as staff\'s',
    );
  });

  it('staff change their own password the same way; it is durable across a restart', async () => {
    const t = tokenOf(await login(STAFF, 'pw', true));
    fx.clock.now += 5;
    expectStatus(await change(t, 'pw', 'staff new password'), 200);
    fx.clock.now += 5;
    expectError(await login(STAFF, 'pw', true), 401, 'BAD_CREDENTIALS');
    expectStatus(await login(STAFF, 'staff new password', true), 200);
    const restarted = createEngine({ persistence: fx.persistence, logger: createLogger('silent'), enrollmentWindowMs: 60 * 60_000, now: () => fx.clock.now });
    await restarted.start();
    try {
      const rec = restarted.getStaff(STAFF);
      assert.ok(rec && (await verifyPassword('staff new password', rec.passwordHash)));
      assert.ok(!(await verifyPassword('pw', rec.passwordHash)));
      assert.deepEqual(normalizeStaff(restarted), normalizeStaff(fx.engine), 'the restarted engine holds the same staff records and steps');
    } finally {
      restarted.stop();
    }
  });

  it('refuses a wrong current password with 403 WRONG_PASSWORD and throttles guessing; weak or unchanged passwords are 400; nothing changes', async () => {
    const t = fx.studentToken(S.bea);
    expectError(await change(t, 'pw', 'short'), 400, 'WEAK_PASSWORD');
    expectError(await change(t, 'long enough password', 'long enough password'), 400, 'BAD_REQUEST');
    expectError(await fx.request('POST', '/me/password', { token: t, body: { new_password: 'long enough password' } }), 400, 'BAD_REQUEST');
    let throttled: Awaited<ReturnType<typeof change>> | null = null;
    for (let i = 0; i < 30 && throttled === null; i++) {
      const r = await change(t, `guess number ${i}`, 'long enough password');
      if (r.status === 429) throttled = r;
      else expectError(r, 403, 'WRONG_PASSWORD');
    }
    assert.ok(throttled, 'guessing the current password is throttled like logins');
    assert.equal((throttled.body as { code: string }).code, 'LOGIN_THROTTLED');
    assert.equal(fx.persistence.log.filter((e) => e.type === 'studentUpdated').length, 0);
    fx.clock.now += 5;
    expectStatus(await fx.request('GET', '/student/course', { token: t }), 200); // the session itself goes on
  });

  it('an admin resets a staff member\'s password: their tokens end; other staff may not; an unknown id is 404', async () => {
    const other = tokenOf(await login(OTHER_STAFF, 'pw', true));
    fx.clock.now += 5;
    expectError(
      await fx.request('PATCH', `/staff/${STAFF}`, { token: other, body: { password: 'hijacked password' } }),
      403,
      'ADMIN_REQUIRED',
    );
    expectError(await fx.request('PATCH', '/staff/4242', { token: fx.staffToken(), body: { password: 'a fine password' } }), 404, 'STAFF_NOT_FOUND');
    expectError(await fx.request('PATCH', `/staff/${OTHER_STAFF}`, { token: fx.staffToken(), body: { password: 'short' } }), 400, 'WEAK_PASSWORD');
    expectStatus(await fx.request('PATCH', `/staff/${OTHER_STAFF}`, { token: fx.staffToken(), body: { password: 'reset by the admin' } }), 204);
    expectError(await fx.request('GET', '/staff/student-courses?std_id=1', { token: other }), 401, 'TOKEN_REVOKED');
    fx.clock.now += 5;
    expectError(await login(OTHER_STAFF, 'pw', true), 401, 'BAD_CREDENTIALS');
    expectStatus(await login(OTHER_STAFF, 'reset by the admin', true), 200);
    expectStatus(await login(STAFF, 'pw', true), 200); // the admin's own password is untouched
  });

  it("an admin's own password is not reset here (a stolen admin token must not take the account over): 400, nothing changed, the session goes on", async () => {
    const admin = fx.staffToken();
    const r = await fx.request('PATCH', `/staff/${STAFF}`, { token: admin, body: { password: 'taken over by a thief' } });
    expectError(r, 400, 'BAD_REQUEST');
    assert.match(String((r.body as { reason: string }).reason), /POST \/me\/password/);
    fx.clock.now += 5;
    expectError(await login(STAFF, 'taken over by a thief', true), 401, 'BAD_CREDENTIALS');
    expectStatus(await login(STAFF, 'pw', true), 200);
    expectStatus(await fx.request('GET', '/staff/student-courses?std_id=1', { token: admin }), 200);
  });

  it("a registrar's reset always holds over the student's own change at the same moment; concurrent own changes: one wins, the others are refused", async () => {
    const outcomes: string[] = [];
    for (const [i, delay] of [0, 2, 5, 10, 20, 40].entries()) {
      const student = [S.f1, S.f2, S.f3, S.f4, S.bea, S.dan][i] as number;
      const token = fx.studentToken(student);
      fx.clock.now += 5;
      const own = change(token, 'pw', `student own choice ${i}`);
      await new Promise((r) => setTimeout(r, delay));
      const reset = fx.request('PATCH', `/students/${student}`, { token: fx.staffToken(), body: { password: `registrar reset ${i}` } });
      const [o, r] = await Promise.all([own, reset]);
      expectStatus(r, 200);
      fx.clock.now += 5;
      // In either order the registrar's password is the one that holds.
      expectStatus(await login(student, `registrar reset ${i}`), 200);
      expectError(await login(student, `student own choice ${i}`), 401, 'BAD_CREDENTIALS');
      if (o.status === 200) {
        // The student's change came first: the reset revoked its fresh token.
        expectError(await fx.request('GET', '/student/course', { token: tokenOf(o) }), 401, 'TOKEN_REVOKED');
      } else {
        assert.ok(['WRONG_PASSWORD', 'TOKEN_REVOKED'].includes((o.body as { code: string }).code), JSON.stringify(o.body));
      }
      outcomes.push(`${delay} ms: student ${o.status}`);
    }
    // Three changes of one account at once with the same token and password: exactly one holds.
    fx.clock.now += 5;
    const t = fx.studentToken(S.eve);
    const three = await Promise.all(['first choice here', 'second choice here', 'third choice here'].map((pw) => change(t, 'pw', pw)));
    assert.equal(three.filter((r) => r.status === 200).length, 1, JSON.stringify(three.map((r) => r.body)));
    for (const r of three.filter((x) => x.status !== 200)) expectError(r, 403, 'WRONG_PASSWORD');
    const winner = ['first choice here', 'second choice here', 'third choice here'][three.findIndex((r) => r.status === 200)] as string;
    fx.clock.now += 5;
    expectStatus(await login(S.eve, winner), 200);
    expectStatus(await fx.request('GET', '/student/course', { token: tokenOf(three.find((r) => r.status === 200) as { body: unknown }) }), 200);
  });

  it('a login with the old password still being checked when a reset lands is refused, not given a session', async () => {
    // A slow hash (cost 13) keeps the login's check running while the reset is decided.
    const slow = await hashPassword('an old slow password', 13);
    await fx.engine.createStudent({ id: 777, passwordHash: slow, enrollmentStart: T0, maxUnits: 20, remainingActions: 1, departmentId: null, entryYear: null, gender: 'male' }, { requestId: 't', actor: 'system' });
    fx.clock.now += 5;
    const late = login(777, 'an old slow password');
    await new Promise((r) => setTimeout(r, 20));
    expectStatus(await fx.request('PATCH', '/students/777', { token: fx.staffToken(), body: { password: 'the new desk password' } }), 200);
    const r = await late;
    expectError(r, 401, 'BAD_CREDENTIALS');
    assert.match((r.body as { reason: string }).reason, /changed while it was checked/);
  });

  it('a failed write leaves the old password in force and is 503', async () => {
    const t = fx.studentToken(S.bea);
    fx.persistence.failNext = 1;
    expectError(await change(t, 'pw', 'never stored password'), 503, 'UNAVAILABLE');
    fx.clock.now += 5;
    expectStatus(await login(S.bea, 'pw'), 200);
    expectError(await login(S.bea, 'never stored password'), 401, 'BAD_CREDENTIALS');
    fx.persistence.failNext = 1;
    expectError(await fx.request('PATCH', `/staff/${OTHER_STAFF}`, { token: fx.staffToken(), body: { password: 'reset by the admin' } }), 503, 'UNAVAILABLE');
    fx.clock.now += 5;
    expectStatus(await login(OTHER_STAFF, 'pw', true), 200);
    expectError(await login(OTHER_STAFF, 'reset by the admin', true), 401, 'BAD_CREDENTIALS');
  });
});

function normalizeStaff(engine: ReturnType<typeof createEngine>) {
  return engine.dumpState().staff.sort((a, b) => a.id - b.id);
}
