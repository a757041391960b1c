import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { deliveryQueueNames } from '../src/persistence/delivery-queue.js';
import { streamNames } from '../src/persistence/full-store.js';
import { deleteQueues } from './support/amqp.js';
import { startNode } from './support/cluster-harness.js';
import { FIRST_STUDENT, sleep, waitFor, withFaultEnv } from './support/fault-harness.js';
import { openSse } from './support/notices-world.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';
import { signedNotice, startWebhookReceiver } from './support/webhook-receiver.js';

/**
 * Notices with several instances (issue 16, docs/scale-out.md): two engine processes and a separate
 * batcher on one database and stream. A student's `/me/events` on the instance that does not own
 * the section gets their notices (every instance derives them from the events its read copy
 * applies), and webhooks are delivered once per notice for the whole cluster (the one active
 * batcher records deliveries; the instances claim each for sending with SKIP LOCKED).
 */

const SECRET = 'cluster-webhook-secret-0123456789';
/** The receiver listens on 127.0.0.1: webhook targets on loopback are refused unless allowed (off by default). */
const ALLOW_LOOPBACK_RECEIVER = { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' };

describe('notices with two instances (PostgreSQL, RabbitMQ, real processes)', { timeout: 240_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test("a student's stream on the instance that does not own the section gets the notices; each webhook notice is delivered once", { skip }, (t) =>
    withFaultEnv(t, { students: 10 }, async (env) => {
      const receiver = await startWebhookReceiver();
      const url = `${receiver.url}/hook`;
      /** Each delivery with its notice in short ("BAD ..." when its signature is wrong). */
      const got = () =>
        receiver.got.map((r) => {
          const d = signedNotice(SECRET, r);
          const n = d?.notice ?? (JSON.parse(r.body) as { notice: { kind: string; student_id: number; queue_position?: number } }).notice;
          return { delivery: String(r.headers['x-enrollment-delivery']), key: `${d ? '' : 'BAD '}${n.kind} ${n.student_id}${n.queue_position ? ` ${n.queue_position}` : ''}` };
        });
      t.after(async () => {
        await receiver.close();
        await deleteQueues([deliveryQueueNames(env.prefix).work, deliveryQueueNames(env.prefix).dead]);
      });

      env.startBatcher();
      const a = await startNode(env, 'engine-a', { LEASE_TTL_MS: '10000', ...ALLOW_LOOPBACK_RECEIVER }, env.api.port); // takes the lease: owner of every section
      const b = await startNode(env, 'engine-b', { LEASE_TTL_MS: '10000', ...ALLOW_LOOPBACK_RECEIVER });
      t.after(() => [a, b].forEach((n) => n.api.close()));
      const lease = await env.db.query<{ address: string }>('SELECT address FROM shard_leases WHERE log_name = $1 AND shard = 0', [streamNames(env.prefix).stream]);
      assert.ok(lease.rows[0]?.address.endsWith(`:${a.api.port}`), 'engine-a owns the sections; engine-b forwards writes and follows the log');

      const staff = env.staffToken;
      assert.equal((await b.api.request('POST', '/webhooks', staff, { url, secret: SECRET })).status, 201);
      const course = 902;
      const created = await a.api.request('POST', '/sections', staff, { course_id: course, group_id: 1, name: 'Cluster', units: 1, capacity: 2, reserve_capacity: 3 });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const [s0, s1, s2, s3, s4] = [0, 1, 2, 3, 4].map((i) => FIRST_STUDENT + i) as [number, number, number, number, number];
      for (const s of [s0, s1, s2, s3, s4]) {
        const r = await a.api.request('PUT', '/student/course', env.studentToken(s), { course_id: course, group_id: 1 });
        assert.equal(r.status, 204, JSON.stringify(r.body));
      }
      // s2 and s3 listen on engine-b, which does not own the section.
      const auth = (s: number) => ({ authorization: `Bearer ${env.studentToken(s)}` });
      const s2Stream = await openSse(`${b.api.base}/me/events`, auth(s2));
      const s3Stream = await openSse(`${b.api.base}/me/events`, auth(s3));
      t.after(() => [s2Stream, s3Stream].forEach((x) => x.close()));
      assert.equal(s2Stream.status, 200);
      await s2Stream.waitFor((e) => e.some((x) => x.event === 'ready'));
      await s3Stream.waitFor((e) => e.some((x) => x.event === 'ready'));

      // s0 leaves (through the owner): s2 is promoted, s3 and s4 move up.
      assert.equal((await a.api.request('DELETE', `/student/course?course_id=${course}`, env.studentToken(s0))).status, 204);
      await s2Stream.waitFor((e) => e.some((x) => x.data?.kind === 'promoted'), 30_000, 'promoted on engine-b');
      await s3Stream.waitFor((e) => e.some((x) => x.data?.kind === 'queueMoved'), 30_000, 'queueMoved on engine-b');
      assert.equal(s2Stream.notices().find((n) => n.kind === 'promoted').course_id, course);
      assert.equal(s3Stream.notices().find((n) => n.kind === 'queueMoved').queue_position, 1);

      const expected = ['promoted ' + s2, `queueMoved ${s3} 1`, `queueMoved ${s4} 2`].sort();
      await waitFor(async () => new Set(got().map((g) => g.delivery)).size >= expected.length, 30_000, `${expected.length} deliveries (got ${JSON.stringify(got())})`);
      await waitFor(
        async () => (await env.db.query<{ n: number }>("SELECT count(*)::int AS n FROM webhook_deliveries WHERE status <> 'delivered'")).rows[0]?.n === 0,
        30_000,
        'every delivery recorded as delivered',
      );
      // Both instances feed and consume the delivery queue: give a second sending time to show up.
      await sleep(1000);
      assert.deepEqual(got().map((g) => g.key).sort(), expected, 'each notice delivered once, signed, by one of the two instances');
      assert.equal((await env.db.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_deliveries')).rows[0]?.n, expected.length);
    }),
  );
});
