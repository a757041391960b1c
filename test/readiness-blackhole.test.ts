import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createLogger } from '../src/logger.js';
import { createFullStore, type FullStore } from '../src/persistence/full-store.js';
import { createHttpFixture } from './support/http-fixture.js';
import { createTestDatabase } from './support/pg.js';
import { PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

/**
 * Probe M, finding 4: with PostgreSQL's path dropping packets (no reset), `/ready` itself hung: the
 * first probe got no answer within 10 s, later ones 503 after 2 s, and each probe queued one more
 * query. Orchestrators probe with a 1 s timeout, so readiness must answer within it, naming the
 * database check, and probes arriving meanwhile must share the check that is out.
 */
describe('/ready with the database blackholed', async () => {
  const skip = await requireService('PostgreSQL', PG_ADMIN_URL);
  let proxy: TcpProxy | null = null;
  let store: FullStore | null = null;
  let drop: (() => Promise<void>) | null = null;
  after(async () => {
    await store?.close();
    await proxy?.close();
    await drop?.();
  });

  test('answers 503 within 1 s naming the database check, one check for concurrent probes, ok again once the path is back', { skip, timeout: 60_000 }, async () => {
    const tdb = await createTestDatabase();
    drop = tdb.drop;
    const u = new URL(tdb.url);
    proxy = await TcpProxy.start(u.hostname, Number(u.port || 5432));
    const lines: string[] = [];
    const logger = createLogger('debug', { write: (l: string) => void lines.push(l) });
    store = await createFullStore({
      databaseUrl: proxy.rewrite(tdb.url),
      // No broker: the test is about the database check (readiness is 503 anyway, the database check is what is looked at).
      rabbitmqUrl: 'amqp://guest:guest@127.0.0.1:1',
      prefix: uniqueName('ready_bh'),
      logger,
      batchMaxEvents: 10,
      runBatcher: false,
    });
    await store.migrate();
    const s = store;
    const fx = await createHttpFixture({ app: { readiness: () => s.readiness() } });
    try {
      type Body = { checks: Record<string, { ok: boolean; detail?: string }> };
      const probe = async () => {
        const t0 = performance.now();
        let timer: NodeJS.Timeout | undefined;
        const hung = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('/ready gave no answer within 5 s')), 5000);
        });
        const r = await Promise.race([fx.request('GET', '/ready'), hung]).finally(() => clearTimeout(timer));
        return { status: r.status, database: (r.body as Body).checks.database, ms: performance.now() - t0 };
      };

      // The database answers: its check is ok (its connection is open through the proxy).
      const before = await probe();
      assert.deepEqual(before.database, { ok: true });

      proxy.blackhole();
      const failedBefore = lines.filter((l) => l.includes('readiness: the database check failed')).length;
      // Ten probes at once, then a few more one after another while the first check is still out.
      const burst = await Promise.all(Array.from({ length: 10 }, () => probe()));
      const serial = [];
      for (let i = 0; i < 3; i++) serial.push(await probe());
      for (const p of [...burst, ...serial]) {
        assert.equal(p.status, 503);
        assert.equal(p.database?.ok, false);
        // Past the check bound; or, when the hung check ends by its own statement bound as a probe waits on it, that bound.
        assert.match(String(p.database?.detail), /^no answer within \d+ ms$/);
        assert.ok(p.ms < 1000, `/ready answered after ${Math.round(p.ms)} ms (an orchestrator's probe waits 1 s)`);
      }
      console.log(`[ready] blackholed: slowest answer ${Math.round(Math.max(...[...burst, ...serial].map((p) => p.ms)))} ms`);
      // The hung check ends by itself (its connection's bounds): logged once, not once per probe.
      await new Promise((r) => setTimeout(r, 2500));
      const failed = lines.filter((l) => l.includes('readiness: the database check failed')).length - failedBefore;
      assert.ok(failed >= 1 && failed <= 2, `${failed} database checks failed for 13 probes: probes must share the check that is out`);

      // The path is back (the blackholed connections stay dead): the check is ok again within a few seconds.
      proxy.flow();
      proxy.cut();
      proxy.resume();
      const t0 = performance.now();
      let last = await probe();
      while (last.database?.ok !== true && performance.now() - t0 < 10_000) {
        await new Promise((r) => setTimeout(r, 200));
        last = await probe();
      }
      assert.deepEqual(last.database, { ok: true }, 'the database check recovers once the database answers again');
    } finally {
      await fx.close();
    }
  });
});
