import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Api, codeOf, freePort, reasonOf, waitFor, withFaultEnv, type Reply } from './support/fault-harness.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * Issue 13, item 8: a second engine must not be able to write. Two real engine processes on one
 * database and stream: the second serves reads but refuses every write (503, a log line, /ready
 * says why), so the sections cannot be overbooked; after kill -9 of the owner it takes over, with
 * the state the owner acknowledged.
 */
describe('one writer per stream (engine processes, real PostgreSQL and RabbitMQ)', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('the second engine refuses writes and says so; after kill -9 of the first it takes over without losing anything', { skip, timeout: 240_000 }, (t) =>
    withFaultEnv(t, { students: 120 }, async (env) => {
      env.startBatcher();
      // FORWARD_WRITES=false: a non-owner refuses writes instead of forwarding them to the owner
      // (issue 14's default); what is tested here is that it can never write itself.
      const { child: a } = await env.startEngine({ LOG_LEVEL: 'info', FORWARD_WRITES: 'false' });
      const apiA = env.api;
      const apiB = new Api(await freePort());
      t.after(() => apiB.close());
      const b = env.spawn('engine-b', 'src/main.ts', { PORT: String(apiB.port), LOG_LEVEL: 'info', FORWARD_WRITES: 'false' });

      // B comes up and answers, but is not ready, and says why.
      const readyB = await waitFor(
        async () => {
          const r = await apiB.request('GET', '/ready', null, undefined, 1000);
          return r.status === 503 ? r : null;
        },
        60_000,
        'engine B to answer /ready',
      );
      assert.match(JSON.stringify(readyB.body), /another engine owns the stream/);
      await b.waitForLog((l) => typeof l.msg === 'string' && l.msg.includes('another engine owns the stream'), 5000);
      assert.equal((await apiA.request('GET', '/ready', null)).status, 200, 'A is ready');

      // Every student tries the same section once, alternately through A and B.
      const sec = env.seed.sections.reduce((x, y) => (x.capacity + x.reserveCapacity <= y.capacity + y.reserveCapacity ? x : y));
      const places = sec.capacity + sec.reserveCapacity;
      const students = env.seed.students.slice(0, Math.min(env.seed.students.length, places * 3));
      const replies: { via: 'A' | 'B'; student: number; r: Reply }[] = [];
      await Promise.all(
        students.map(async (s, i) => {
          const via = i % 2 === 0 ? 'A' : 'B';
          const api = via === 'A' ? apiA : apiB;
          const r = await api.request('PUT', '/student/course', env.studentToken(s), { course_id: sec.courseId, group_id: sec.groupId });
          replies.push({ via, student: s, r });
        }),
      );
      const fromB = replies.filter((x) => x.via === 'B');
      assert.ok(fromB.length > 0);
      for (const x of fromB) {
        assert.equal(x.r.status, 503, `B refused a write with 503 (got ${x.r.status} ${codeOf(x.r)})`);
        assert.ok(reasonOf(x.r).length > 0, 'with a reason');
      }
      assert.ok(fromB.some((x) => codeOf(x.r) === 'NOT_OWNER'), 'B named the reason at least once');
      const acked = replies.filter((x) => x.via === 'A' && x.r.status === 204).map((x) => x.student);
      assert.ok(acked.length > 0 && acked.length <= places, `A accepted ${acked.length} for ${places} places`);

      // Reads still work on B.
      assert.equal((await apiB.request('GET', '/sections', env.staffToken)).status, 200);

      // The owner dies; B takes over once A's lease has expired, with everything A acknowledged.
      await a.kill9();
      const late = env.seed.students[env.seed.students.length - 1] as number;
      const other = env.seed.sections.find((x) => x.courseId !== sec.courseId) ?? sec;
      await waitFor(
        async () => (await apiB.request('PUT', '/student/course', env.studentToken(late), { course_id: other.courseId, group_id: other.groupId })).status === 204,
        30_000,
        'B to accept a write after the owner is gone',
        200,
      );
      await waitFor(async () => (await apiB.request('GET', '/ready', null)).status === 200, 10_000, 'B to be ready');
      const m = await apiB.request('GET', `/staff/course-students?course_id=${sec.courseId}&group_id=${sec.groupId}`, env.staffToken);
      assert.equal(m.status, 200);
      const body = m.body as { registered_students: number[]; reserved_queue_students: number[] };
      const holders = [...body.registered_students, ...body.reserved_queue_students].sort((x, y) => x - y);
      assert.deepEqual(holders, [...acked].sort((x, y) => x - y), 'exactly what A acknowledged, nothing from B');
      assert.ok(body.registered_students.length <= sec.capacity);
    }),
  );
});
