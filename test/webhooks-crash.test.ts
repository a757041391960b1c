import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { deliveryQueueNames } from '../src/persistence/delivery-queue.js';
import { deleteQueues } from './support/amqp.js';
import { FIRST_STUDENT, msg, waitFor, withFaultEnv } from './support/fault-harness.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';
import { signedNotice, startWebhookReceiver, type Received, type SignedNotice } from './support/webhook-receiver.js';

/**
 * Webhook deliveries are at least once across kill -9 (issue 16): the engine and the batcher are
 * real processes on real PostgreSQL and RabbitMQ, the receiver a real local HTTP server. Changes
 * are acknowledged while no batcher runs (so they are only on the ordered log), then the engine is
 * killed with SIGKILL right after the last reply. Deliveries are derived from the log by the
 * batcher's outbox, in the transaction that writes the changes: after a restart every notice of an
 * acknowledged change is delivered, and nothing else.
 */

const SECRET = 'crash-test-webhook-secret-0123456789';
/** The receiver listens on 127.0.0.1: webhook targets on loopback are refused unless allowed (off by default). */
const ALLOW_LOOPBACK_RECEIVER = { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' };

/** The signed deliveries, and the bodies of any that are not signed with the secret. */
function deliveries(got: Received[]): { signed: SignedNotice[]; bad: string[] } {
  const signed: SignedNotice[] = [];
  const bad: string[] = [];
  for (const r of got) {
    const n = signedNotice(SECRET, r);
    if (n) signed.push(n);
    else bad.push(r.body);
  }
  return { signed, bad };
}

describe('webhooks across kill -9 (engine and batcher processes, PostgreSQL, RabbitMQ)', { timeout: 240_000 }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('changes acknowledged just before a kill -9 are delivered after the restart, each notice, nothing else', { skip }, (t) =>
    withFaultEnv(t, { students: 10 }, async (env) => {
      const receiver = await startWebhookReceiver();
      const queues = deliveryQueueNames(env.prefix);
      t.after(async () => {
        await receiver.close();
        await deleteQueues([queues.work, queues.dead]);
      });
      await env.startEngine(ALLOW_LOOPBACK_RECEIVER);
      let batcher = env.startBatcher({ LOG_LEVEL: 'info' });
      await batcher.waitForLog(msg('batcher is the active consumer'), 30_000);
      const api = env.api;
      const staff = env.staffToken;
      const hook = await api.request('POST', '/webhooks', staff, { url: `${receiver.url}/hook`, secret: SECRET });
      assert.equal(hook.status, 201, JSON.stringify(hook.body));
      const course = 901;
      const created = await api.request('POST', '/sections', staff, { course_id: course, group_id: 1, name: 'Crash', units: 1, capacity: 2, reserve_capacity: 3 });
      assert.equal(created.status, 201, JSON.stringify(created.body));

      // No batcher from here on: acknowledged changes are on the log only.
      await batcher.kill9();
      const [s0, s1, s2, s3, s4] = [0, 1, 2, 3, 4].map((i) => FIRST_STUDENT + i) as [number, number, number, number, number];
      for (const s of [s0, s1, s2, s3, s4]) {
        const r = await api.request('PUT', '/student/course', env.studentToken(s), { course_id: course, group_id: 1 });
        assert.equal(r.status, 204, JSON.stringify(r.body));
      }
      // s0 leaves: s2 is promoted, s3 and s4 move up; then staff close the section (4 members told).
      const dropped = await api.request('DELETE', `/student/course?course_id=${course}`, env.studentToken(s0));
      assert.equal(dropped.status, 204, JSON.stringify(dropped.body));
      const closed = await api.request('POST', `/sections/${course}/1/close`, staff);
      assert.equal(closed.status, 200, JSON.stringify(closed.body));
      await env.engine!.kill9();

      const recorded = await env.db.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_deliveries');
      assert.equal(recorded.rows[0]?.n, 0, 'at the kill, no delivery of these changes was recorded anywhere');
      assert.equal(receiver.got.length, 0);

      // Restart both: the batcher writes the log to the database, with the deliveries; the engine sends them.
      await env.startEngine(ALLOW_LOOPBACK_RECEIVER);
      batcher = env.startBatcher();
      const expected = [
        `promoted ${s2}`,
        `queueMoved ${s3} 1`,
        `queueMoved ${s4} 2`,
        `sectionClosed ${s1}`,
        `sectionClosed ${s2}`,
        `sectionClosed ${s3}`,
        `sectionClosed ${s4}`,
      ].sort();
      const distinct = () => {
        const by = new Map<string, SignedNotice>();
        for (const g of deliveries(receiver.got).signed) by.set(g.delivery, g);
        return [...by.values()];
      };
      const describeGot = (g: SignedNotice) => [g.notice.kind, g.notice.student_id, g.notice.queue_position].filter((x) => x !== undefined).join(' ');
      await waitFor(async () => distinct().length >= expected.length, 60_000, `${expected.length} deliveries (got: ${distinct().map(describeGot).join(', ')})`);
      await waitFor(
        async () => {
          const r = await env.db.query<{ n: number }>("SELECT count(*)::int AS n FROM webhook_deliveries WHERE status <> 'delivered'");
          return r.rows[0]?.n === 0;
        },
        30_000,
        'every delivery recorded as delivered',
      );
      assert.deepEqual(deliveries(receiver.got).bad, [], 'every delivery is signed with the secret');
      assert.deepEqual(distinct().map(describeGot).sort(), expected, 'one delivery per notice of the acknowledged changes, and none other');
      assert.ok(deliveries(receiver.got).signed.every((g) => g.notice.course_id === course));
      const rows = await env.db.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_deliveries');
      assert.equal(rows.rows[0]?.n, expected.length, 'recorded once each');
    }),
  );
});
