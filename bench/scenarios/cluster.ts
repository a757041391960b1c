import { check, type BenchOptions, type ScenarioReport, type TargetCheck } from '../lib/common.js';
import { closeAll, openConnections, type HttpConnection } from '../lib/http.js';
import { runTimed, type Job, type LoadResult } from '../lib/load.js';
import { note } from '../lib/progress.js';
import { Ledger, sectionRef, studentId, type SeedSpec } from '../lib/seed.js';
import { fmt } from '../lib/stats.js';
import { System } from '../lib/system.js';
import { enrollRequest, loginAll, runRushLoad } from '../lib/workloads.js';
import { homeShardOf, shardOfCourse } from '../../src/persistence/types.js';

/**
 * `cluster` (issue 14): the same rush (one enroll per student, student i -> section i mod 20) on
 * one instance, on three instances sharing one database and stream with one shard (one owner), and
 * on three instances with three shards (one owner each, student writes through the student's
 * home), with the connections spread evenly over the instances; then, on three instances, a timed
 * load through the other two while the first engine is killed with SIGKILL: the failover gap is
 * the time from the kill to the first decided answer (2xx or a rule refusal) to a request sent
 * after it whose section's shard (and, with three shards, whose student's home shard) the killed
 * engine owned. Asserted: the rush's outcome is exact in every variant (no overbooking), and no
 * acknowledged change is missing from PostgreSQL.
 */

const CONNECTIONS = 96;

export interface ClusterVariantFigures {
  instances: number;
  shards: number;
  load: LoadResult;
  /** Milliseconds from the last reply until PostgreSQL held every acknowledged row. */
  catchUpMs: number;
}

export interface ClusterFigures {
  variants: ClusterVariantFigures[];
  failover: { shards: number; gapMs: number; requests: number; status5xx: number; errors: Record<string, number> }[];
}

export async function clusterScenario(opts: BenchOptions, report: ScenarioReport<ClusterFigures>): Promise<void> {
  const spec: SeedSpec = {
    students: opts.students ?? 6000,
    sections: opts.sections ?? 20,
    groupsPerCourse: 1,
    capacity: 30,
    reserveCapacity: 10,
    units: 3,
    maxUnits: 20,
    remainingActions: 10,
    enrollmentsPerStudent: 0,
  };
  report.notes.push(
    `${fmt(spec.students)} students, one enroll each on ${spec.sections} sections (capacity ${spec.capacity} + reserve ${spec.reserveCapacity}), ` +
      `${CONNECTIONS} keep-alive connections spread evenly over the instances; separate batcher; 1 instance, 3 instances with SHARDS=1, 3 instances with SHARDS=3; ` +
        'on three, kill -9 of the first engine under a timed load through the other two.',
  );
  const figures: ClusterFigures = { variants: [], failover: [] };
  const targets: TargetCheck[] = [];
  for (const [instances, shards] of [
    [1, 1],
    [3, 1],
    [3, 3],
  ] as const) {
    const run = `cluster-${instances}x${shards}-${opts.stamp}`;
    const extraEnv = { ...opts.extraEnv, SHARDS: String(shards) };
    const sys = new System({ mode: 'full', batcher: 'separate', spec, runner: opts.runner, cpuProfile: null, extraEnv });
    note(`[${run}] starting ${instances} instance(s), ${shards} shard(s)`);
    await sys.start();
    const all: HttpConnection[][] = [];
    try {
      const ports = [sys.port];
      for (let i = 1; i < instances; i++) ports.push((await sys.startExtraEngine()).port);
      if (shards > 1) {
        // Cooperative rebalancing: wait until every instance owns its share.
        const until = performance.now() + 60_000;
        while (new Set((await sys.shardOwners()).values()).size < Math.min(instances, shards) && performance.now() < until) await new Promise((r) => setTimeout(r, 200));
        note(`[${run}] shard owners: ${JSON.stringify(Object.fromEntries(await sys.shardOwners()))}`);
      }
      const per = Math.floor(CONNECTIONS / instances);
      for (const port of ports) all.push(await openConnections(sys.host, port, per));
      const conns = all.flat();
      const target = { host: sys.host, port: sys.port };
      const login = await loginAll({ label: `${run} login`, target, conns, students: spec.students, owner: (i) => i % conns.length });
      const ledger = new Ledger((await sys.counts()) ?? { rows: 0, checksum: '0' });
      const { lastReplyAt, ...load } = await runRushLoad({ label: `${run} rush`, target, conns, tokens: login.tokens, spec, ledger });
      const catchUp = await sys.catchUp(ledger, lastReplyAt);
      figures.variants.push({ instances, shards, load, catchUpMs: catchUp.ms });
      const places = spec.sections * (spec.capacity + spec.reserveCapacity);
      report.checks.push({ name: `${run}: 204 replies = places`, ok: load.ok === Math.min(places, spec.students), detail: `${fmt(load.ok)} (places ${fmt(places)})` });
      report.checks.push({ name: `${run}: PostgreSQL holds every acknowledged row`, ok: catchUp.caughtUp, detail: `${catchUp.ms} ms after the last reply` });
      report.checks.push({ name: `${run}: no 5xx`, ok: load.status5xx === 0, detail: JSON.stringify(load.errors) });
      note(
        `[${run}] ${instances} instance(s), ${shards} shard(s): ${fmt(load.reqPerSec)} req/s, p50 ${load.latencyMs.p50} ms, p99 ${load.latencyMs.p99} ms, ` +
          `${fmt(load.ok)} acknowledged; database caught up ${catchUp.ms} ms after the last reply`,
      );

      if (instances === 3) {
        // Failover: a timed load through the two others; the first engine (with one shard, the owner) is killed.
        const survivors = all.slice(1).flat();
        const firstAddress = `http://${sys.host}:${sys.port}`;
        const victimShards = new Set([...(await sys.shardOwners())].filter(([, a]) => a === firstAddress).map(([s]) => s));
        let killedAt = 0;
        let firstAfter = 0;
        let k = 0;
        const next = (): Job => {
          const i = k++ % spec.students;
          const s = sectionRef(spec, (i * 7 + Math.floor(k / spec.students)) % spec.sections);
          const sentAt = performance.now();
          // Only a request that needs the killed engine's shards measures the gap.
          const affected = victimShards.has(shardOfCourse(s.courseId, shards)) && (shards === 1 || victimShards.has(homeShardOf(studentId(i), shards)));
          return {
            op: 'enroll',
            raw: enrollRequest(target, login.tokens[i] as string, s),
            onReply: (r) => {
              const decided = r.status < 500;
              // The first request sent after the kill that got a decided answer (forwarders retry meanwhile).
              if (affected && killedAt > 0 && firstAfter === 0 && decided && sentAt > killedAt) firstAfter = performance.now();
            },
          };
        };
        const killer = (async () => {
          await new Promise((r) => setTimeout(r, 2000));
          killedAt = performance.now();
          sys.engine?.proc.kill('SIGKILL');
        })();
        const f = await runTimed({ label: `${run} failover`, conns: survivors, durationMs: 10_000, next });
        await killer;
        const gapMs = firstAfter > 0 ? Math.round(firstAfter - killedAt) : NaN;
        figures.failover.push({ shards, gapMs, requests: f.requests, status5xx: f.status5xx, errors: f.errors });
        targets.push(check(`failover gap after kill -9 (${shards} shard(s), killed owned ${[...victimShards].join(',')})`, '<= 5000 ms', `${gapMs} ms`, Number.isFinite(gapMs) && gapMs <= 5000));
        // Writes in flight at the killed engine (sent to it directly, or over a kept-alive forward
        // it reset) are in doubt: 503 UNAVAILABLE by design (docs/scale-out.md, section 4). Any
        // other 5xx is a failure.
        const other5xx = Object.entries(f.errors).filter(([k]) => k.startsWith('5') && k !== '503 UNAVAILABLE');
        report.checks.push({
          name: `${run}: no 5xx from the survivors during the failover but 503 UNAVAILABLE (in doubt)`,
          ok: other5xx.length === 0,
          detail: `${f.status5xx} 5xx of ${f.requests}: ${JSON.stringify(f.errors)}`,
        });
        note(`[${run}] failover: first decided answer needing its shards ${gapMs} ms after kill -9 of the first engine (shards ${[...victimShards].join(',')}); ${fmt(f.requests)} requests, ${f.status5xx} 5xx`);
      }
    } finally {
      for (const c of all) closeAll(c);
      await sys.stop().catch((err: unknown) => note(`[${run}] teardown: ${(err as Error).message}`));
    }
  }
  const one = figures.variants.find((v) => v.instances === 1);
  for (const three of figures.variants.filter((v) => v.instances === 3)) {
    if (!one) break;
    const r = three.load.reqPerSec / one.load.reqPerSec;
    targets.push(check(`3 instances (${three.shards} shard(s)) / 1 instance, same rush (req/s)`, 'reported', r.toFixed(2), null));
    note(`cluster: 3 instances with ${three.shards} shard(s) / 1 instance throughput ratio ${r.toFixed(2)} (every process on the same machine)`);
  }
  report.variants.push({ variant: 'full, batcher separate', runs: [figures], median: figures, targets });
}
