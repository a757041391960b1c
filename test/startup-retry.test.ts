import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { msg, sleep, waitFor, withFaultEnv } from './support/fault-harness.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * `src/main.ts` keeps retrying when storage is away at start (a compose stack whose database is
 * still starting, a broker restart), rather than exiting. The engine runs as a real child process;
 * TCP proxies in front of the shared PostgreSQL and RabbitMQ stand in for services that are down,
 * so the shared services themselves are never touched.
 */
const RETRYING = msg('storage unavailable at start; retrying');
const READY_LINE = (l: Record<string, unknown>) => typeof l['startupMs'] === 'number';

describe('start-up while storage is unavailable', { concurrency: false }, async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  for (const down of ['database', 'broker'] as const) {
    test(`with the ${down} away, the engine waits and retries, then serves once it is back`, { skip, timeout: 120_000 }, (t) =>
      withFaultEnv(t, { proxyBroker: true, proxyDatabase: true, students: 20 }, async (env) => {
        const proxy = down === 'database' ? env.dbProxy : env.brokerProxy;
        assert.ok(proxy);
        proxy.cut();
        const engine = env.spawn('engine', 'src/main.ts', { LOG_LEVEL: 'info', IN_PROCESS_BATCHER: 'true' });
        env.engine = engine;

        // Two failed attempts at least, and all the while alive and not serving half-started.
        await engine.waitForLog(RETRYING, 60_000);
        await waitFor(async () => engine.hasLog((l) => l['msg'] === 'storage unavailable at start; retrying' && l['attempt'] === 2), 30_000, 'a second attempt');
        assert.ok(engine.alive, `the engine exited while ${down} was away:\n${engine.output()}`);
        assert.ok(!engine.hasLog(READY_LINE), 'the engine said it was ready while storage was away');
        const early = await env.api.request('GET', '/health', null, undefined, 1000);
        assert.notEqual(early.status, 200, 'nothing answers before the state is loaded');

        proxy.resume();
        const since = performance.now();
        await waitFor(async () => (await env.api.request('GET', '/ready', null, undefined, 1000)).status === 200, 30_000, 'the engine to be ready');
        const readyAfterMs = performance.now() - since;
        assert.ok(engine.alive);
        console.log(`[startup] ${down} back: ready ${Math.round(readyAfterMs)} ms later`);

        // It works end to end: an enrollment is acknowledged and reaches PostgreSQL.
        const student = env.seed.students[0] as number;
        const section = env.seed.sections[0];
        assert.ok(section);
        const r = await env.api.request('PUT', '/student/course', env.studentToken(student), { course_id: section.courseId, group_id: section.groupId });
        assert.equal(r.status, 204, JSON.stringify(r.body));
        await env.waitForEnrollmentRow(student, section.courseId, 15_000);
      }),
    );
  }

  // Probe M, finding 5: `npm run batcher` died of an uncaught exception (a raw stack trace, not a
  // JSON line) when PostgreSQL was away at its start, and stayed down; the server waits instead.
  test('with the database away, the standalone batcher waits and retries (JSON lines), stops cleanly on SIGTERM meanwhile, and consumes once it is back', { skip, timeout: 120_000 }, (t) =>
    withFaultEnv(t, { proxyDatabase: true, students: 5 }, async (env) => {
      const proxy = env.dbProxy;
      assert.ok(proxy);
      proxy.cut();
      const nonJson = (c: { output: (n?: number) => string }) =>
        c
          .output(300)
          .split('\n')
          .filter((l) => {
            try {
              JSON.parse(l);
              return false;
            } catch {
              return true;
            }
          });

      // A SIGTERM while it waits: a clean exit, said in the log.
      const first = env.startBatcher({ LOG_LEVEL: 'info' });
      await first.waitForLog(RETRYING, 60_000);
      first.proc.kill('SIGTERM');
      const code = await Promise.race([first.exited, sleep(10_000).then(() => 'still running' as const)]);
      assert.equal(code, 0, `the waiting batcher did not exit cleanly on SIGTERM:\n${first.output()}`);
      assert.ok(first.hasLog(msg('batcher stopping before it started')), first.output());
      assert.deepEqual(nonJson(first), [], 'every line of the batcher is a JSON log line');

      const batcher = env.startBatcher({ LOG_LEVEL: 'info' });
      await batcher.waitForLog(RETRYING, 60_000);
      await waitFor(async () => batcher.hasLog((l) => l['msg'] === 'storage unavailable at start; retrying' && l['attempt'] === 3), 30_000, 'a third attempt');
      assert.ok(batcher.alive, `the batcher exited while the database was away:\n${batcher.output()}`);
      assert.ok(!batcher.hasLog(msg('batcher started')), 'the batcher started while the database was away');

      proxy.resume();
      await batcher.waitForLog(msg('batcher is the active consumer'), 30_000);
      assert.ok(batcher.alive);
      assert.deepEqual(nonJson(batcher), [], 'every line of the batcher is a JSON log line');
    }),
  );
});
