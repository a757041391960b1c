import {
  check,
  cpuDelta,
  formatCpu,
  measureCeiling,
  stopAndReport,
  ratio,
  variantsOf,
  type BenchOptions,
  type CeilingFigures,
  type CeilingWork,
  type ScenarioReport,
} from '../lib/common.js';
import { closeAll, openConnections } from '../lib/http.js';
import type { LoadResult } from '../lib/load.js';
import type { MemoryReading } from '../lib/procs.js';
import { note } from '../lib/progress.js';
import { Ledger, type RowCounts, type SeedSpec } from '../lib/seed.js';
import { fmt, medianDeep } from '../lib/stats.js';
import { System, type CatchUp } from '../lib/system.js';
import { loginAll, runRushLoad } from '../lib/workloads.js';
import { cpuCheck, harnessChecks } from './seed.js';

/**
 * `rush`: registration opens and every student presses "enroll" at once. 10,000 students (all
 * logged in beforehand) each send one enroll, student i to section i mod 20; the 10,000 requests
 * are queued at once and taken by a bounded set of connections. With capacity 30 and reserve 10
 * per section the only correct outcome is 600 registered, 200 queued and 9,200 rejected as full,
 * and after catch-up exactly those 800 rows in the database: the harness asserts it.
 */

const CONNECTIONS = 256;

export interface RushFigures {
  students: number;
  sections: number;
  connections: number;
  startupMs: number;
  login: { wallMs: number; reqPerSec: number; errorCount: number };
  load: LoadResult;
  outcome: { registered: number; queued: number; rejectedFull: number; otherRejections: number; errors: number };
  database: RowCounts | null;
  catchUp: Omit<CatchUp, 'counts'>;
  memoryMb: { engineAfterLoad: MemoryReading | null; batcherAfterLoad: MemoryReading | null };
  cpuDuringLoad: ReturnType<typeof cpuDelta>;
  ceiling: CeilingFigures | null;
  ratioToCeiling: number | null;
}

export async function rushScenario(opts: BenchOptions, report: ScenarioReport<RushFigures>): Promise<void> {
  const spec: SeedSpec = {
    students: opts.students ?? 10_000,
    sections: opts.sections ?? 20,
    groupsPerCourse: 1,
    capacity: 30,
    reserveCapacity: 10,
    units: 3,
    maxUnits: 20,
    remainingActions: 10,
    enrollmentsPerStudent: 0,
  };
  // Each section gets students/sections requests; what each can hold is capacity + reserve.
  const perSection = (k: number) => Math.floor(spec.students / spec.sections) + (k < spec.students % spec.sections ? 1 : 0);
  let expRegistered = 0;
  let expQueued = 0;
  for (let k = 0; k < spec.sections; k++) {
    const n = perSection(k);
    expRegistered += Math.min(n, spec.capacity);
    expQueued += Math.min(Math.max(0, n - spec.capacity), spec.reserveCapacity);
  }
  const expFull = spec.students - expRegistered - expQueued;
  report.notes.push(
    `${fmt(spec.students)} students, one enroll each (student i -> section i mod ${spec.sections}), all queued at once on ${CONNECTIONS} ${opts.freshConnections ? 'clients, a new TCP connection per request (error bodies not read)' : 'keep-alive connections'}; ` +
      `${spec.sections} sections of capacity ${spec.capacity} + reserve ${spec.reserveCapacity}. ` +
      `Expected: ${fmt(expRegistered)} registered, ${fmt(expQueued)} queued, ${fmt(expFull)} rejected full (asserted).`,
  );
  for (const v of variantsOf(opts)) {
    const runs: RushFigures[] = [];
    for (let r = 1; r <= opts.runs; r++) {
      const run = `rush-${v.mode}${v.mode === 'full' ? `-${v.batcher}` : ''}-${opts.stamp}-run${r}`;
      const sys = new System({ mode: v.mode, batcher: v.batcher, spec, runner: opts.runner, cpuProfile: opts.cpuProf ? run : null, extraEnv: opts.extraEnv });
      note(`[${run}] starting: ${sys.label}`);
      await sys.start();
      let f: RushFigures;
      let ledger: Ledger;
      let window: { start: number; end: number } | null = null;
      let ceilingWork: CeilingWork | null = null;
      try {
        const target = { host: sys.host, port: sys.port };
        const conns = await openConnections(target.host, target.port, Math.min(CONNECTIONS, spec.students));
        try {
          const login = await loginAll({ label: `${run} login`, target, conns, students: spec.students, owner: (i) => i % conns.length });
          ledger = new Ledger((await sys.counts()) ?? { rows: 0, checksum: '0' });
          const cpu0 = sys.cpuSeconds();
          const gen0 = process.cpuUsage();
          const start = performance.now();
          const { lastReplyAt, ...load } = await runRushLoad({ label: `${run} rush`, target, conns, tokens: login.tokens, spec, ledger, fresh: opts.freshConnections });
          window = { start, end: lastReplyAt };
          const cpu = cpuDelta(cpu0, sys.cpuSeconds(), process.cpuUsage(gen0), load.requests);
          const { counts, ...catchUp } = await sys.catchUp(ledger, lastReplyAt);
          const mem = sys.memory();
          const full = load.rejections.SECTION_FULL ?? 0;
          const otherRejections = Object.entries(load.rejections).filter(([k]) => k !== 'SECTION_FULL').reduce((a, [, n]) => a + n, 0);
          f = {
            students: spec.students,
            sections: spec.sections,
            connections: conns.length,
            startupMs: Math.round(sys.startupMs),
            login: { wallMs: login.result.wallMs, reqPerSec: login.result.reqPerSec, errorCount: login.result.errorCount },
            load,
            outcome: { registered: counts?.registered ?? NaN, queued: counts?.queued ?? NaN, rejectedFull: full, otherRejections, errors: load.errorCount },
            database: counts,
            catchUp,
            memoryMb: { engineAfterLoad: mem.engine, batcherAfterLoad: mem.batcher },
            cpuDuringLoad: cpu,
            ceiling: null,
            ratioToCeiling: null,
          };
          const tokens = login.tokens;
          ceilingWork = (t, cs) => runRushLoad({ label: `${run} ceiling`, target: t, conns: cs, tokens, spec, ledger: null, fresh: opts.freshConnections });
        } finally {
          closeAll(conns);
        }
      } finally {
        await stopAndReport(sys, run, opts, report, window);
      }
      if (opts.ceiling && ceilingWork) {
        f.ceiling = await measureCeiling(opts.runner, f.connections, ceilingWork);
        f.ratioToCeiling = ratio(f.load.reqPerSec, f.ceiling.reqPerSec);
      }
      if (sys.finalCounts) {
        f.database = sys.finalCounts;
        f.outcome.registered = sys.finalCounts.registered;
        f.outcome.queued = sys.finalCounts.queued;
      }
      const db = f.database;
      const eq = (name: string, got: number, want: number) =>
        report.checks.push({ name: `${run}: ${name}`, ok: got === want, detail: `${fmt(got)} (expected ${fmt(want)})` });
      eq('204 replies (registered + queued)', f.load.ok, expRegistered + expQueued);
      eq('rejected as SECTION_FULL', f.outcome.rejectedFull, expFull);
      eq('other rejections and errors', f.outcome.otherRejections + f.outcome.errors, 0);
      eq('database rows after catch-up', db?.rows ?? NaN, expRegistered + expQueued);
      eq('database registered rows', db?.registered ?? NaN, expRegistered);
      eq('database queued (reserved) rows', db?.queued ?? NaN, expQueued);
      report.checks.push({ name: `${run}: database rows are the acknowledged ones`, ok: db !== null && ledger.matches(db), detail: `checksum ${db?.checksum}` });
      report.checks.push(...harnessChecks(run, f.load));
      runs.push(f);
      printRush(run, f, { expRegistered, expQueued, expFull });
    }
    const m = medianDeep(runs);
    report.variants.push({
      variant: v.name,
      runs,
      median: m,
      targets: [
        check('rush outcome', `${expRegistered} / ${expQueued} / ${expFull}`, `${m.outcome.registered} / ${m.outcome.queued} / ${m.outcome.rejectedFull}`,
          m.outcome.registered === expRegistered && m.outcome.queued === expQueued && m.outcome.rejectedFull === expFull),
        check('rush throughput (no target)', '-', `${fmt(m.load.reqPerSec)} req/s, ${fmt(m.load.wallMs)} ms`, null),
        check('database caught up after the last reply (no target)', '-',
          m.catchUp.byConstruction ? '0 ms (embedded, by construction)' : `${fmt(m.catchUp.ms)} ms`, null),
        cpuCheck(m.cpuDuringLoad, m.ceiling),
      ],
    });
  }
}

function printRush(run: string, f: RushFigures, exp: { expRegistered: number; expQueued: number; expFull: number }): void {
  const l = f.load.latencyMs;
  note(
    [
      `[${run}] ${fmt(f.load.requests)} enrolls on ${f.connections} connections in ${fmt(f.load.wallMs, 1)} ms = ${fmt(f.load.reqPerSec)} req/s` +
        (f.ceiling ? ` (ceiling ${fmt(f.ceiling.reqPerSec)} req/s, ratio ${f.ratioToCeiling})` : ''),
      `  outcome: registered ${f.outcome.registered} (expected ${exp.expRegistered}), queued ${f.outcome.queued} (expected ${exp.expQueued}), ` +
        `rejected full ${f.outcome.rejectedFull} (expected ${exp.expFull}), other rejections ${f.outcome.otherRejections}, errors ${f.outcome.errors}`,
      `  database: ${f.database ? `${f.database.rows} rows (${f.database.registered} registered, ${f.database.queued} reserved)` : '?'}; ` +
        (f.catchUp.byConstruction ? 'caught up by construction (embedded)' : f.catchUp.caughtUp ? `caught up ${fmt(f.catchUp.ms, 1)} ms after the last reply` : 'NOT caught up'),
      `  latency ms: p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}; login of ${fmt(f.students)} took ${fmt(f.login.wallMs)} ms`,
      formatCpu(f.cpuDuringLoad, f.ceiling),
    ].join('\n'),
  );
}
