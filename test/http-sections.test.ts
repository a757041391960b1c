import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { C, createHttpFixture, expectError, expectStatus, S, slot, type HttpFixture } from './support/http-fixture.js';

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

const enroll = (student: number, [course_id, group_id]: readonly [number, number]) =>
  fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id, group_id } });
const get = (url: string, token = fx.staffToken()) => fx.request('GET', url, { token });
const ids = (list: { course_id: number; group_id: number }[]) => list.map((c) => `${c.course_id}/${c.group_id}`);

describe('GET /sections', () => {
  it('lists every section for students and staff alike', async () => {
    const r = await get('/sections', fx.studentToken());
    expectStatus(r, 200);
    assert.equal(r.body.sections.length, 9);
    assert.deepEqual(r.body, (await get('/sections')).body);
  });

  it('filters by department and searches name, lecturer and course id case-insensitively', async () => {
    assert.deepEqual(ids((await get('/sections?department=2')).body.sections), ['104/1']);
    assert.deepEqual(ids((await get('/sections?q=KNUTH')).body.sections), ['101/1']);
    assert.deepEqual(ids((await get('/sections?q=algorithms')).body.sections), ['101/1', '101/2']);
    assert.deepEqual(ids((await get('/sections?q=103')).body.sections), ['103/1']);
    assert.deepEqual(ids((await get('/sections?q=algo&department=2')).body.sections), []);
    assert.deepEqual(ids((await get('/sections?q=%20meitner%20')).body.sections), ['108/1']);
  });
});

describe('GET /sections/:courseId/:groupId', () => {
  it('returns one section as CourseData', async () => {
    expectStatus(await enroll(S.alice, C.compilers), 204);
    const r = await get('/sections/103/1', fx.studentToken());
    expectStatus(r, 200);
    assert.equal(r.body.name, 'Compilers');
    assert.equal(r.body.registered_count, 1);
    assert.deepEqual(r.body.class_time, [{ day: 0, start_minute: 540, end_minute: 600 }]);
  });

  it('answers an unknown section with 404 SECTION_NOT_FOUND and a non-numeric id with 400', async () => {
    expectError(await get('/sections/999/1'), 404, 'SECTION_NOT_FOUND');
    expectError(await get('/sections/abc/1'), 400, 'BAD_REQUEST');
    expectError(await get('/sections/101/-1'), 400, 'BAD_REQUEST');
  });
});

describe('GET /sections/:courseId/:groupId/students', () => {
  it('matches GET /staff/course-students', async () => {
    for (const s of [S.f1, S.f2, S.alice]) expectStatus(await enroll(s, C.algo1), 204);
    const r = await get('/sections/101/1/students');
    expectStatus(r, 200);
    assert.deepEqual(r.body, { registered_students: [S.f1, S.f2], reserved_queue_students: [S.alice] });
    assert.deepEqual(r.body, (await get('/staff/course-students?course_id=101&group_id=1')).body);
    expectError(await get('/sections/101/9/students'), 404, 'SECTION_NOT_FOUND');
  });
});

describe('POST /sections', () => {
  const base = { course_id: 201, group_id: 1, name: 'Operating Systems', units: 3, capacity: 1, reserve_capacity: 1 };
  const create = (body: unknown) => fx.request('POST', '/sections', { token: fx.staffToken(), body });

  it('creates a section with 201 CourseData, live at once', async () => {
    const r = await create({
      ...base,
      for_department: 1,
      lecturer: 'Andrew Tanenbaum',
      exam_time: 1_768_208_400,
      class_slot: { days: [1, 3], start_minute: 600, end_minute: 690 },
      sex_lock: 'male',
      notes: 'lab on Thursdays',
    });
    expectStatus(r, 201);
    assert.deepEqual(r.body, {
      course_id: 201,
      group_id: 1,
      name: 'Operating Systems',
      units: 3,
      capacity: 1,
      registered_count: 0,
      reserve_capacity: 1,
      reserved_count: 0,
      exam_time: 1_768_208_400,
      class_time: [
        { day: 1, start_minute: 600, end_minute: 690 },
        { day: 3, start_minute: 600, end_minute: 690 },
      ],
      lecturer: 'Andrew Tanenbaum',
      sex_lock: 'male',
      closed: false,
      state: 'open.seatsAvailable',
      for_department: 1,
      notes: 'lab on Thursdays',
    });
    assert.deepEqual((await get('/sections/201/1')).body, r.body);
    expectStatus(await enroll(S.alice, [201, 1]), 204);
    expectError(await enroll(S.bea, [201, 1]), 400, 'SEX_LOCK');
  });

  it('accepts the packed class_time and defaults optional fields', async () => {
    const packed = slot([0], 480, 570);
    const r = await create({ ...base, class_time: packed });
    expectStatus(r, 201);
    assert.deepEqual(r.body.class_time, [{ day: 0, start_minute: 480, end_minute: 570 }]);
    assert.equal(r.body.exam_time, null);
    assert.equal(r.body.sex_lock, null);
    assert.equal(r.body.lecturer, '');
    assert.equal(r.body.for_department, null);
    // The packed slot is used by the conflict rule: it clashes with Algorithms group 1 on Sunday.
    expectStatus(await enroll(S.alice, C.algo1), 204);
    expectError(await enroll(S.alice, [201, 1]), 400, 'CLASS_CONFLICT');
  });

  it('takes class_time 0 as no class time, as the Go schema stores it (create and edit)', async () => {
    const r = await create({ ...base, class_time: 0 });
    expectStatus(r, 201);
    assert.deepEqual(r.body.class_time, []);
    const p = await fx.request('PATCH', '/sections/201/1', { token: fx.staffToken(), body: { class_time: slot([1], 480, 540) } });
    expectStatus(p, 200);
    const cleared = await fx.request('PATCH', '/sections/201/1', { token: fx.staffToken(), body: { class_time: 0 } });
    expectStatus(cleared, 200);
    assert.deepEqual(cleared.body.class_time, []);
  });

  it('can create a section closed', async () => {
    const r = await create({ ...base, closed: true });
    expectStatus(r, 201);
    assert.equal(r.body.state, 'closed');
    expectError(await enroll(S.alice, [201, 1]), 400, 'SECTION_CLOSED');
  });

  it('refuses bad class times, unknown departments and duplicates', async () => {
    expectError(await create({ ...base, class_time: 12345 }), 400, 'BAD_REQUEST'); // no weekday bit
    expectError(await create({ ...base, class_time: slot([1], 600, 500) }), 400, 'BAD_REQUEST');
    expectError(await create({ ...base, class_slot: { days: [1], start_minute: 600, end_minute: 600 } }), 400, 'BAD_REQUEST');
    expectError(await create({ ...base, class_slot: { days: [7], start_minute: 1, end_minute: 2 } }), 400, 'BAD_REQUEST');
    expectError(
      await create({ ...base, class_time: slot([1], 1, 2), class_slot: { days: [1], start_minute: 1, end_minute: 2 } }),
      400,
      'BAD_REQUEST',
    );
    expectError(await create({ ...base, for_department: 77 }), 400, 'BAD_REQUEST');
    expectError(await get('/sections/201/1'), 404, 'SECTION_NOT_FOUND');
    const dup = await create({ ...base, course_id: 101, group_id: 1 });
    expectError(dup, 409, 'ALREADY_EXISTS');
    assert.equal((await get('/sections/101/1')).body.name, 'Algorithms');
  });
});

describe('PATCH /sections/:courseId/:groupId', () => {
  const patch = (body: unknown, url = '/sections/101/1') => fx.request('PATCH', url, { token: fx.staffToken(), body });

  it('changes capacity (promoting the queue) and descriptive fields together, answering CourseData', async () => {
    for (const s of [S.f1, S.f2, S.alice]) expectStatus(await enroll(s, C.algo1), 204);
    const r = await patch({
      capacity: 3,
      reserve_capacity: 4,
      name: 'Algorithms I',
      lecturer: 'Robert Sedgewick',
      notes: 'moved',
      units: 4,
      exam_time: null,
      class_slot: { days: [4], start_minute: 60, end_minute: 120 },
      for_department: 2,
      sex_lock: 'male',
    });
    expectStatus(r, 200);
    assert.equal(r.body.capacity, 3);
    assert.equal(r.body.registered_count, 3);
    assert.equal(r.body.reserved_count, 0);
    assert.equal(r.body.reserve_capacity, 4);
    assert.equal(r.body.name, 'Algorithms I');
    assert.equal(r.body.lecturer, 'Robert Sedgewick');
    assert.equal(r.body.notes, 'moved');
    assert.equal(r.body.units, 4);
    assert.equal(r.body.exam_time, null);
    assert.deepEqual(r.body.class_time, [{ day: 4, start_minute: 60, end_minute: 120 }]);
    assert.equal(r.body.for_department, 2);
    assert.equal(r.body.sex_lock, 'male');
    assert.deepEqual((await get('/sections/101/1')).body, r.body);
  });

  it('sets exam_time and a packed class_time, and clears a sex lock', async () => {
    const r = await patch({ exam_time: 1_800_000_000, class_time: slot([5], 0, 60), sex_lock: null }, '/sections/104/1');
    expectStatus(r, 200);
    assert.equal(r.body.exam_time, 1_800_000_000);
    assert.deepEqual(r.body.class_time, [{ day: 5, start_minute: 0, end_minute: 60 }]);
    assert.equal(r.body.sex_lock, null);
    expectStatus(await enroll(S.alice, C.linalg), 204);
  });

  it('refuses capacity below the registered count with 409 and changes nothing else', async () => {
    expectStatus(await enroll(S.f1, C.algo1), 204);
    expectStatus(await enroll(S.f2, C.algo1), 204);
    expectError(await patch({ capacity: 1, name: 'Renamed' }), 409, 'CAPACITY_BELOW_REGISTERED');
    const s = (await get('/sections/101/1')).body;
    assert.equal(s.name, 'Algorithms');
    assert.equal(s.capacity, 2);
  });

  it('refuses reserve capacity below the queue and a lock excluding a member, changing nothing', async () => {
    for (const s of [S.f1, S.f2, S.alice, S.f3]) expectStatus(await enroll(s, C.algo1), 204);
    expectError(await patch({ reserve_capacity: 1, name: 'X' }), 409, 'RESERVE_BELOW_QUEUED');
    expectStatus(await enroll(S.bea, C.physics), 204);
    expectError(await patch({ sex_lock: 'male', capacity: 40 }, '/sections/108/1'), 409, 'SEX_LOCK_CONFLICT');
    assert.equal((await get('/sections/101/1')).body.name, 'Algorithms');
    const physics = (await get('/sections/108/1')).body;
    assert.equal(physics.sex_lock, null);
    assert.equal(physics.capacity, 30);
  });

  it('a patch restating the lock a section has is not refused for a member staff forced in under it', async () => {
    // Linear Algebra is female only; staff force a male student in (force skips the student rules).
    expectStatus(await fx.request('PUT', '/staff/force-std', { token: fx.staffToken(), body: { std_id: S.dan, course_id: 104, group_id: 1 } }), 204);
    // A form that sends every field back, the lock unchanged, with a new reserve capacity.
    const r = await patch({ sex_lock: 'female', reserve_capacity: 5 }, '/sections/104/1');
    expectStatus(r, 200);
    assert.deepEqual([r.body.sex_lock, r.body.reserve_capacity], ['female', 5]);
    // A new lock excluding a member is still refused.
    expectStatus(await enroll(S.bea, C.linalg), 204);
    expectError(await patch({ sex_lock: 'male' }, '/sections/104/1'), 409, 'SEX_LOCK_CONFLICT');
  });

  it('refuses units that would put a member over their limit unless forced (409 MEMBER_RULES_CONFLICT)', async () => {
    expectStatus(await enroll(S.dan, C.physics), 204); // dan may hold 4 units; physics has 3
    const r = await patch({ units: 5, name: 'Physics II' }, '/sections/108/1');
    expectError(r, 409, 'MEMBER_RULES_CONFLICT');
    assert.match(r.body.reason, /student 4\b.*UNITS_EXCEEDED.*force/);
    assert.deepEqual([(await get('/sections/108/1')).body.units, (await get('/sections/108/1')).body.name], [3, 'Physics']);
    const forced = await patch({ units: 5, force: true }, '/sections/108/1');
    expectStatus(forced, 200);
    assert.equal(forced.body.units, 5);
    expectError(await patch({ force: 'yes' }, '/sections/108/1'), 400, 'BAD_REQUEST');
  });

  it('accepts a smaller reserve capacity that the same patch\'s capacity growth makes room for', async () => {
    for (const s of [S.f1, S.f2, S.alice, S.f3]) expectStatus(await enroll(s, C.algo1), 204); // 2 registered, 2 queued
    expectError(await patch({ capacity: 3, reserve_capacity: 0 }), 409, 'RESERVE_BELOW_QUEUED');
    const r = await patch({ capacity: 3, reserve_capacity: 1 });
    expectStatus(r, 200);
    assert.deepEqual([r.body.capacity, r.body.reserve_capacity, r.body.registered_count], [3, 1, 3]);
  });

  it('answers an unknown section with 404 and an empty patch with 400', async () => {
    expectError(await patch({ name: 'x' }, '/sections/999/1'), 404, 'SECTION_NOT_FOUND');
    expectError(await patch({}), 400, 'BAD_REQUEST');
    expectError(await patch({ class_time: 5 }), 400, 'BAD_REQUEST');
    expectError(await patch({ for_department: 99 }), 400, 'BAD_REQUEST');
  });
});

describe('POST /sections/:courseId/:groupId/close and /reopen', () => {
  it('closes and reopens, answering CourseData, and enrollment follows', async () => {
    const closed = await fx.request('POST', '/sections/108/1/close', { token: fx.staffToken() });
    expectStatus(closed, 200);
    assert.equal(closed.body.closed, true);
    assert.equal(closed.body.state, 'closed');
    expectError(await enroll(S.alice, C.physics), 400, 'SECTION_CLOSED');
    const opened = await fx.request('POST', '/sections/108/1/reopen', { token: fx.staffToken() });
    expectStatus(opened, 200);
    assert.equal(opened.body.closed, false);
    assert.equal(opened.body.state, 'open.seatsAvailable');
    expectStatus(await enroll(S.alice, C.physics), 204);
  });

  it('is idempotent and answers unknown sections with 404', async () => {
    expectStatus(await fx.request('POST', '/sections/105/1/close', { token: fx.staffToken() }), 200);
    expectError(await fx.request('POST', '/sections/999/1/close', { token: fx.staffToken() }), 404, 'SECTION_NOT_FOUND');
    expectError(await fx.request('POST', '/sections/999/1/reopen', { token: fx.staffToken() }), 404, 'SECTION_NOT_FOUND');
  });
});

describe('GET /sections/:courseId/:groupId/transitions', () => {
  it('lists transitions newest first, with the request id and actor that caused them', async () => {
    const r1 = await fx.request('PUT', '/student/course', {
      token: fx.studentToken(S.alice),
      body: { course_id: 108, group_id: 1 },
      headers: { 'x-request-id': 'enroll-alice-1' },
    });
    expectStatus(r1, 204);
    expectStatus(await fx.request('POST', '/sections/108/1/close', { token: fx.staffToken(), headers: { 'x-request-id': 'close-1' } }), 200);
    const r = await get('/sections/108/1/transitions');
    expectStatus(r, 200);
    const [closed, enrolled, created] = r.body.transitions;
    assert.equal(r.body.transitions.length, 3);
    assert.deepEqual(
      { type: closed.type, request_id: closed.request_id, actor: closed.actor, student_id: closed.student_id },
      { type: 'sectionClosed', request_id: 'close-1', actor: 'staff:900', student_id: null },
    );
    assert.deepEqual(
      { type: enrolled.type, request_id: enrolled.request_id, actor: enrolled.actor, student_id: enrolled.student_id },
      { type: 'studentEnrolled', request_id: 'enroll-alice-1', actor: 'student:1', student_id: 1 },
    );
    assert.equal(created.type, 'sectionCreated');
    assert.ok(closed.seq > enrolled.seq && enrolled.seq > created.seq);
    assert.equal(typeof closed.at, 'string');
    const limited = await get('/sections/108/1/transitions?limit=1');
    assert.deepEqual(limited.body.transitions.map((t: { type: string }) => t.type), ['sectionClosed']);
    // The next page back (probe S: past the newest 500 nothing could be reached).
    const back = await get(`/sections/108/1/transitions?limit=1&before_seq=${closed.seq}`);
    assert.deepEqual(back.body.transitions.map((t: { seq: number }) => t.seq), [enrolled.seq]);
    const rest = await get(`/sections/108/1/transitions?before_seq=${enrolled.seq}`);
    assert.deepEqual(rest.body.transitions.map((t: { type: string }) => t.type), ['sectionCreated']);
    expectError(await get('/sections/108/1/transitions?before_seq=0'), 400, 'BAD_REQUEST');
  });

  it('answers 503, not 500, when the history cannot be read', async () => {
    fx.persistence.recentTransitions = async () => {
      throw new Error('relation "transitions" does not exist');
    };
    const r = await get('/sections/108/1/transitions');
    expectError(r, 503, 'UNAVAILABLE');
    assert.ok(!r.raw.includes('relation'));
  });

  it('validates limit and answers unknown sections with 404', async () => {
    expectError(await get('/sections/108/1/transitions?limit=0'), 400, 'BAD_REQUEST');
    expectError(await get('/sections/108/1/transitions?limit=many'), 400, 'BAD_REQUEST');
    expectError(await get('/sections/999/1/transitions'), 404, 'SECTION_NOT_FOUND');
  });
});
