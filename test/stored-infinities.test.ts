import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createFullStore, streamNames, type FullStore } from '../src/persistence/full-store.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgClient } from '../src/persistence/pg-client.js';
import { loadState } from '../src/persistence/state-store.js';
import { deleteQueues } from './support/amqp.js';
import { T0 } from './support/http-fixture.js';
import { startNoticesWorld, type NoticesWorld } from './support/notices-world.js';
import { quietLogger } from './support/notices-world.js';
import { createTestDatabase } from './support/pg.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Probe P, findings 2-4: rows written straight into the database (the Go service's data, an
 * operator) may hold PostgreSQL's `infinity` / `-infinity` timestamps, which pg and PGlite hand over
 * as the numbers Infinity / -Infinity. `new Date(Infinity)` is an invalid date (NaN): the window
 * rule let both students enroll (every comparison with NaN is false), and every answer showing the
 * value was a 500 (GET /me, GET /students/{id}; PATCH /students/{id} saved its change and then
 * answered 500; a section's exam time broke its page, its members' lists and the CSV export). And
 * exam times stored with fractions of a second, shown as the same unix second, did not clash.
 */

const START_INF = 6000001;
const START_NEG_INF = 6000002;
const NORMAL = 6000003;

describe('infinite and fractional timestamps in rows written straight into the database (full mode)', { timeout: 120_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  const prefix = uniqueName('infinities');
  let dropDb: () => Promise<void> = async () => undefined;
  let dbUrl = '';
  let store: FullStore | null = null;
  let w: NoticesWorld | null = null;

  before(async () => {
    if (skip) return;
    const tdb = await createTestDatabase();
    dropDb = tdb.drop;
    dbUrl = tdb.url;
    const db = createPgClient(tdb.url);
    try {
      await migrate(db);
      const at = new Date(T0).toISOString();
      await db.query(`INSERT INTO staff (id, password) VALUES (1, '$2b$10$not.used.here')`);
      await db.query(
        `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, gender) VALUES
           (${START_INF}, 'x', 'infinity', 20, 5, 'male'), (${START_NEG_INF}, 'x', '-infinity', 20, 5, 'male'), (${NORMAL}, 'x', $1, 20, 5, 'male')`,
        [at],
      );
      await db.query(
        `INSERT INTO courses (course_id, group_id, name, units, capacity, exam_time, class_time) VALUES
           (652, 1, 'Open', 2, 10, NULL, 0),
           (653, 1, 'Exam at minus infinity', 2, 10, '-infinity', 0),
           (654, 1, 'Exam at infinity', 2, 10, 'infinity', 0),
           (660, 1, 'Exam at .5 s', 2, 10, '2027-01-10 09:00:00.5+00', 0),
           (661, 1, 'Exam at .7 s', 2, 10, '2027-01-10 09:00:00.7+00', 0)`,
      );
      await db.query(`INSERT INTO enrolled_courses (course_id, group_id, student_id, reserved) VALUES (653, 1, ${NORMAL}, false)`);
    } finally {
      await db.close();
    }
    store = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger: quietLogger, batchMaxEvents: 500, runBatcher: true });
    await store.migrate();
    w = await startNoticesWorld({ persistence: store, seed: false });
  });
  after(async () => {
    if (skip) return;
    await w?.stop();
    await store?.close();
    await deleteQueues(Object.values(streamNames(prefix))).catch(() => undefined);
    await dropDb();
  });

  test('the load reads them as instants the rules can use and says which rows they are', { skip }, async () => {
    const db = createPgClient(dbUrl);
    try {
      const state = await loadState(db);
      const start = (id: number) => state.students.find((s) => s.id === id)!.enrollmentStart;
      assert.equal(new Date(start(START_INF)).toISOString(), '9999-12-31T23:59:59.000Z');
      assert.equal(new Date(start(START_NEG_INF)).toISOString(), '0001-01-01T00:00:00.000Z');
      const exam = (c: number) => state.sections.find((s) => s.info.courseId === c)!.info.examTime;
      assert.equal(exam(653), null);
      assert.equal(exam(654), null);
      assert.equal(exam(660), Date.parse('2027-01-10T09:00:00Z'), 'whole seconds, as the API shows it');
      assert.equal(exam(661), exam(660));
      assert.deepEqual(
        (state.infinities ?? []).map((i) => (i.column === 'courses.exam_time' ? `${i.column} ${i.courseId}/${i.groupId} ${i.stored}` : `${i.column} ${i.studentId} ${i.stored}`)).sort(),
        [
          'courses.exam_time 653/1 -infinity',
          'courses.exam_time 654/1 infinity',
          `students.enrollment_start_time ${START_INF} infinity`,
          `students.enrollment_start_time ${START_NEG_INF} -infinity`,
        ],
      );
    } finally {
      await db.close();
    }
  });

  test('a window starting at infinity never opens, one starting at -infinity has closed: both refused, nothing changed', { skip }, async () => {
    for (const id of [START_INF, START_NEG_INF]) {
      const r = await w!.call('PUT', '/student/course', w!.token(id), { course_id: 652, group_id: 1 });
      assert.equal(r.status, 400, `student ${id}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'ENROLLMENT_WINDOW_CLOSED', JSON.stringify(r.body));
      const list = await w!.call('GET', '/student/course', w!.token(id));
      assert.equal(list.status, 200);
      assert.deepEqual(list.body, { data: [] });
    }
    // The rule itself is intact for a normal student.
    assert.equal((await w!.call('PUT', '/student/course', w!.token(NORMAL), { course_id: 652, group_id: 1 })).status, 204);
  });

  test('every answer that shows them is a 2xx, a change to the student is answered as it is saved', { skip }, async () => {
    const staff = w!.token(1, 'staff');
    for (const id of [START_INF, START_NEG_INF]) {
      const me = await w!.call('GET', '/me', w!.token(id));
      assert.equal(me.status, 200, JSON.stringify(me.body));
      const viewed = await w!.call('GET', `/students/${id}`, staff);
      assert.equal(viewed.status, 200, JSON.stringify(viewed.body));
      assert.match(String(viewed.body.enrollment_start_time), id === START_INF ? /^9999-12-31T23:59:59/ : /^0001-01-01T00:00:00/);
      const patched = await w!.call('PATCH', `/students/${id}`, staff, { max_units: 21 });
      assert.equal(patched.status, 200, JSON.stringify(patched.body));
      assert.equal(patched.body.max_units, 21);
    }
    for (const c of [653, 654]) {
      const s = await w!.call('GET', `/sections/${c}/1`, staff);
      assert.equal(s.status, 200, JSON.stringify(s.body));
      assert.equal(s.body.exam_time, null);
    }
    // A member of the section whose exam time was -infinity lists their courses.
    const list = await w!.call('GET', '/student/course', w!.token(NORMAL));
    assert.equal(list.status, 200, JSON.stringify(list.body));
    assert.ok(list.body.data.some((x: { course: { course_id: number } }) => x.course.course_id === 653), JSON.stringify(list.body));
    const all = await w!.call('GET', `/staff/student-courses?std_id=${NORMAL}`, staff);
    assert.equal(all.status, 200, JSON.stringify(all.body));
  });

  test('exam times a fraction of a second apart (the same unix second to a client) clash', { skip }, async () => {
    assert.equal((await w!.call('PUT', '/student/course', w!.token(NORMAL), { course_id: 660, group_id: 1 })).status, 204);
    const second = await w!.call('PUT', '/student/course', w!.token(NORMAL), { course_id: 661, group_id: 1 });
    assert.equal(second.status, 400, JSON.stringify(second.body));
    assert.equal(second.body.code, 'EXAM_CONFLICT', JSON.stringify(second.body));
  });
});
