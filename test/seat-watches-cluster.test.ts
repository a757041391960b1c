import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ownerAddress, startNode } from './support/cluster-harness.js';
import { FIRST_STUDENT, waitFor, withFaultEnv } from './support/fault-harness.js';
import { openSse } from './support/notices-world.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * Seat watches with two instances (probe findings 1 and 2): two engine processes and a separate
 * batcher on one database and stream. Watches are rows of `seat_watches` that every instance reads:
 * both list a student's watches alike whichever instance took them, a student's stream on the
 * instance that does not own the section is told live, and after the owner hands its shard over
 * (SIGTERM) the new owner announces the next opening to the watches the old one took.
 */

describe('seat watches with two instances (PostgreSQL, RabbitMQ, real processes)', { timeout: 240_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('both instances list and announce the watches; after a change of owner the new owner announces them', { skip }, (t) =>
    withFaultEnv(t, { students: 10 }, async (env) => {
      env.startBatcher();
      const a = await startNode(env, 'engine-a', {}, env.api.port); // takes the lease: owner of every section
      const b = await startNode(env, 'engine-b');
      t.after(() => [a, b].forEach((n) => n.api.close()));
      assert.ok((await ownerAddress(env))?.endsWith(`:${a.api.port}`), 'engine-a owns the sections');

      const staff = env.staffToken;
      const course = 903;
      const section = { course_id: course, group_id: 1 };
      const created = await a.api.request('POST', '/sections', staff, { ...section, name: 'Watched', units: 1, capacity: 1, reserve_capacity: 0 });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const [r1, w1, w2, r2] = [0, 1, 2, 3].map((i) => FIRST_STUDENT + i) as [number, number, number, number];
      const tok = (s: number) => env.studentToken(s);
      assert.equal((await a.api.request('PUT', '/student/course', tok(r1), section)).status, 204);
      // w1 watches through the owner, w2 through the other instance (the write is forwarded).
      const first = await a.api.request('POST', '/me/watches', tok(w1), section);
      assert.equal(first.status, 201, JSON.stringify(first.body));
      const second = await b.api.request('POST', '/me/watches', tok(w2), section);
      assert.equal(second.status, 201, JSON.stringify(second.body));

      // Both instances list both watches, with the same places (finding 2).
      const places = async (node: typeof a, s: number) => {
        const r = await node.api.request('GET', '/me/watches', tok(s));
        assert.equal(r.status, 200, JSON.stringify(r.body));
        return (r.body as { watches: { course_id: number; position: number }[] }).watches.map((x) => `${x.course_id}@${x.position}`);
      };
      for (const node of [a, b]) {
        assert.deepEqual(await places(node, w1), [`${course}@1`], `${node.name} lists w1's watch`);
        assert.deepEqual(await places(node, w2), [`${course}@2`], `${node.name} lists w2's watch`);
      }

      // w1 and w2 listen on engine-b, which does not own the section.
      const auth = (s: number) => ({ authorization: `Bearer ${tok(s)}` });
      const w1Stream = await openSse(`${b.api.base}/me/events`, auth(w1));
      const w2Stream = await openSse(`${b.api.base}/me/events`, auth(w2));
      t.after(() => [w1Stream, w2Stream].forEach((x) => x.close()));
      await w1Stream.waitFor((e) => e.some((x) => x.event === 'ready'));
      await w2Stream.waitFor((e) => e.some((x) => x.event === 'ready'));
      const seat = (e: { data?: { kind?: string } }[]) => e.some((x) => x.data?.kind === 'seatAvailable');

      // r1 leaves through the owner: w1 is told live on engine-b (finding 2), w2 keeps watching.
      assert.equal((await a.api.request('DELETE', `/student/course?course_id=${course}`, tok(r1))).status, 204);
      await w1Stream.waitFor(seat, 30_000, 'seatAvailable for w1 on engine-b');
      assert.equal(w1Stream.notices().find((n) => n.kind === 'seatAvailable').course_id, course);
      for (const node of [a, b]) {
        await waitFor(async () => (await places(node, w1)).length === 0, 10_000, `${node.name}: w1's watch ended`);
        assert.deepEqual(await places(node, w2), [`${course}@1`], `${node.name}: w2 moved up`);
      }

      // The seat is taken again; then engine-a hands its shard over (SIGTERM) and engine-b owns it.
      assert.equal((await b.api.request('PUT', '/student/course', tok(r2), section)).status, 204);
      await a.child.stop(30_000);
      await waitFor(async () => (await ownerAddress(env))?.endsWith(`:${b.api.port}`) ?? false, 30_000, 'engine-b to own the shard');
      assert.deepEqual(await places(b, w2), [`${course}@1`], 'engine-b lists the watch engine-a took');

      // r2 leaves through the new owner: w2, whose watch engine-a took, is told (finding 1).
      assert.equal((await b.api.request('DELETE', `/student/course?course_id=${course}`, tok(r2))).status, 204);
      await w2Stream.waitFor(seat, 30_000, 'seatAvailable for w2 on engine-b after the change of owner');
      const fired = await env.db.query<{ student_id: string; fired_seq: string | null }>('SELECT student_id, fired_seq FROM seat_watches ORDER BY id');
      assert.deepEqual(
        fired.rows.map((x) => [Number(x.student_id), x.fired_seq !== null]),
        [
          [w1, true],
          [w2, true],
        ],
        'both watches marked fired',
      );
      assert.deepEqual(await places(b, w2), []);
      assert.equal(w2Stream.notices().filter((n) => n.kind === 'seatAvailable').length, 1, 'told once');
    }),
  );
  test('after kill -9 of the owner, the survivor announces the next opening to a watch the dead owner took', { skip }, (t) =>
    withFaultEnv(t, { students: 10 }, async (env) => {
      env.startBatcher();
      const a = await startNode(env, 'engine-a', {}, env.api.port);
      const b = await startNode(env, 'engine-b');
      t.after(() => [a, b].forEach((n) => n.api.close()));
      assert.ok((await ownerAddress(env))?.endsWith(`:${a.api.port}`), 'engine-a owns the sections');
      const section = { course_id: 904, group_id: 1 };
      const created = await a.api.request('POST', '/sections', env.staffToken, { ...section, name: 'Watched', units: 1, capacity: 1, reserve_capacity: 0 });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const [r, w1, w2] = [0, 1, 2].map((i) => FIRST_STUDENT + i) as [number, number, number];
      const tok = (s: number) => env.studentToken(s);
      assert.equal((await a.api.request('PUT', '/student/course', tok(r), section)).status, 204);
      for (const s of [w1, w2]) assert.equal((await a.api.request('POST', '/me/watches', tok(s), section)).status, 201);
      const w1Stream = await openSse(`${b.api.base}/me/events`, { authorization: `Bearer ${tok(w1)}` });
      t.after(() => w1Stream.close());
      await w1Stream.waitFor((e) => e.some((x) => x.event === 'ready'));

      await a.child.kill9();
      await waitFor(async () => (await ownerAddress(env))?.endsWith(`:${b.api.port}`) ?? false, 30_000, 'engine-b to own the shard');
      const dropped = await b.api.request('DELETE', `/student/course?course_id=${section.course_id}`, tok(r), undefined, 30_000);
      assert.equal(dropped.status, 204, JSON.stringify(dropped.body));
      await w1Stream.waitFor((e) => e.some((x) => x.data?.kind === 'seatAvailable'), 30_000, 'seatAvailable for w1 on engine-b');
      const rows = await env.db.query<{ student_id: string; fired_seq: string | null }>('SELECT student_id, fired_seq FROM seat_watches ORDER BY id');
      assert.deepEqual(
        rows.rows.map((x) => [Number(x.student_id), x.fired_seq !== null]),
        [
          [w1, true],
          [w2, false],
        ],
        "w1's watch fired, w2 keeps watching",
      );
    }),
  );
});
