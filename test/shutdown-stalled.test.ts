import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { msg, withFaultEnv } from './support/fault-harness.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * SIGTERM while PostgreSQL or RabbitMQ has stopped answering (connections open, no bytes: a
 * stalled disk, a paused VM, a partition). What was acknowledged is in the broker's stream already, so the
 * engine must not hold its exit for the database: an orchestrator waiting for it would kill it
 * anyway, and until then the instance neither serves nor hands over. It exits 0 within a bounded
 * time, and a new engine, once storage answers again, brings the tables level with every
 * acknowledged change.
 */
describe('SIGTERM while storage is stalled', { concurrency: false }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  for (const stalled of ['database', 'broker'] as const) {
  test(`${stalled} stalled: the engine exits 0 within 20 s (drain off), and a successor applies every acknowledged change once it answers`, { skip, timeout: 120_000 }, (t) =>
    withFaultEnv(t, { proxyDatabase: stalled === 'database', proxyBroker: stalled === 'broker', students: 10 }, async (env) => {
      const proxy = stalled === 'database' ? env.dbProxy : env.brokerProxy;
      assert.ok(proxy);
      const { child } = await env.startEngine({ LOG_LEVEL: 'info', IN_PROCESS_BATCHER: 'true', SHUTDOWN_DRAIN_MS: '0' });
      const student = env.seed.students[0] as number;
      const section = env.seed.sections[0];
      assert.ok(section);
      const r = await env.api.request('PUT', '/student/course', env.studentToken(student), { course_id: section.courseId, group_id: section.groupId });
      assert.equal(r.status, 204, JSON.stringify(r.body));

      proxy.stall();
      // Let the lease and batcher loops run into the stall (the lease round is 500 ms).
      await new Promise((r) => setTimeout(r, 1500));
      const t0 = performance.now();
      child.proc.kill('SIGTERM');
      const code = await Promise.race([child.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 40_000))]);
      const ms = performance.now() - t0;
      console.log(`[shutdown] ${stalled} stalled: exit ${String(code)} after ${Math.round(ms)} ms`);
      assert.equal(code, 0, `exit code (after ${Math.round(ms)} ms):\n${child.output()}`);
      assert.ok(ms < 20_000, `exited after ${Math.round(ms)} ms`);

      proxy.flow();
      const next = await env.startEngine({ LOG_LEVEL: 'info', IN_PROCESS_BATCHER: 'true' });
      await next.child.waitForLog(msg('batcher is the active consumer'), 30_000);
      await env.waitForEnrollmentRow(student, section.courseId, 20_000);
    }),
  );
  }
});
