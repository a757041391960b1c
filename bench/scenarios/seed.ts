import {
  check,
  cpuDelta,
  formatCpu,
  measureCeiling,
  measureFloor,
  stopAndReport,
  ratio,
  variantsOf,
  type BenchOptions,
  type CeilingFigures,
  type FloorFigures,
  type FloorWork,
  type HarnessCheck,
  type ScenarioReport,
  type TargetCheck,
  type VariantReport,
} from '../lib/common.js';
import { closeAll, openConnections } from '../lib/http.js';
import type { LoadResult } from '../lib/load.js';
import { note } from '../lib/progress.js';
import { Ledger, WINDOW_MINUTES, type RowCounts, type SeedSpec } from '../lib/seed.js';
import { fmt, medianDeep } from '../lib/stats.js';
import { System, type BatcherPlacement, type CatchUp, type Mode } from '../lib/system.js';
import { loginAll, runSeedLoad, seedPlan } from '../lib/workloads.js';
import type { MemoryReading } from '../lib/procs.js';
import type { StormResult } from '../lib/storm.js';

/**
 * `seed`: the Go service's workload. Sections and students are inserted straight into the
 * database; every student logs in on their own keep-alive connection; once every login is done
 * (the barrier) all students are released at once, each sending `perStudent` enrolls for
 * uniformly random sections one after another. Reported: wall time and req/s of the enrolls,
 * rejections by reason, errors, latency percentiles, and how long after the last reply PostgreSQL
 * holds every acknowledged change.
 */

export const PER_STUDENT = 7;

export function seedSpec(opts: Pick<BenchOptions, 'students' | 'sections'>, defaults = { students: 1000, sections: 1500 }): SeedSpec {
  return {
    students: opts.students ?? defaults.students,
    sections: opts.sections ?? defaults.sections,
    groupsPerCourse: 3,
    capacity: 30,
    reserveCapacity: 10,
    units: 2,
    maxUnits: 20,
    remainingActions: 32_000, // SMALLINT, as in the Go schema
    enrollmentsPerStudent: 0,
  };
}

export interface SeedFigures {
  students: number;
  sections: number;
  requests: number;
  startupMs: number;
  seedDbMs: number;
  login: { wallMs: number; reqPerSec: number; latencyMs: LoadResult['latencyMs']; errorCount: number };
  load: LoadResult;
  /** Rows in enrolled_courses once caught up (full) or after the engine stopped (embedded). */
  outcome: RowCounts | null;
  catchUp: Omit<CatchUp, 'counts'>;
  memoryMb: { engineAfterStart: MemoryReading | null; engineAfterLoad: MemoryReading | null; batcherAfterLoad: MemoryReading | null };
  cpuDuringLoad: ReturnType<typeof cpuDelta>;
  ceiling: CeilingFigures | null;
  ratioToCeiling: number | null;
  /** `--floor` (full mode): the floor under the same load, after the ceiling. */
  floor: FloorFigures | null;
  /** The floor's req/s over the bare server's: the most the contract leaves any server on this machine. */
  floorRatioToCeiling: number | null;
  /** The engine's req/s over the floor's. */
  ratioToFloor: number | null;
}

export async function seedOnce(opts: BenchOptions, v: { mode: Mode; batcher: BatcherPlacement }, spec: SeedSpec, run: string, report: ScenarioReport) {
  const sys = new System({
    mode: v.mode,
    batcher: v.batcher,
    spec,
    runner: opts.runner,
    cpuProfile: opts.cpuProf ? run : null,
    extraEnv: opts.extraEnv,
  });
  note(`[${run}] starting: ${sys.label}, ${fmt(spec.students)} students, ${fmt(spec.sections)} sections`);
  await sys.start();
  let window: { start: number; end: number } | null = null;
  let figures: SeedFigures;
  let work: FloorWork | null = null;
  let ledger: Ledger;
  try {
    const engineAfterStart = sys.memory().engine;
    const target = { host: sys.host, port: sys.port };
    const conns = await openConnections(target.host, target.port, spec.students);
    try {
      const login = await loginAll({ label: `${run} login`, target, conns, students: spec.students, owner: (i) => i });
      ledger = new Ledger((await sys.counts()) ?? { rows: 0, checksum: '0' });
      const plan = seedPlan(spec, PER_STUDENT, opts.seed);
      const cpu0 = sys.cpuSeconds();
      const gen0 = process.cpuUsage();
      const start = performance.now();
      const { lastReplyAt, ...load } = await runSeedLoad({ label: `${run} enroll`, target, conns, tokens: login.tokens, plan, ledger, fresh: opts.freshConnections });
      window = { start, end: lastReplyAt };
      const cpu = cpuDelta(cpu0, sys.cpuSeconds(), process.cpuUsage(gen0), load.requests);
      const { counts, ...catchUp } = await sys.catchUp(ledger, lastReplyAt);
      const mem = sys.memory();
      figures = {
        students: spec.students,
        sections: spec.sections,
        requests: load.requests,
        startupMs: Math.round(sys.startupMs),
        seedDbMs: sys.seed?.ms ?? 0,
        login: { wallMs: login.result.wallMs, reqPerSec: login.result.reqPerSec, latencyMs: login.result.latencyMs, errorCount: login.result.errorCount },
        load,
        outcome: counts,
        catchUp,
        memoryMb: { engineAfterStart, engineAfterLoad: mem.engine, batcherAfterLoad: mem.batcher },
        cpuDuringLoad: cpu,
        ceiling: null,
        ratioToCeiling: null,
        floor: null,
        floorRatioToCeiling: null,
        ratioToFloor: null,
      };
      const tokens = login.tokens;
      work = (t, cs, acknowledged) => runSeedLoad({ label: `${run} ${acknowledged ? 'floor' : 'ceiling'}`, target: t, conns: cs, tokens, plan, ledger: acknowledged, fresh: opts.freshConnections });
    } finally {
      closeAll(conns);
    }
  } finally {
    await stopAndReport(sys, run, opts, report, window);
  }
  // The ceiling runs once the engine has exited, so the two never share the machine.
  if (opts.ceiling && work) {
    const w = work;
    figures.ceiling = await measureCeiling(opts.runner, spec.students, (t, cs) => w(t, cs, null));
    figures.ratioToCeiling = ratio(figures.load.reqPerSec, figures.ceiling.reqPerSec);
  }
  if (opts.floor && v.mode === 'full' && work) {
    figures.floor = await measureFloor(sys.jwtSecret, spec.students, work);
    figures.ratioToFloor = ratio(figures.load.reqPerSec, figures.floor.reqPerSec);
    if (figures.ceiling) figures.floorRatioToCeiling = ratio(figures.floor.reqPerSec, figures.ceiling.reqPerSec);
    report.checks.push({ name: `${run}: floor wrote every acknowledged change`, ok: figures.floor.wrote.ok, detail: figures.floor.wrote.detail });
  }
  if (sys.finalCounts) {
    figures.outcome = sys.finalCounts;
    const ok = ledger.matches(sys.finalCounts);
    report.checks.push({
      name: `${run}: embedded database holds every acknowledged change`,
      ok,
      detail: `${sys.finalCounts.rows} rows, ${ledger.rows} acknowledged`,
    });
  }
  return figures;
}

export function seedTargets(m: SeedFigures, mode: Mode): TargetCheck[] {
  // The targets are for the Go workload's size (7,000 enrolls); at other sizes they are shown, not judged.
  const full = m.requests === 7000;
  const t = [
    check(`${fmt(m.requests)} enrolls wall time`, '< 850 ms (for 7,000)', `${fmt(m.load.wallMs)} ms`, full ? m.load.wallMs < 850 : null),
    check('enroll throughput', '> 8,000 req/s', `${fmt(m.load.reqPerSec)} req/s`, full ? m.load.reqPerSec > 8000 : null),
  ];
  t.push(cpuCheck(m.cpuDuringLoad, m.ceiling));
  t.push(
    mode === 'embedded'
      ? check('database caught up after the last reply', '< 1,000 ms', '0 ms (by construction: replies wait for the commit)', true)
      : check('database caught up after the last reply', '< 1,000 ms', m.catchUp.caughtUp ? `${fmt(m.catchUp.ms)} ms` : 'not caught up', m.catchUp.caughtUp && m.catchUp.ms < 1000),
  );
  return t;
}

/** The engine's CPU time per request beside the bare server's (no target; robust on a busy machine). */
export function cpuCheck(cpu: ReturnType<typeof cpuDelta>, ceiling: CeilingFigures | null): TargetCheck {
  const engine = `${fmt(cpu.engineCpuUsPerRequest)} µs` + (cpu.batcherCpuUsPerRequest !== null ? ` (+ batcher ${fmt(cpu.batcherCpuUsPerRequest)} µs)` : '');
  const bare = ceiling ? `; bare Fastify ${fmt(ceiling.cpuUsPerRequest)} µs` : '';
  return check('CPU time per request (no target)', '-', engine + bare, null);
}

export function harnessChecks(name: string, load: LoadResult): HarnessCheck[] {
  return [
    { name: `${name}: no 5xx replies`, ok: load.status5xx === 0, detail: `${load.status5xx} replies with status >= 500` },
    {
      name: `${name}: no network errors`,
      ok: !Object.keys(load.errors).some((k) => k.startsWith('network')),
      detail: JSON.stringify(Object.fromEntries(Object.entries(load.errors).filter(([k]) => k.startsWith('network')))),
    },
  ];
}

export async function seedScenario(opts: BenchOptions, report: ScenarioReport<SeedFigures>, spec = seedSpec(opts)): Promise<void> {
  report.notes.push(
    `${fmt(spec.sections)} sections (${spec.sections / spec.groupsPerCourse} courses x ${spec.groupsPerCourse} groups, capacity ${spec.capacity}, reserve ${spec.reserveCapacity}, ${spec.units} units, no exam or class times), ` +
      `${fmt(spec.students)} students (max ${spec.maxUnits} units, window open for ${WINDOW_MINUTES} min), ${PER_STUDENT} enrolls each, ` +
      (opts.freshConnections
        ? `a new TCP connection per enroll (Connection: close, error bodies not read), released together after every login.`
        : `one keep-alive connection per student, released together after every login.`),
  );
  for (const v of variantsOf(opts)) {
    const runs: SeedFigures[] = [];
    for (let r = 1; r <= opts.runs; r++) {
      const run = `seed-${v.mode}${v.mode === 'full' ? `-${v.batcher}` : ''}-${opts.stamp}-run${r}`;
      const f = await seedOnce(opts, v, spec, run, report);
      runs.push(f);
      report.checks.push(...harnessChecks(run, f.load));
      report.checks.push({ name: `${run}: every login succeeded`, ok: f.login.errorCount === 0, detail: `${f.login.errorCount} failed logins` });
      if (v.mode === 'full') report.checks.push({ name: `${run}: database caught up`, ok: f.catchUp.caughtUp, detail: `${f.catchUp.ms} ms` });
      printSeedRun(run, f);
    }
    const median = medianDeep(runs);
    const variant: VariantReport<SeedFigures> = { variant: v.name, runs, median, targets: seedTargets(median, v.mode) };
    report.variants.push(variant);
  }
}

export function printSeedRun(run: string, f: SeedFigures): void {
  const l = f.load.latencyMs;
  const rej = Object.entries(f.load.rejections).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const err = Object.entries(f.load.errors).map(([k, n]) => `${k} x${n}`).join(', ') || 'none';
  note(
    [
      `[${run}] ${fmt(f.requests)} enrolls in ${fmt(f.load.wallMs, 1)} ms = ${fmt(f.load.reqPerSec)} req/s` +
        (f.ceiling ? ` (ceiling ${fmt(f.ceiling.reqPerSec)} req/s, ratio ${f.ratioToCeiling})` : ''),
      ...(f.floor ? [`  floor ${fmt(f.floor.reqPerSec)} req/s (${fmt(f.floor.cpuUsPerRequest)} µs CPU per request; floor / ceiling ${f.floorRatioToCeiling ?? '-'}, engine / floor ${f.ratioToFloor})`] : []),
      `  latency ms: p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max};  2xx ${f.load.ok}; rejections: ${rej}; errors: ${err}`,
      `  database: ${f.catchUp.byConstruction ? 'caught up by construction (embedded)' : f.catchUp.caughtUp ? `caught up ${fmt(f.catchUp.ms, 1)} ms after the last reply` : 'NOT caught up'}` +
        (f.outcome ? `; ${f.outcome.registered} registered + ${f.outcome.queued} queued rows` : ''),
      `  startup ${fmt(f.startupMs)} ms; login ${fmt(f.login.wallMs)} ms (${fmt(f.login.reqPerSec)}/s); engine RSS ${f.memoryMb.engineAfterStart?.rssMb} MB after start, ${f.memoryMb.engineAfterLoad?.rssMb} MB after load` +
        (f.memoryMb.batcherAfterLoad ? `, batcher ${f.memoryMb.batcherAfterLoad.rssMb} MB` : ''),
      ...('kernel' in f.load ? [`  fresh connections: > 1 s ${fmt((f.load as StormResult).slowerThan1s)}; kernel ${JSON.stringify((f.load as StormResult).kernel)}`] : []),
      formatCpu(f.cpuDuringLoad, f.ceiling),
    ].join('\n'),
  );
}
