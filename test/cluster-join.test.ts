import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { streamNames } from '../src/persistence/full-store.js';
import { checkConverged, Load, type Node, shardOwners, startNode } from './support/cluster-harness.js';
import { Api, codeOf, freePort, msg, portOpen, sleep, waitFor, withFaultEnv } from './support/fault-harness.js';
import { AMQP_URL, PG_ADMIN_URL, requireService } from './support/services.js';

/**
 * A (re)starting instance must not own a shard before it accepts connections: peers forward a
 * shard's writes to the address recorded with its lease, and while that port refused them the
 * forwards retried and, past FORWARD_RETRY_MS, were answered 503 (a black-box probe saw a 2.9 s
 * gap under load). Now an instance that finds a live peer at its start takes its share only once
 * it listens. Sampled here: the lease table (owned by the newcomer?) first, then its port; the
 * port, once open, stays open, so an owned lease followed by a closed port means the lease came
 * first.
 */

const log = (line: string) => console.log(`# [cluster-join] ${line}`);
const SHARDS = 3;

describe('an instance joining a running cluster (SHARDS=3, real PostgreSQL and RabbitMQ)', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));

  test('the newcomer owns no shard before its server accepts connections, then takes its share; writes meanwhile get no 5xx', { skip, timeout: 240_000 }, (t) =>
    withFaultEnv(t, { students: 200, largeSections: true }, async (env) => {
      // The default lease (rounds every 500 ms): a newcomer counted as live gets a share within a
      // second or so, well inside the time it takes to build its server after loading.
      const extra = { SHARDS: String(SHARDS) };
      env.startBatcher({ LOG_LEVEL: 'info' });
      const a = await startNode(env, 'engine-a', extra, env.api.port);
      const nodes: Node[] = [a];
      t.after(() => nodes.forEach((n) => n.api.close()));
      await waitFor(async () => (await shardOwners(env, nodes)).size === SHARDS || null, 30_000, 'the first instance to own every shard');

      // Writes for every shard through A while B starts, joins and takes a share.
      const load = new Load(env, () => [...nodes], env.seed.students.slice(0, 150));
      load.start(8);
      await sleep(500);

      const port = await freePort();
      const stream = streamNames(env.prefix).stream;
      const child = env.spawn('engine-b', 'src/main.ts', { PORT: String(port), LOG_LEVEL: 'info', ...extra });
      const t0 = performance.now();
      let firstOwnedMs: number | null = null;
      let firstListeningMs: number | null = null;
      const ownedWhileClosed: string[] = [];
      let samples = 0;
      for (;;) {
        assert.ok(child.alive, `engine-b exited:\n${child.output()}`);
        assert.ok(performance.now() - t0 < 90_000, `engine-b to listen and take a share (owned at ${firstOwnedMs} ms, listening at ${firstListeningMs} ms)`);
        const owned = await env.db.query<{ shard: number }>(
          'SELECT shard FROM shard_leases WHERE log_name = $1 AND address LIKE $2 AND owner IS NOT NULL AND expires_at > now() ORDER BY shard',
          [stream, `%:${port}`],
        );
        const listening = await portOpen('127.0.0.1', port, 200);
        samples += 1;
        const ms = Math.round(performance.now() - t0);
        if (owned.rows.length > 0 && firstOwnedMs === null) firstOwnedMs = ms;
        if (listening && firstListeningMs === null) firstListeningMs = ms;
        if (owned.rows.length > 0 && !listening) ownedWhileClosed.push(`${ms} ms: shards ${owned.rows.map((r) => r.shard).join(',')}`);
        if (owned.rows.length > 0 && listening) break;
        await sleep(10);
      }
      log(`engine-b: listening from ${firstListeningMs} ms, first lease at ${firstOwnedMs} ms (${samples} samples)`);
      assert.deepEqual(ownedWhileClosed, [], 'engine-b held no lease while its port refused connections');
      assert.ok((firstListeningMs as number) <= (firstOwnedMs as number), 'it listened before it owned a shard');
      assert.ok(child.hasLog(msg('live peers found: no lease is taken before this instance listens (join)')), 'it said why it waited');

      const b: Node = { name: 'engine-b', api: new Api(port), child };
      await waitFor(async () => (await b.api.request('GET', '/ready', null, undefined, 1000)).status === 200, 30_000, 'engine-b to be ready');
      nodes.push(b);
      await waitFor(
        async () => {
          const owners = await shardOwners(env, nodes);
          return owners.size === SHARDS && [...owners.values()].some((o) => o.node === b) ? owners : null;
        },
        60_000,
        'every shard owned, one of them by engine-b',
      );
      await sleep(1000);
      await load.stop();
      const bad = load.sent.filter((s) => s.r.status >= 500 || s.r.status <= 0).map((s) => `${s.via} ${s.course} ${s.r.status} ${codeOf(s.r)}`);
      log(`${load.sent.length} enrolls during the join; ${bad.length} 5xx or broken`);
      assert.deepEqual(bad, [], 'no 5xx and no broken connection while engine-b joined');
      await checkConverged(env, nodes, load.sent);
    }),
  );
});
