import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { createHttpFixture, expectError, expectStatus, OTHER_STAFF, S, STAFF, T0, type HttpFixture } from './support/http-fixture.js';

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
  });
});
