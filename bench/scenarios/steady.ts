import {
  check,
  cpuDelta,
  formatCpu,
  measureCeiling,
  measureFloor,
  profileSummaries,
  stopAndReport,
  ratio,
  variantsOf,
  type BenchOptions,
  type CeilingFigures,
  type FloorFigures,
  type FloorWork,
  type ScenarioReport,
} from '../lib/common.js';
import { openEventStreams } from '../lib/event-streams.js';
import { closeAll, openConnections } from '../lib/http.js';
import type { LoadResult } from '../lib/load.js';
import type { MemoryReading } from '../lib/procs.js';
import { note } from '../lib/progress.js';
import { Ledger, type SeedSpec } from '../lib/seed.js';
import { fmt, medianDeep, round } from '../lib/stats.js';
import { STEADY_ENV, System, type CatchUp } from '../lib/system.js';
import { loginAll, SteadyDriver, type SteadyMix } from '../lib/workloads.js';
import { cpuCheck, harnessChecks, seedSpec } from './seed.js';

/**
 * `steady`: mixed enroll / drop / list for a fixed time at a fixed number of connections (64 by
 * default) after a short warm-up. Students are inside their window with plenty of remaining
 * actions; each connection serves its own students, so the client knows every holding and the
 * database can be checked exactly once caught up.
 */

export const MIX: SteadyMix = { enroll: 40, drop: 40, list: 20 };
const MAX_HELD = 8;

export interface SteadyFigures {
  connections: number;
  durationS: number;
  students: number;
  sections: number;
  startupMs: number;
  load: LoadResult;
  /** enroll + drop replies per second. */
  writesPerSec: number;
  catchUp: Omit<CatchUp, 'counts'>;
  memoryMb: { engineAfterLoad: MemoryReading | null; batcherAfterLoad: MemoryReading | null };
  cpuDuringLoad: ReturnType<typeof cpuDelta>;
  ceiling: CeilingFigures | null;
  ratioToCeiling: number | null;
  /** `--floor` (full mode): the floor under the same load, after the ceiling. */
  floor: FloorFigures | null;
  /** The floor's req/s over the bare server's. */
  floorRatioToCeiling: number | null;
  /** The engine's req/s over the floor's. */
  ratioToFloor: number | null;
}

export async function steadyOnce(
  opts: BenchOptions,
  v: ReturnType<typeof variantsOf>[number],
  spec: SeedSpec,
  run: string,
  report: ScenarioReport<unknown>,
): Promise<SteadyFigures> {
  const sys = new System({ mode: v.mode, batcher: v.batcher, spec, runner: opts.runner, cpuProfile: opts.cpuProf ? run : null, extraEnv: { ...STEADY_ENV, ...opts.extraEnv } });
  note(`[${run}] starting: ${sys.label}, ${opts.connections} connections, ${opts.durationS} s (+${opts.warmupS} s warm-up)`);
  await sys.start();
  let f: SteadyFigures;
  let ledger: Ledger;
  let window: { start: number; end: number } | null = null;
  let work: FloorWork | null = null;
  try {
    const target = { host: sys.host, port: sys.port };
    const conns = await openConnections(target.host, target.port, opts.connections);
    try {
      const login = await loginAll({ label: `${run} login`, target, conns, students: spec.students, owner: (i) => i % conns.length });
      ledger = new Ledger((await sys.counts()) ?? { rows: 0, checksum: '0' });
      const driver = new SteadyDriver({ target, conns, tokens: login.tokens, spec, mix: MIX, seed: opts.seed, maxHeld: MAX_HELD, ledger });
      if (opts.warmupS > 0) await driver.run(`${run} warm-up`, opts.warmupS * 1000);
      const cpu0 = sys.cpuSeconds();
      const gen0 = process.cpuUsage();
      const start = performance.now();
      const { lastReplyAt, ...load } = await driver.run(`${run} steady`, opts.durationS * 1000);
      window = { start, end: lastReplyAt };
      const cpu = cpuDelta(cpu0, sys.cpuSeconds(), process.cpuUsage(gen0), load.requests);
      const { counts: _c, ...catchUp } = await sys.catchUp(ledger, lastReplyAt);
      const mem = sys.memory();
      const writes = (load.perOp.enroll?.count ?? 0) + (load.perOp.drop?.count ?? 0);
      f = {
        connections: conns.length,
        durationS: opts.durationS,
        students: spec.students,
        sections: spec.sections,
        startupMs: Math.round(sys.startupMs),
        load,
        writesPerSec: load.wallMs > 0 ? round((writes * 1000) / load.wallMs, 0) : 0,
        catchUp,
        memoryMb: { engineAfterLoad: mem.engine, batcherAfterLoad: mem.batcher },
        cpuDuringLoad: cpu,
        ceiling: null,
        ratioToCeiling: null,
        floor: null,
        floorRatioToCeiling: null,
        ratioToFloor: null,
      };
      const tokens = login.tokens;
      work = async (t, cs, acknowledged) => {
        const who = acknowledged ? 'floor' : 'ceiling';
        const d = new SteadyDriver({ target: t, conns: cs, tokens, spec, mix: MIX, seed: opts.seed, maxHeld: MAX_HELD, ledger: acknowledged });
        if (opts.warmupS > 0) await d.run(`${run} ${who} warm-up`, opts.warmupS * 1000);
        return d.run(`${run} ${who}`, opts.durationS * 1000);
      };
    } finally {
      closeAll(conns);
    }
  } finally {
    await stopAndReport(sys, run, opts, report, window);
  }
  // The ceiling runs once the engine has exited, so the two never share the machine.
  if (opts.ceiling && work) {
    const w = work;
    f.ceiling = await measureCeiling(opts.runner, f.connections, (t, cs) => w(t, cs, null));
    f.ratioToCeiling = ratio(f.load.reqPerSec, f.ceiling.reqPerSec);
  }
  if (opts.floor && v.mode === 'full' && work) {
    f.floor = await measureFloor(sys.jwtSecret, f.connections, work);
    f.ratioToFloor = ratio(f.load.reqPerSec, f.floor.reqPerSec);
    if (f.ceiling) f.floorRatioToCeiling = ratio(f.floor.reqPerSec, f.ceiling.reqPerSec);
    report.checks.push({ name: `${run}: floor wrote every acknowledged change`, ok: f.floor.wrote.ok, detail: f.floor.wrote.detail });
  }
  if (sys.finalCounts) {
    report.checks.push({
      name: `${run}: embedded database holds every acknowledged change`,
      ok: ledger.matches(sys.finalCounts),
      detail: `${sys.finalCounts.rows} rows, ${ledger.rows} acknowledged`,
    });
  }
  if (v.mode === 'full') report.checks.push({ name: `${run}: database caught up`, ok: f.catchUp.caughtUp, detail: `${f.catchUp.ms} ms` });
  report.checks.push(...harnessChecks(run, f.load));
  printSteady(run, f);
  return f;
}

export function steadyTargets(m: SteadyFigures) {
  return [
    check('throughput vs bare Fastify', '>= 50% of the ceiling', m.ratioToCeiling !== null ? `${fmt(m.ratioToCeiling * 100, 1)}% (${fmt(m.load.reqPerSec)} vs ${fmt(m.ceiling?.reqPerSec ?? 0)} req/s)` : 'ceiling not measured', m.ratioToCeiling !== null ? m.ratioToCeiling >= 0.5 : null),
    check(`p99 latency at ${m.connections} connections`, '< 20 ms', `${m.load.latencyMs.p99} ms`, m.load.latencyMs.p99 < 20),
    check('enroll + drop replies (no target)', '-', `${fmt(m.writesPerSec)} req/s`, null),
    check('database caught up after the last reply (no target)', '-', m.catchUp.byConstruction ? '0 ms (embedded, by construction)' : `${fmt(m.catchUp.ms)} ms`, null),
    cpuCheck(m.cpuDuringLoad, m.ceiling),
  ];
}

export async function steadyScenario(opts: BenchOptions, report: ScenarioReport<SteadyFigures>): Promise<void> {
  const spec = seedSpec(opts);
  spec.students = Math.max(spec.students, opts.connections);
  report.notes.push(
    `${fmt(spec.sections)} sections, ${fmt(spec.students)} students (connection c serves students c, c+${opts.connections}, ...), ` +
      `mix enroll ${MIX.enroll} / drop ${MIX.drop} / list own sections ${MIX.list}, at most ${MAX_HELD} sections held; ` +
      `${opts.connections} connections, ${opts.warmupS} s warm-up, ${opts.durationS} s measured.`,
  );
  for (const v of variantsOf(opts)) {
    const runs: SteadyFigures[] = [];
    for (let r = 1; r <= opts.runs; r++) {
      const run = `steady-${v.mode}${v.mode === 'full' ? `-${v.batcher}` : ''}-${opts.stamp}-run${r}`;
      runs.push(await steadyOnce(opts, v, spec, run, report as ScenarioReport<unknown>));
    }
    const m = medianDeep(runs);
    report.variants.push({ variant: v.name, runs, median: m, targets: steadyTargets(m) });
    const n = opts.eventStreams ?? 0;
    if (n > 0) {
      const run = `steady-${v.mode}${v.mode === 'full' ? `-${v.batcher}` : ''}-streams${n}-${opts.stamp}`;
      const ab = await steadyStreamsAB(opts, v, spec, run, n);
      const off = ab.filter((p) => !p.streams);
      const on = ab.filter((p) => p.streams);
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] as number;
      const eOff = med(off.map((p) => p.enrollPerSec));
      const eOn = med(on.map((p) => p.enrollPerSec));
      const aOff = med(off.map((p) => p.reqPerSec));
      const aOn = med(on.map((p) => p.reqPerSec));
      const cOff = med(off.map((p) => p.engineUsPerRequest));
      const cOn = med(on.map((p) => p.engineUsPerRequest));
      // Throughput drifts over a run (holdings grow, the machine's other load moves): each "with"
      // phase is compared with the mean of the "without" phases just before and after it.
      const bracketed = (f: (p: StreamPhase) => number) =>
        med(ab.flatMap((p, i) => (p.streams && ab[i - 1] && ab[i + 1] ? [f(p) / ((f(ab[i - 1] as StreamPhase) + f(ab[i + 1] as StreamPhase)) / 2)] : [])));
      const rEnroll = bracketed((p) => p.enrollPerSec);
      const rAll = bracketed((p) => p.reqPerSec);
      const rCpu = bracketed((p) => p.engineUsPerRequest);
      (report as ScenarioReport<unknown>).variants.push({
        variant: `${v.name}: alternating phases without / with ${n} event streams, one engine`,
        runs: ab,
        median: { enrollOff: eOff, enrollOn: eOn, reqOff: aOff, reqOn: aOn, cpuOff: cOff, cpuOn: cOn },
        targets: [
          check(
            `enroll throughput with ${n} open event streams vs without (each "with" phase / mean of its neighbours, median)`,
            '>= 90%',
            `${fmt(rEnroll * 100, 1)}% (medians: ${fmt(eOn)} vs ${fmt(eOff)} enroll/s over ${on.length} and ${off.length} phases)`,
            rEnroll >= 0.9,
          ),
          check('all requests with streams vs without, bracketed (no target)', '-', `${fmt(rAll * 100, 1)}% (medians: ${fmt(aOn)} vs ${fmt(aOff)} req/s)`, null),
          check('engine CPU per request with streams vs without, bracketed (no target)', '-', `${fmt(rCpu * 100, 1)}% (medians: ${fmt(cOn, 0)} / ${fmt(cOff, 0)} µs)`, null),
          check('streams open / failed / notices received (no target)', '-', on.map((p) => `${p.open}/${p.failed}/${p.notices}`).join(', '), null),
        ],
      });
    }
  }
}

interface StreamPhase {
  phase: number;
  streams: boolean;
  reqPerSec: number;
  enrollPerSec: number;
  p99Ms: number;
  engineUsPerRequest: number;
  open: number;
  failed: number;
  notices: number;
}

/**
 * Issue 16's figure: steady load in alternating phases on one engine, without and with `n` student
 * event streams open (opened before, closed after each "with" phase), so both sides share the
 * engine, its data and, as far as possible, the machine's other load at the time.
 */
async function steadyStreamsAB(opts: BenchOptions, v: ReturnType<typeof variantsOf>[number], spec: SeedSpec, run: string, n: number): Promise<StreamPhase[]> {
  const sys = new System({ mode: v.mode, batcher: v.batcher, spec, runner: opts.runner, cpuProfile: opts.cpuProf ? run : null, extraEnv: { ...STEADY_ENV, ...opts.extraEnv } });
  note(`[${run}] starting: ${sys.label}, ${opts.connections} connections, phases of ${opts.durationS} s without / with ${n} event streams`);
  /** With --cpu-prof: the first "with" and the last "without" phase, for a profile of each. */
  let withWindow: { start: number; end: number } | null = null;
  let withoutWindow: { start: number; end: number } | null = null;
  await sys.start();
  const phases: StreamPhase[] = [];
  try {
    const target = { host: sys.host, port: sys.port };
    const conns = await openConnections(target.host, target.port, opts.connections);
    try {
      const login = await loginAll({ label: `${run} login`, target, conns, students: spec.students, owner: (i) => i % conns.length });
      if (n > login.tokens.length * 4) throw new Error(`--event-streams ${n}: at most 4 per student (${login.tokens.length} students)`);
      const driver = new SteadyDriver({ target, conns, tokens: login.tokens, spec, mix: MIX, seed: opts.seed, maxHeld: MAX_HELD, ledger: null });
      if (opts.warmupS > 0) await driver.run(`${run} warm-up`, opts.warmupS * 1000);
      const pairs = Math.max(2, opts.runs);
      // without, with, without, ..., without: every "with" phase has a "without" on each side.
      for (let k = 0; k < pairs * 2 + 1; k++) {
        const withStreams = k % 2 === 1;
        const held = withStreams ? await openEventStreams(target, login.tokens, n) : null;
        const cpu0 = sys.cpuSeconds();
        const phaseStart = performance.now();
        const { lastReplyAt, ...load } = await driver.run(`${run} phase ${k + 1} ${withStreams ? 'with' : 'without'} streams`, opts.durationS * 1000);
        const cpu1 = sys.cpuSeconds();
        if (withStreams) withWindow ??= { start: phaseStart, end: lastReplyAt };
        else withoutWindow = { start: phaseStart, end: lastReplyAt };
        phases.push({
          phase: k + 1,
          streams: withStreams,
          reqPerSec: load.reqPerSec,
          enrollPerSec: load.perOp.enroll?.reqPerSec ?? 0,
          p99Ms: load.latencyMs.p99,
          engineUsPerRequest: load.requests > 0 ? round(((cpu1.engine - cpu0.engine) * 1e6) / load.requests, 0) : 0,
          open: held?.open ?? 0,
          failed: held?.failed ?? 0,
          notices: held?.notices ?? 0,
        });
        held?.close();
        const p = phases.at(-1) as StreamPhase;
        note(
          `[${run}] phase ${p.phase} ${withStreams ? `with ${p.open} streams (${p.failed} failed, ${p.notices} notices)` : 'without streams'}: ` +
            `${fmt(p.reqPerSec)} req/s, enroll ${fmt(p.enrollPerSec)}/s, p99 ${p.p99Ms} ms, engine ${p.engineUsPerRequest} µs/request`,
        );
        // Let the closed streams' sockets go before the next phase.
        if (withStreams) await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      closeAll(conns);
    }
  } finally {
    const profiles = await sys.stop();
    if (opts.cpuProf) {
      profileSummaries(`${run}, first phase with streams`, profiles, withWindow);
      profileSummaries(`${run}, last phase without streams`, profiles, withoutWindow);
    }
  }
  return phases;
}

export function printSteady(run: string, f: SteadyFigures): void {
  const l = f.load.latencyMs;
  const ops = Object.entries(f.load.perOp)
    .map(([op, o]) => `${op} ${fmt(o.reqPerSec)}/s p50 ${o.latencyMs.p50} p99 ${o.latencyMs.p99} ms`)
    .join('; ');
  const rej = Object.entries(f.load.rejections).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const err = Object.entries(f.load.errors).map(([k, n]) => `${k} x${n}`).join(', ') || 'none';
  note(
    [
      `[${run}] ${fmt(f.load.requests)} requests in ${fmt(f.load.wallMs)} ms = ${fmt(f.load.reqPerSec)} req/s at ${f.connections} connections` +
        (f.ceiling ? ` (ceiling ${fmt(f.ceiling.reqPerSec)} req/s, ratio ${f.ratioToCeiling})` : ''),
      `  latency ms: p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}; ${ops}`,
      ...(f.floor
        ? [
            `  floor ${fmt(f.floor.reqPerSec)} req/s, enroll + drop ${fmt((f.floor.perOpReqPerSec.enroll ?? 0) + (f.floor.perOpReqPerSec.drop ?? 0))}/s` +
              (f.ceiling ? ` (${fmt(((f.floor.perOpReqPerSec.enroll ?? 0) + (f.floor.perOpReqPerSec.drop ?? 0)) / f.ceiling.reqPerSec, 3)} of the ceiling)` : '') +
              `, p99 ${f.floor.latencyMs.p99} ms, ${fmt(f.floor.cpuUsPerRequest)} µs CPU per request; floor / ceiling ${f.floorRatioToCeiling ?? '-'}, engine / floor ${f.ratioToFloor}`,
          ]
        : []),
      `  rejections: ${rej}; errors: ${err}; database: ` +
        (f.catchUp.byConstruction ? 'caught up by construction (embedded)' : f.catchUp.caughtUp ? `caught up ${fmt(f.catchUp.ms, 1)} ms after the last reply` : 'NOT caught up'),
      `  engine RSS ${f.memoryMb.engineAfterLoad?.rssMb} MB` + (f.memoryMb.batcherAfterLoad ? `, batcher ${f.memoryMb.batcherAfterLoad.rssMb} MB` : ''),
      formatCpu(f.cpuDuringLoad, f.ceiling),
    ].join('\n'),
  );
}
