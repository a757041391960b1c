import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  LoadDriver,
  checkInvariants,
  checkModel,
  fmtMs,
  log,
  msg,
  outcomeOf,
  portOpen,
  readApi,
  sleep,
  verifyAll,
  waitDatabaseEquals,
  waitFor,
  withFaultEnv,
  type Child,
  type FaultEnv,
  type OpRecord,
} from './support/fault-harness.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * GitHub issue 3: full mode under faults, with the engine (`src/main.ts`) and the batcher
 * (`src/cli/batcher.ts`) as real child processes under HTTP load, against the real PostgreSQL and
 * RabbitMQ. Each test has its own database, stream and dead-letter queue and removes them; the
 * shared services keep running (the one real broker restart always starts the broker again).
 *
 * After each fault: every change that got a 2xx is present exactly once, nothing that got a 4xx
 * is present, in-doubt requests (503, broken connection) are present at most once, the invariants
 * hold, and PostgreSQL converges to the actors' state (see test/support/fault-harness.ts).
 *
 * Prints what it measures: restart times and events replayed, batcher catch-up, 503 latency.
 * FAULTS_VERBOSE=1 prints the processes' output. The real broker restart (c2) stops the shared
 * RabbitMQ for a few seconds: it skips itself when other clients are connected to the broker, and
 * FAULTS_BROKER_RESTART=0 skips it always.
 */

const run = promisify(execFile);
const STATE_LOADED = msg('state loaded (database + stream tail)');
const ACTIVE = msg('batcher is the active consumer');
const READY_LINE = (l: Record<string, unknown>) => typeof l.startupMs === 'number';

/**
 * Issue 3 asks that reads keep working while the broker is unreachable: after a failed write the
 * engine rolls memory back to its acknowledged state without storage, so reads answer 200 (and never
 * show the refused change) while writes answer 503. The broker scenarios below assert it with
 * `readWhile`; test/http-storage.test.ts asserts it against the engine alone.
 */
const applied = (r: OpRecord) => outcomeOf(r.status) === 'applied';
const unavailable = (r: OpRecord) => r.status === 503;
const TEST_TIMEOUT = 150_000;

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
}

/** Sessions holding an advisory lock in the test database (the batchers' leadership lock). */
async function advisoryLockHolders(env: FaultEnv): Promise<number> {
  const r = await env.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()`,
  );
  return Number(r.rows[0]?.n ?? 0);
}

/** Reads (a student's sections, the section list) for `ms`, one after another; counts the 200s. */
async function readWhile(env: FaultEnv, ms: number): Promise<{ total: number; ok: number; maxMs: number; failures: string[] }> {
  const end = performance.now() + ms;
  const student = env.seed.students[0] as number;
  let total = 0;
  let ok = 0;
  let maxMs = 0;
  const failures: string[] = [];
  while (performance.now() < end) {
    for (const [path, token] of [
      ['/student/course', env.studentToken(student)],
      ['/sections', env.staffToken],
    ] as const) {
      const r = await env.api.request('GET', path, token, undefined, 2000);
      total++;
      maxMs = Math.max(maxMs, r.ms);
      if (r.status === 200) ok++;
      else if (failures.length < 4) failures.push(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    await sleep(50);
  }
  return { total, ok, maxMs, failures };
}

/** When the first write that started after `since` in `phase` was acknowledged (ms after `since`). */
async function firstAcknowledged(load: LoadDriver, phase: string, since: number, timeoutMs: number): Promise<number> {
  const done = () => load.records.filter((r) => r.phase === phase && applied(r));
  await waitFor(async () => done().length > 0, timeoutMs, `writes to succeed (${phase})`);
  return Math.min(...done().map((r) => r.start + r.ms)) - since;
}

/**
 * Runs the load for 2 s, then `fault` for `holdMs` (asking /ready `readyAtMs` into it), then
 * `restore`, and waits until a write sent after that is acknowledged; the load stops 1.5 s later.
 * Phases `name` and `${name} over` mark the records.
 */
async function underFault(
  env: FaultEnv,
  load: LoadDriver,
  o: { name: string; fault: () => void; restore: () => void; holdMs: number; readyAtMs: number },
): Promise<{ from: number; to: number; ready: Awaited<ReturnType<FaultEnv['api']['request']>>; backMs: number }> {
  load.start();
  await sleep(2000);
  load.phase = o.name;
  o.fault();
  const from = performance.now();
  await sleep(o.readyAtMs);
  const ready = await env.api.request('GET', '/ready', null, undefined, 5000);
  await sleep(o.holdMs - o.readyAtMs);
  load.phase = `${o.name} over`;
  o.restore();
  const to = performance.now();
  const backMs = await firstAcknowledged(load, `${o.name} over`, to, 30_000);
  await sleep(1500);
  await load.stop();
  return { from, to, ready, backMs };
}

describe('full mode under faults (engine and batcher as child processes, real PostgreSQL and RabbitMQ)', { concurrency: false }, async () => {
  after(() => {
    // Diagnostic only (the timer does not keep the process alive): if something else does, say what.
    setTimeout(() => console.error('[faults] still running 10 s after the suite; open handles:', JSON.stringify(process.getActiveResourcesInfo())), 10_000).unref();
  });
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('a) kill -9 of the engine mid-load, immediate restart: nothing acknowledged is lost or doubled', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, {}, async (env) => {
      env.startBatcher();
      const first = await env.startEngine();
      const load = new LoadDriver(env, { concurrency: 48 });
      load.start();
      await sleep(3000);
      const ackedBefore = load.count(applied);

      await env.engine?.kill9();
      const killedAt = performance.now();
      load.phase = 'after restart';
      const { child, readyMs } = await env.startEngine({ LOG_LEVEL: 'info' }, 60_000);
      const sinceKill = performance.now() - killedAt;
      const loaded = await child.waitForLog(STATE_LOADED, 5000);
      const up = await child.waitForLog(READY_LINE, 5000);
      await waitFor(async () => load.count((r) => r.phase === 'after restart' && applied(r)) > 200, 30_000, 'writes to succeed after the restart');
      await sleep(1000);
      await load.stop();
      assert.ok(ackedBefore > 100, `load before the kill: ${ackedBefore} acknowledged`);

      const v = await verifyAll(env, load);
      log(
        `a) engine restart under load: ${fmtMs(readyMs)} from spawn to /ready (${fmtMs(sinceKill)} after kill -9; first start ${fmtMs(first.readyMs)}); ` +
          `main() to listening ${String(up.startupMs)} ms (the rest is loading the TypeScript sources through tsx); ` +
          `${String(loaded.events)} unapplied events replayed, state loaded in ${String(loaded.ms)} ms`,
      );
      log(`a) ${load.summary()}; ${v.report.inDoubt} in doubt; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`);
    }),
  );

  test('a2) batcher stopped, 20,000+ events appended, engine killed and restarted: exact state from the stream, then the batcher catches up', { skip, timeout: TEST_TIMEOUT }, (t) =>
    // Large sections, so that most requests succeed and the 20,000 events come quickly.
    withFaultEnv(t, { students: 400, largeSections: true }, async (env) => {
      await env.startEngine();
      const load = new LoadDriver(env, { concurrency: 64, staffShare: 0.05, dropShare: 0.35, changeShare: 0.35 });
      const t0 = performance.now();
      load.start();
      await waitFor(async () => load.eventsLowerBound() >= 21_000, 90_000, '21,000 events', 100);
      await load.stop();
      const loadMs = performance.now() - t0;
      const before = await readApi(env);
      assert.deepEqual(checkInvariants(before), []);
      assert.equal(await env.appliedEvents(), 0, 'no batcher ran: the database holds no events');

      await env.engine?.kill9();
      const { child, readyMs } = await env.startEngine({ LOG_LEVEL: 'info' }, 60_000);
      const loaded = await child.waitForLog(STATE_LOADED, 5000);
      const up = await child.waitForLog(READY_LINE, 5000);
      log(
        `a2) ${load.summary()} in ${fmtMs(loadMs)} (${Math.round(load.records.length / (loadMs / 1000))} req/s); restart with the batcher never run: ` +
          `${fmtMs(readyMs)} from spawn to /ready (main() to listening ${String(up.startupMs)} ms), ` +
          `${String(loaded.events)} events (${String(loaded.messages)} messages) replayed, state loaded in ${String(loaded.ms)} ms`,
      );
      assert.ok(Number(loaded.events) >= 20_000, `replayed ${String(loaded.events)} events`);
      const after = await readApi(env);
      assert.deepEqual(after, before, 'the restarted engine serves exactly the acknowledged state');
      assert.deepEqual(checkModel(load.records, after, env.seed).problems, []);

      const started = performance.now();
      const batcher = env.startBatcher({ LOG_LEVEL: 'info' });
      await batcher.waitForLog(ACTIVE, 60_000);
      const leadAt = performance.now();
      await waitDatabaseEquals(env, after, 60_000);
      const caughtUp = performance.now() - leadAt;
      const events = await env.appliedEvents();
      log(
        `a2) batcher catch-up from zero: ${events} events in ${fmtMs(caughtUp)} after it took the lead ` +
          `(${Math.round(events / (caughtUp / 1000))} events/s; ${fmtMs(leadAt - started)} from spawn to lead)`,
      );
    }),
  );

  test('b) kill -9 of the batcher mid-load; two batchers: one active, the standby takes over', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, {}, async (env) => {
      const b1 = env.startBatcher({ LOG_LEVEL: 'info' });
      await env.startEngine();
      await b1.waitForLog(ACTIVE, 30_000);
      const load = new LoadDriver(env);
      load.start();
      await sleep(2500);

      await b1.kill9();
      load.phase = 'no batcher';
      await sleep(300); // a COMMIT already sent when the batcher died may still land
      const stalledAt = await env.appliedEvents();
      await sleep(1500);
      assert.equal(await env.appliedEvents(), stalledAt, 'with its batcher killed, nothing reaches the database');
      assert.ok(load.count((r) => r.phase === 'no batcher' && applied(r)) > 50, 'the engine keeps acknowledging with no batcher running');

      // Two batchers at once: exactly one takes the lead.
      load.phase = 'two batchers';
      const pair = [env.startBatcher({ LOG_LEVEL: 'info' }), env.startBatcher({ LOG_LEVEL: 'info' })];
      const startedAt = performance.now();
      const leader = await Promise.any(pair.map((b) => b.waitForLog(ACTIVE, 60_000).then(() => b)));
      const leadMs = performance.now() - startedAt;
      const standby = pair.find((b) => b !== leader) as Child;
      await waitFor(async () => (await env.appliedEvents()) > stalledAt, 20_000, 'the new batcher to apply the backlog');
      await sleep(1500);
      assert.equal(standby.hasLog(ACTIVE), false, 'the second batcher stands by');
      assert.equal(standby.alive, true, 'the standby is running');
      assert.equal(await advisoryLockHolders(env), 1, 'one session holds the batcher lock');

      await leader.kill9();
      const killedAt = performance.now();
      load.phase = 'standby took over';
      await standby.waitForLog(ACTIVE, 20_000);
      const takeoverMs = performance.now() - killedAt;
      await sleep(1500);
      await load.stop();

      const v = await verifyAll(env, load);
      log(
        `b) a new batcher led ${fmtMs(leadMs)} after its spawn; the standby took over ${fmtMs(takeoverMs)} after kill -9 of the active one; ` +
          `${load.summary()}; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`,
      );
    }),
  );

  test('c) broker connection cut (TCP proxy): writes answer 503 with a reason within 1 s, the engine reconnects by itself', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, { proxyBroker: true }, async (env) => {
      const proxy = env.brokerProxy as NonNullable<FaultEnv['brokerProxy']>;
      env.startBatcher();
      await env.startEngine();
      const load = new LoadDriver(env);
      load.start();
      await sleep(2000);

      load.phase = 'broker cut';
      proxy.cut();
      const cutAt = performance.now();
      const reads = await readWhile(env, 3000);
      const ready = await env.api.request('GET', '/ready', null);
      load.phase = 'broker back';
      proxy.resume();
      const resumedAt = performance.now();
      const backMs = await firstAcknowledged(load, 'broker back', resumedAt, 30_000);
      await sleep(1500);
      await load.stop();

      const during = load.records.filter((r) => r.phase === 'broker cut');
      const refused = during.filter(unavailable);
      const lat = refused.map((r) => r.ms);
      log(
        `c) broker cut ${fmtMs(resumedAt - cutAt)}: ${during.length} writes, ${refused.length} answered 503 ` +
          `(latency p50 ${fmtMs(percentile(lat, 50))}, p99 ${fmtMs(percentile(lat, 99))}, max ${fmtMs(Math.max(...lat))}), e.g. "${refused[0]?.reason ?? ''}"; ` +
          `${reads.ok}/${reads.total} reads answered 200; /ready ${ready.status}; writes succeeded again ${fmtMs(backMs)} after the link came back`,
      );
      assert.ok(refused.length > 10, 'writes were refused while the broker was away');
      assert.ok(Math.max(...lat) < 1000, `every 503 within 1 s (max ${Math.round(Math.max(...lat))} ms)`);
      assert.ok(refused.every((r) => r.reason.length > 0 && r.code === 'UNAVAILABLE'), '503s carry a reason');
      assert.equal(during.filter((r) => applied(r) && r.start > cutAt + 200).length, 0, 'nothing is acknowledged while the broker is away');
      assert.equal(ready.status, 503, '/ready reports the broker away');
      assert.ok(proxy.accepted >= 3, 'the engine and the batcher reconnected through the proxy');
      await t.test('reads keep answering 200 while the broker is away', () => {
        assert.deepEqual(reads.failures, []);
      });

      const v = await verifyAll(env, load);
      log(`c) ${load.summary()}; ${v.report.inDoubt} in doubt; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`);
    }),
  );

  test('c2) real broker restart (rabbitmqctl stop_app / start_app): confirmed events survive, the engine reconnects', { skip: skip || brokerRestartSkip(), timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, {}, async (env) => {
      const busy = await foreignBrokerClients(0);
      if (busy) {
        t.skip(`not restarting the shared broker: ${busy}`);
        return;
      }
      const batcher = env.startBatcher({ LOG_LEVEL: 'info' });
      await env.startEngine();
      await batcher.waitForLog(msg('consuming the stream'), 30_000); // both our clients are connected
      const load = new LoadDriver(env, { concurrency: 32 });
      load.start();
      await sleep(2000);

      // Ours: the engine's event-log connection, its webhook delivery queue's, and the batcher's.
      const others = await foreignBrokerClients(3);
      if (others) {
        await load.stop();
        t.skip(`not restarting the shared broker: ${others}`);
        return;
      }
      load.phase = 'broker stopped';
      let stopMs = 0;
      let startMs = 0;
      let reads: Awaited<ReturnType<typeof readWhile>>;
      t.after(ensureBrokerRunning); // even if this test is abandoned half-way
      const t0 = performance.now();
      try {
        await run('rabbitmqctl', ['stop_app'], { timeout: 60_000 });
        stopMs = performance.now() - t0;
        reads = await readWhile(env, 1500);
      } finally {
        const t1 = performance.now();
        await ensureBrokerRunning();
        startMs = performance.now() - t1;
      }
      load.phase = 'broker back';
      const backAt = performance.now();
      const backMs = await firstAcknowledged(load, 'broker back', backAt, 30_000);
      await sleep(1500);
      await load.stop();

      const lat = load.records.filter((r) => r.phase === 'broker stopped' && unavailable(r)).map((r) => r.ms);
      log(
        `c2) rabbitmqctl stop_app took ${fmtMs(stopMs)}, start_app until port 5672 accepts ${fmtMs(startMs)}; ${lat.length} writes answered 503 while stopped ` +
          `(p99 ${fmtMs(percentile(lat, 99))}, max ${fmtMs(Math.max(...lat))}); ${reads.ok}/${reads.total} reads answered 200; ` +
          `writes succeeded again ${fmtMs(backMs)} after the port reopened`,
      );
      assert.ok(lat.length > 0 && Math.max(...lat) < 1000, 'writes answer 503 within 1 s while the broker is stopped');
      await t.test('reads keep answering 200 while the broker is stopped', () => {
        assert.deepEqual(reads.failures, []);
      });

      const v = await verifyAll(env, load);
      log(`c2) ${load.summary()}; ${v.report.inDoubt} in doubt; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`);
    }),
  );

  test('d) database outage (TCP proxy): the engine keeps accepting, the batcher retries and catches up', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, { proxyDatabase: true }, async (env) => {
      const proxy = env.dbProxy as NonNullable<FaultEnv['dbProxy']>;
      const batcher = env.startBatcher({ LOG_LEVEL: 'info' });
      // Since issue 14 the owner holds its shards by a lease in PostgreSQL and acknowledges only
      // inside it: it keeps accepting through a database outage shorter than LEASE_TTL_MS (the
      // default 2.5 s trades that for a fast failover; test/cluster.test.ts cuts one instance for
      // longer and checks it stops). This outage lasts about 4 s.
      await env.startEngine({ LEASE_TTL_MS: '20000' });
      await batcher.waitForLog(ACTIVE, 30_000);
      const load = new LoadDriver(env);
      load.start();
      await sleep(2000);

      load.phase = 'database cut';
      proxy.cut();
      const cutAt = performance.now();
      await sleep(300); // the batch in flight when the link went down fails; nothing commits after this
      const appliedAtCut = await env.appliedEvents();
      const reads = await readWhile(env, 3500);
      const appliedLater = await env.appliedEvents();
      await load.stop();
      const cutMs = performance.now() - cutAt;
      const during = load.records.filter((r) => r.phase === 'database cut');

      // The engine's state is checked now; then the database comes back and must catch up to it.
      const snapshot = await readApi(env);
      assert.deepEqual(checkInvariants(snapshot), []);
      assert.deepEqual(checkModel(load.records, snapshot, env.seed).problems, []);
      proxy.resume();
      const resumedAt = performance.now();
      let firstBatchMs = 0;
      const watch = (async () => {
        while (firstBatchMs === 0 && performance.now() - resumedAt < 60_000) {
          if ((await env.appliedEvents().catch(() => appliedLater)) > appliedLater) firstBatchMs = performance.now() - resumedAt;
          else await sleep(25);
        }
      })();
      const caughtUpMs = await waitDatabaseEquals(env, snapshot, 60_000);
      await watch;
      const events = (await env.appliedEvents()) - appliedLater;
      log(
        `d) database cut ${fmtMs(cutMs)}: ${during.length} writes (${during.filter(applied).length} acknowledged, ${during.filter(unavailable).length} answered 503), ` +
          `${reads.ok}/${reads.total} reads answered 200; ${appliedLater - appliedAtCut} events applied while cut; after the link came back: first batch ${fmtMs(firstBatchMs)} ` +
          `(retry back-off), caught up ${events} events ${fmtMs(caughtUpMs)} after the link came back (${fmtMs(caughtUpMs - firstBatchMs)} after the first batch)`,
      );
      assert.ok(during.filter(applied).length > 50, 'the engine kept acknowledging writes while the database was away');
      assert.equal(during.filter(unavailable).length, 0, 'no write is refused for a database outage (the broker holds the events)');
      assert.equal(appliedLater, appliedAtCut, 'nothing reached the database while it was away');
      assert.deepEqual(reads.failures, [], 'reads keep working while the database is away');
      assert.ok(batcher.alive, 'the batcher survived the outage');
      assert.ok(
        batcher.hasLog(msg('database unavailable; batch will be retried')) || batcher.hasLog(msg('cannot reach the database for leadership; retrying')),
        'the batcher retried',
      );
      assert.ok(events > 0, 'the backlog was applied');
      log(`d) ${load.summary()}`);
    }),
  );

  test('e) database outage longer than the lease: writes are refused meanwhile, and served again by themselves once it is back (no restart)', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, { proxyDatabase: true }, async (env) => {
      const proxy = env.dbProxy as NonNullable<FaultEnv['dbProxy']>;
      env.startBatcher();
      // The default lease (2.5 s): the outage outlasts it, so the engine stops acknowledging, its
      // reload from storage fails, and it must try again by itself once the database is back
      // (no write reaches it to ask: a shard it holds but has not reloaded is not served).
      await env.startEngine();
      const load = new LoadDriver(env);
      const { from: cutAt, to: resumedAt, ready, backMs } = await underFault(env, load, {
        name: 'database cut',
        fault: () => proxy.cut(),
        restore: () => proxy.resume(),
        holdMs: 6000,
        readyAtMs: 4000,
      });

      const during = load.records.filter((r) => r.phase === 'database cut');
      const after = load.records.filter((r) => r.phase === 'database cut over');
      log(
        `e) database cut ${fmtMs(resumedAt - cutAt)}: /ready ${ready.status}; ${during.length} writes (${during.filter(applied).length} acknowledged, ${during.filter(unavailable).length} answered 503); ` +
          `after it came back: writes acknowledged again ${fmtMs(backMs)} later, ${after.filter(applied).length} of ${after.length} acknowledged`,
      );
      assert.ok(during.filter(unavailable).length > 0, 'writes were refused once the lease could not be renewed');
      assert.equal(ready.status, 503, `/ready says no write can succeed: ${JSON.stringify(ready.body)}`);
      assert.ok(after.filter(applied).length > 20, 'the engine serves writes again without a restart');
      const v = await verifyAll(env, load);
      log(`e) ${load.summary()}; ${v.report.inDoubt} in doubt; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`);
    }),
  );

  test('f) broker link stalls (open, no bytes): writes answer 503 within the confirm timeout instead of hanging, /ready says so, and writes succeed again once it flows', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, { proxyBroker: true }, async (env) => {
      const proxy = env.brokerProxy as NonNullable<FaultEnv['brokerProxy']>;
      env.startBatcher();
      await env.startEngine({ BROKER_CONFIRM_TIMEOUT_MS: '1500' });
      const load = new LoadDriver(env);
      const { from: stalledAt, to: flowsAt, ready, backMs } = await underFault(env, load, {
        name: 'broker stalled',
        fault: () => proxy.stall(),
        restore: () => proxy.flow(),
        holdMs: 10_000,
        readyAtMs: 5000,
      });

      // Every write sent while the link hung, whenever it was answered.
      const during = load.records.filter((r) => r.start >= stalledAt && r.start < flowsAt);
      const refused = during.filter(unavailable);
      const slowest = Math.max(...during.map((r) => r.ms));
      log(
        `f) broker stalled ${fmtMs(flowsAt - stalledAt)}: ${during.length} writes, ${refused.length} answered 503 (slowest answer ${fmtMs(slowest)}), e.g. "${refused[0]?.reason ?? ''}"; ` +
          `/ready ${ready.status}; writes acknowledged again ${fmtMs(backMs)} after it flowed`,
      );
      assert.ok(refused.length > 0, 'writes were refused while the broker did not answer');
      // At worst the confirm timeout (1.5 s), then a new connection's attempt (3 s), never the stall (10 s).
      assert.ok(slowest < 7500, `no write waited for the stalled broker (slowest ${Math.round(slowest)} ms; confirm timeout 1.5 s)`);
      assert.equal(ready.status, 503, '/ready reports the broker away');
      const v = await verifyAll(env, load);
      log(`f) ${load.summary()}; ${v.report.inDoubt} in doubt; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`);
    }),
  );

  test('g) SIGTERM of a lone instance under load: writes in flight are answered, none waits for a takeover, it exits promptly, nothing acknowledged is lost', { skip, timeout: TEST_TIMEOUT }, (t) =>
    withFaultEnv(t, {}, async (env) => {
      env.startBatcher();
      const { child } = await env.startEngine();
      const load = new LoadDriver(env);
      load.start();
      await sleep(2000);

      load.phase = 'stopping';
      const at = performance.now();
      child.proc.kill('SIGTERM');
      await child.exited;
      const exitMs = performance.now() - at;
      await sleep(300);
      await load.stop();
      const answered = load.records.filter((r) => r.phase === 'stopping' && r.status > 0);
      const refused = answered.filter(unavailable);
      log(
        `g) SIGTERM: exited ${fmtMs(exitMs)} later with code ${String(child.exitCode)}; ${answered.length} requests answered meanwhile ` +
          `(${answered.filter(applied).length} acknowledged, ${refused.length} answered 503${refused[0] ? `, e.g. "${refused[0].reason}"` : ''}, slowest ${fmtMs(Math.max(0, ...answered.map((r) => r.ms)))})`,
      );
      assert.equal(child.exitCode, 0, 'a clean exit');
      assert.ok(exitMs < 10_000, `exited within 10 s (${Math.round(exitMs)} ms)`);
      assert.deepEqual(refused.map((r) => r.reason), [], 'no write waited for a takeover that could not come');

      await env.startEngine();
      const v = await verifyAll(env, load);
      log(`g) ${load.summary()}; ${v.report.inDoubt} in doubt; database caught up ${fmtMs(v.dbCatchUpMs)} after the load stopped`);
    }),
  );
});

/**
 * The real broker restart stops the shared RabbitMQ application for a few seconds, which other
 * test files running at the same time (or other users of the broker) notice. It runs by default;
 * FAULTS_BROKER_RESTART=0 skips it.
 */
function brokerRestartSkip(): string | false {
  return process.env.FAULTS_BROKER_RESTART === '0' ? 'FAULTS_BROKER_RESTART=0' : false;
}

/**
 * Who else uses the broker: during c2 the only clients should be this test's engine and batcher
 * (one connection each, `ours`). Anything more is another test run or user that a restart would
 * disturb; the restart is then skipped (the TCP-proxy cut in c covers the engine's side).
 */
async function foreignBrokerClients(ours: number): Promise<string | null> {
  const { stdout } = await run('rabbitmqctl', ['-q', 'list_connections', 'peer_host', 'peer_port', 'user'], { timeout: 30_000 });
  const rows = stdout.split('\n').filter((l) => /\d/.test(l));
  return rows.length > ours ? `${rows.length} client connection(s) open, ${ours} of them this test's` : null;
}

/** Starts the RabbitMQ application if it is not accepting connections, and waits until it does. */
async function ensureBrokerRunning(): Promise<void> {
  const u = new URL(AMQP_URL);
  const port = Number(u.port || 5672);
  if (await portOpen(u.hostname, port)) return;
  await run('rabbitmqctl', ['start_app'], { timeout: 120_000 });
  await waitFor(() => portOpen(u.hostname, port), 60_000, 'RabbitMQ to accept connections again', 200);
}
