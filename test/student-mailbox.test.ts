import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createEngine } from '../src/engine/engine.js';
import { createStudentMailboxes } from '../src/engine/student-mailbox.js';
import { isEngineError } from '../src/errors.js';
import { makeSection, makeStudent, meta, silentLogger, studentMeta, T0, MINUTE, WINDOW_MS } from './support/engine-fixture.js';
import { C, createHttpFixture, expectStatus, S } from './support/http-fixture.js';
import { MemoryPersistence } from './support/memory-persistence.js';

/**
 * Each student's requests go through a bounded p-queue mailbox: one at a time, in arrival order,
 * created on first use and released when idle; past the limit a request is refused with 503
 * OVERLOADED (and Retry-After over HTTP) before it changes anything.
 */

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

const settle = () => new Promise<void>((r) => setImmediate(r));

describe('student mailboxes', () => {
  test('one request at a time per student, in arrival order; others run alongside; released when idle', async () => {
    const boxes = createStudentMailboxes(8);
    const log: string[] = [];
    let running = 0;
    let maxRunning = 0;
    const g = gate();
    const task = (name: string, wait?: Promise<void>) => async () => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      log.push(`start ${name}`);
      if (wait) await wait;
      await settle();
      log.push(`end ${name}`);
      running -= 1;
      return name;
    };
    const a1 = boxes.run(1, task('a1', g.wait));
    const a2 = boxes.run(1, task('a2'));
    const a3 = boxes.run(1, task('a3'));
    const b1 = boxes.run(2, task('b1'));
    assert.equal(await b1, 'b1', "another student's request does not wait for student 1's");
    assert.ok(!log.includes('start a2'), 'the second request of a student waits for the first');
    assert.equal(boxes.active, 1, "student 2's mailbox was released when idle");
    g.open();
    assert.deepEqual(await Promise.all([a1, a2, a3]), ['a1', 'a2', 'a3']);
    assert.deepEqual(
      log.filter((l) => / a\d$/.test(l)),
      ['start a1', 'end a1', 'start a2', 'end a2', 'start a3', 'end a3'],
    );
    assert.equal(maxRunning <= 2, true, 'at most one request per student (plus the other student) at once');
    await settle();
    assert.equal(boxes.active, 0, 'no mailbox is kept for an idle student');
  });

  test('past the limit a request is refused at once with OVERLOADED and a retry hint, and never runs', async () => {
    const boxes = createStudentMailboxes(2);
    const g = gate();
    let ran = 0;
    const held = [boxes.run(7, async () => g.wait.then(() => (ran += 1))), boxes.run(7, async () => (ran += 1))];
    await assert.rejects(
      boxes.run(7, async () => (ran += 1)),
      (err: unknown) => isEngineError(err) && err.code === 'OVERLOADED' && err.statusCode === 503 && err.retryAfterSeconds === 1,
    );
    // Another student is not affected by student 7's full mailbox.
    assert.equal(await boxes.run(8, async () => 'ok'), 'ok');
    g.open();
    await Promise.all(held);
    assert.equal(ran, 2, 'the refused request never ran');
    // Once drained, the student may send again.
    assert.equal(await boxes.run(7, async () => 'again'), 'again');
  });

  test('the engine refuses a student past the limit and the refused request changes nothing', async () => {
    const persistence = new MemoryPersistence();
    const g = gate();
    let holding = true;
    const append = persistence.append.bind(persistence);
    persistence.append = async (events) => {
      if (holding) await g.wait;
      return append(events);
    };
    const engine = createEngine({
      persistence,
      logger: silentLogger,
      enrollmentWindowMs: WINDOW_MS,
      now: () => T0 + 5 * MINUTE,
      studentMailboxLimit: 2,
    });
    await engine.start();
    holding = false;
    await engine.importBatch(
      { departments: [], staff: [], students: [makeStudent(1)], sections: [makeSection(10, 1), makeSection(20, 1), makeSection(30, 1)] },
      meta('system'),
    );
    holding = true;
    const first = engine.enroll(1, 10, 1, studentMeta(1));
    const second = engine.enroll(1, 20, 1, studentMeta(1));
    await assert.rejects(engine.enroll(1, 30, 1, studentMeta(1)), (err: unknown) => isEngineError(err) && err.code === 'OVERLOADED');
    g.open();
    holding = false;
    assert.deepEqual(await Promise.all([first, second]), ['registered', 'registered']);
    assert.deepEqual(engine.sectionMembers(30, 1), { registered: [], queue: [] }, 'the refused enroll took no seat');
    assert.deepEqual(
      engine.studentSections(1).map((h) => h.section.info.courseId),
      [10, 20],
    );
    assert.equal(engine.activeMailboxes, 0);
    engine.stop();
  });

  test('over HTTP: 503 OVERLOADED with Retry-After, nothing changed, and the next request after the queue drains is served', async () => {
    const fx = await createHttpFixture({ studentMailboxLimit: 1 });
    try {
      const g = gate();
      fx.persistence.holdAppends = g.wait;
      const token = fx.studentToken(S.alice);
      const enroll = (c: readonly [number, number]) =>
        fx.request('PUT', '/student/course', { token, body: { course_id: c[0], group_id: c[1] } });
      const first = enroll(C.algo2);
      await settle();
      const refused = await enroll(C.heavy);
      expectStatus(refused, 503);
      assert.equal(refused.body.code, 'OVERLOADED');
      assert.equal(refused.headers['retry-after'], '1');
      fx.persistence.holdAppends = null;
      g.open();
      expectStatus(await first, 204);
      const held = await fx.request('GET', '/student/course', { token });
      assert.deepEqual(
        held.body.data.map((d: { course: { course_id: number } }) => d.course.course_id),
        [C.algo2[0]],
        'only the first enroll happened',
      );
      expectStatus(await enroll(C.heavy), 204);
    } finally {
      await fx.close();
    }
  });
});
