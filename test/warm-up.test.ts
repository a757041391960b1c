import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { buildApp } from '../src/http/app.js';
import { warmUpRequestPath } from '../src/http/warm-up.js';
import { msg, withFaultEnv } from './support/fault-harness.js';
import { MemoryPersistence } from './support/memory-persistence.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * The start-up warm-up (src/http/warm-up.ts, wired in src/main.ts): it really drives the students'
 * request path (enrolls, lists and drops are decided and acknowledged), and nothing of it reaches
 * the real engine's store, tables or metrics.
 */

const quiet = pino({ level: 'silent' });
const SECRET = 'warm-up-test-secret-0123456789-abcdefghij';

test('the warm-up client sends the requests asked for through the path: enrolls and drops decided and acknowledged, no 5xx, the app closed after', async () => {
  const persistence = new MemoryPersistence();
  const engine = createEngine({ persistence, logger: quiet, enrollmentWindowMs: 60 * 60_000 });
  await engine.start();
  const now = Date.now();
  const sections = Array.from({ length: 10 }, (_, i) => ({ courseId: 100 + i, groupId: 1 }));
  const studentIds = Array.from({ length: 50 }, (_, i) => 500 + i);
  await engine.importBatch(
    {
      sections: sections.map((s) => ({
        info: { ...s, forDepartment: null, name: `c${s.courseId}`, lecturer: 'l', units: 1, examTime: null, classTime: null, notes: '' },
        capacity: 1000,
        reserveCapacity: 5,
        sexLock: null,
      })),
      students: studentIds.map((id) => ({
        id,
        passwordHash: '',
        enrollmentStart: now - 60_000,
        maxUnits: 100,
        remainingActions: 1000,
        departmentId: null,
        entryYear: null,
        gender: 'female' as const,
      })),
      staff: [],
      departments: [],
    },
    { requestId: 'seed', actor: 'system' },
  );
  const before = persistence.log.length;
  const app = await buildApp({ engine, logger: quiet, jwtSecret: SECRET, tokenTtlSeconds: 600, readiness: async () => ({ ready: true, checks: {} }) });
  try {
    const r = await warmUpRequestPath({ app, jwtSecret: SECRET, studentIds, sections, clients: 8, requests: 200, maxMs: 30_000 });
    assert.equal(r.requests, 200);
    assert.deepEqual(r.unexpected, {});
    assert.ok(r.accepted >= 100, `accepted ${r.accepted} of 200`);
    assert.equal(app.server.listening, false, 'the warm-up app is closed');
    const types = new Set(persistence.log.slice(before).map((e) => e.type));
    assert.ok(types.has('studentEnrolled'), `enrolls were accepted: ${[...types].join(', ')}`);
    assert.ok(types.has('studentDropped'), `drops were accepted: ${[...types].join(', ')}`);
    // Each round is three enrolls, a list and three drops: about 3/7 of the requests are enrolls.
    const enrolled = persistence.log.slice(before).filter((e) => e.type === 'studentEnrolled').length;
    assert.ok(enrolled >= 60, `${enrolled} enrolls acknowledged of about 86 sent`);
  } finally {
    await app.close();
    engine.stop();
  }
});

test('a warm-up whose requests are never answered gives up on them and ends soon after its time is up', { timeout: 30_000 }, async () => {
  const app = Fastify();
  const hang = () => new Promise<never>(() => {});
  app.put('/student/course', hang);
  app.get('/student/course', hang);
  app.delete('/student/course', hang);
  const t0 = performance.now();
  const r = await warmUpRequestPath({ app, jwtSecret: SECRET, studentIds: [1, 2], sections: [{ courseId: 1, groupId: 1 }], clients: 2, requests: 100, maxMs: 500 });
  const ms = performance.now() - t0;
  // Each client's first request is given up after 5 s; the deadline stops the rest.
  assert.equal(r.requests, 2);
  assert.deepEqual(r.unexpected, { 0: 2 });
  assert.ok(ms < 15_000, `ended after ${Math.round(ms)} ms`);
  assert.equal(app.server.listening, false);
});

describe('full mode start with the warm-up on', { concurrency: false }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('the engine warms up before it listens, and its store, tables and metrics hold only the real requests', { skip, timeout: 120_000 }, (t) =>
    withFaultEnv(t, { students: 5 }, async (env) => {
      const { child } = await env.startEngine({ WARMUP_REQUESTS: '400', LOG_LEVEL: 'info', IN_PROCESS_BATCHER: 'true' });
      const warmed = await child.waitForLog(msg('request path warmed up'), 5_000);
      assert.equal(warmed['requests'], 400);
      assert.deepEqual(warmed['unexpected'], {});
      // Enrolls, lists and drops went through to the end, not only refusals.
      assert.ok(Number(warmed['accepted']) >= 200, `accepted ${String(warmed['accepted'])} of 400`);
      const ready = await child.waitForLog((l) => typeof l['startupMs'] === 'number', 5_000);
      assert.ok(Date.parse(String(ready['time'])) >= Date.parse(String(warmed['time'])), 'ready only after the warm-up');

      // The warm-up's requests are not in the metrics.
      const m0 = await env.api.request('GET', '/metrics', env.staffToken);
      assert.equal(m0.status, 200);
      const text0 = String(m0.body);
      assert.doesNotMatch(text0, /http_request_duration_seconds_count\{method="PUT",route="\/student\/course"/);
      assert.doesNotMatch(text0, /enrollment_enroll_outcomes_total\{code="OK"\}/);

      // One real enroll: counted once, and it reaches PostgreSQL.
      const student = env.seed.students[0] as number;
      const section = env.seed.sections[0];
      assert.ok(section);
      const r = await env.api.request('PUT', '/student/course', env.studentToken(student), { course_id: section.courseId, group_id: section.groupId });
      assert.equal(r.status, 204, JSON.stringify(r.body));
      const text1 = String((await env.api.request('GET', '/metrics', env.staffToken)).body);
      assert.match(text1, /enrollment_enroll_outcomes_total\{code="OK"\} 1\n/);
      assert.match(text1, /http_request_duration_seconds_count\{method="PUT",route="\/student\/course",status="204"\} 1\n/);
      await env.waitForEnrollmentRow(student, section.courseId, 15_000);

      // Nothing of the throw-away engine's students, sections or changes is stored.
      const seeded = new Set([...env.seed.students]);
      const students = await env.db.query<{ id: number }>('SELECT id FROM students');
      assert.deepEqual(students.rows.map((x) => Number(x.id)).filter((id) => !seeded.has(id)), []);
      const courses = await env.db.query<{ n: number }>('SELECT count(*)::int AS n FROM courses');
      assert.equal(Number(courses.rows[0]?.n), env.seed.sections.length);
      const moves = await env.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM transitions WHERE type IN ('studentEnrolled', 'studentDropped', 'studentQueued')`);
      assert.equal(Number(moves.rows[0]?.n), 1, 'the one real enroll, and nothing else');
    }),
  );
});
