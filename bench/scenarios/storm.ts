import {
  check,
  cpuDelta,
  formatCpu,
  stopAndReport,
  ratio,
  variantsOf,
  type BenchOptions,
  type ScenarioReport,
  type TargetCheck,
  type VariantReport,
} from '../lib/common.js';
import type { Job } from '../lib/load.js';
import { readCpuSeconds, readMachineCpu, readThreadTimes, threadTimesDelta, type CompileFigures, type MemoryReading, type ThreadTimes } from '../lib/procs.js';
import { note } from '../lib/progress.js';
import { BENCH_PASSWORD, Ledger, studentId, WINDOW_MINUTES, type RowCounts, type SectionRef, type SeedSpec } from '../lib/seed.js';
import { fmt, medianDeep, round } from '../lib/stats.js';
import { connectionLimits, runStorm, type StormResult } from '../lib/storm.js';
import { startCeiling, startFloor, System, type CatchUp } from '../lib/system.js';
import { enrollRequest, seedPlan, type Target } from '../lib/workloads.js';
import { buildRequest } from '../lib/http.js';
import { harnessChecks, PER_STUDENT, seedSpec } from './seed.js';

/**
 * `storm`: the seed workload the way the Go service's own benchmark client sends it. Every request
 * opens a new TCP connection (`Connection: close`), error bodies are not read, and all clients are
 * released at once, each sending its enrolls one after another. The bare Fastify server gets the
 * same storm in the same run. Reported: wall time, latency p50/p99/max with the handshake
 * included, requests slower than 1 s, and the kernel's listen-queue and SYN-retransmit counters.
 */

/** The other threads' time by thread (name#tid), largest first, e.g. ` (node#7443 0.39 s, node#7434 0.29 s)`: Node 20 names every thread `node`, so the tid tells V8's helpers (started first) from the batcher worker (later). */
function byThreadName(byName: Record<string, number> | undefined): string {
  const rows = Object.entries(byName ?? {}).filter(([, s]) => s >= 0.01).sort((a, b) => b[1] - a[1]);
  return rows.length === 0 ? '' : ` (${rows.map(([n, s]) => `${n} ${s} s`).join(', ')})`;
}

export interface StormFigures {
  students: number;
  sections: number;
  requests: number;
  startupMs: number;
  limits: ReturnType<typeof connectionLimits>;
  login: Pick<StormResult, 'wallMs' | 'reqPerSec' | 'errorCount' | 'slowerThan1s' | 'kernel'>;
  load: StormResult;
  outcome: RowCounts | null;
  catchUp: Omit<CatchUp, 'counts'>;
  memoryMb: { engineAfterLoad: MemoryReading | null };
  cpuDuringLoad: ReturnType<typeof cpuDelta>;
  ceiling: { load: StormResult; cpuUsPerRequest: number } | null;
  /** Engine wall time over the bare server's under the same storm (target: at most 1.5). */
  wallRatioToCeiling: number | null;
  /** `--floor`: the floor server under the same storm, and who used the machine's CPUs meanwhile. */
  floor: { load: StormResult; cpu: ReturnType<typeof cpuDelta> } | null;
  /** The floor's wall time over the bare server's: what the contract alone costs on this machine. */
  floorRatioToCeiling: number | null;
  /** The engine's wall time over the floor's: what the engine costs beyond the contract. */
  wallRatioToFloor: number | null;
  /** `--warm-rounds`: the unmeasured storms the engine served first (enrolls, then drops of them). */
  warmRounds: { enrollMs: number; dropMs: number }[];
  /** `--trace-compile`: TurboFan compile time in the engine process during the load. */
  compileDuringLoad: CompileFigures | null;
  /** The engine's threads during the load: the event loop's time on a core and waiting for one, and the others'. */
  threadsDuringLoad: ThreadTimes | null;
}

/** Client i's jobs: login (token kept) or the seed plan's enrolls. */
function enrollJobs(target: Target, tokens: string[], plan: SectionRef[][], ledger: Ledger | null): Job[][] {
  return plan.map((sections, i) =>
    sections.map((s) => ({
      op: 'enroll',
      raw: enrollRequest(target, tokens[i]!, s),
      onReply: (r) => {
        if (r.status === 204) ledger?.add(studentId(i), s.courseId, s.groupId);
      },
    })),
  );
}

function cursorOver(jobs: Job[][]): (client: number) => Job | null {
  const cursor = new Array<number>(jobs.length).fill(0);
  return (c) => {
    const k = cursor[c]!;
    const j = jobs[c]![k];
    if (!j) return null;
    cursor[c] = k + 1;
    return j;
  };
}

/**
 * Storms the engine serves before the measured one (`--warm-rounds`): each student enrolls in 7
 * other random sections (another seed), then drops them, so the measured storm finds the same
 * tables and actors as without the rounds, on an engine whose code paths have run under a storm.
 */
async function warmRounds(rounds: number, target: Target, tokens: string[], spec: SeedSpec, seed: number, run: string): Promise<StormFigures['warmRounds']> {
  const done: StormFigures['warmRounds'] = [];
  const host = `${target.host}:${target.port}`;
  for (let r = 0; r < rounds; r++) {
    const plan = seedPlan(spec, PER_STUDENT, seed + 1000 + r);
    const t0 = performance.now();
    await runStorm({ label: `${run} warm ${r + 1} enroll`, host: target.host, port: target.port, clients: spec.students, next: cursorOver(enrollJobs(target, tokens, plan, null)), total: spec.students * PER_STUDENT });
    const t1 = performance.now();
    const drops: Job[][] = plan.map((sections, i) =>
      sections.map((s) => ({ op: 'drop', raw: buildRequest({ method: 'DELETE', path: `/student/course?course_id=${s.courseId}`, host, token: tokens[i]! }) })),
    );
    await runStorm({ label: `${run} warm ${r + 1} drop`, host: target.host, port: target.port, clients: spec.students, next: cursorOver(drops), total: spec.students * PER_STUDENT });
    done.push({ enrollMs: Math.round(t1 - t0), dropMs: Math.round(performance.now() - t1) });
    note(`[${run}] warm round ${r + 1}: enroll storm ${fmt(t1 - t0)} ms, drop storm ${fmt(performance.now() - t1)} ms (not measured)`);
  }
  return done;
}

async function stormLogin(label: string, target: Target, students: number): Promise<{ tokens: string[]; result: StormResult }> {
  const tokens = new Array<string>(students).fill('');
  const host = `${target.host}:${target.port}`;
  const jobs: Job[][] = Array.from({ length: students }, (_, i) => [
    {
      op: 'login',
      wantBody: true,
      raw: buildRequest({ method: 'POST', path: '/login', host, body: { user: studentId(i), password: BENCH_PASSWORD, staff: false } }),
      onReply: (r) => {
        if (r.status === 200 && r.body) tokens[i] = (JSON.parse(r.body.toString('utf8')) as { token: string }).token;
      },
    },
  ]);
  const result = await runStorm({ label, host: target.host, port: target.port, clients: students, next: cursorOver(jobs), total: students });
  const missing = tokens.filter((t) => t === '').length;
  if (missing > 0) throw new Error(`${missing} of ${students} logins failed: ${JSON.stringify(result.errors)}`);
  return { tokens, result };
}

export async function stormOnce(opts: BenchOptions, v: ReturnType<typeof variantsOf>[number], spec: SeedSpec, run: string, report: ScenarioReport): Promise<StormFigures> {
  const traceCompile = opts.traceCompile === true;
  const sys = new System({ mode: v.mode, batcher: v.batcher, spec, runner: opts.runner, cpuProfile: opts.cpuProf ? run : null, extraEnv: opts.extraEnv, traceCompile });
  note(`[${run}] starting: ${sys.label}, ${fmt(spec.students)} students, ${fmt(spec.sections)} sections, a new connection per request`);
  await sys.start();
  let window: { start: number; end: number } | null = null;
  let figures: StormFigures;
  let tokens: string[];
  let ledger: Ledger;
  const plan = seedPlan(spec, PER_STUDENT, opts.seed);
  try {
    const target = { host: sys.host, port: sys.port };
    const limits = connectionLimits(sys.engine!.pid);
    const login = await stormLogin(`${run} login`, target, spec.students);
    tokens = login.tokens;
    // Read before any warm round: their drops undo their enrolls (no section fills), so the
    // tables end where they started, possibly a batch after the measured storm has begun.
    ledger = new Ledger((await sys.counts()) ?? { rows: 0, checksum: '0' });
    const warm = await warmRounds(opts.warmRounds ?? 0, target, tokens, spec, opts.seed, run);
    const jobs = enrollJobs(target, tokens, plan, ledger);
    const cpu0 = sys.cpuSeconds();
    const threads0 = readThreadTimes(sys.engine!.pid);
    const gen0 = process.cpuUsage();
    const start = performance.now();
    const { lastReplyAt, ...load } = await runStorm({ label: `${run} enroll`, host: target.host, port: target.port, clients: spec.students, next: cursorOver(jobs), total: spec.students * PER_STUDENT });
    window = { start, end: lastReplyAt };
    const threadsDuringLoad = threadTimesDelta(threads0, readThreadTimes(sys.engine!.pid));
    const cpu = cpuDelta(cpu0, sys.cpuSeconds(), process.cpuUsage(gen0), load.requests);
    const { counts, ...catchUp } = await sys.catchUp(ledger, lastReplyAt);
    figures = {
      students: spec.students,
      sections: spec.sections,
      requests: load.requests,
      startupMs: Math.round(sys.startupMs),
      limits,
      login: { wallMs: login.result.wallMs, reqPerSec: login.result.reqPerSec, errorCount: login.result.errorCount, slowerThan1s: login.result.slowerThan1s, kernel: login.result.kernel },
      load,
      outcome: counts,
      catchUp,
      memoryMb: { engineAfterLoad: sys.memory().engine },
      cpuDuringLoad: cpu,
      ceiling: null,
      wallRatioToCeiling: null,
      floor: null,
      floorRatioToCeiling: null,
      wallRatioToFloor: null,
      warmRounds: warm,
      compileDuringLoad: opts.traceCompile ? sys.engine!.compileBetween(start, lastReplyAt) : null,
      threadsDuringLoad,
    };
  } finally {
    await stopAndReport(sys, run, opts, report, window);
  }
  if (sys.finalCounts) {
    figures.outcome = sys.finalCounts;
    report.checks.push({ name: `${run}: embedded database holds every acknowledged change`, ok: ledger.matches(sys.finalCounts), detail: `${sys.finalCounts.rows} rows, ${ledger.rows} acknowledged` });
  }
  // The bare server gets the same storm once the engine has exited, so the two never share the machine.
  if (opts.ceiling) {
    const { child, port } = await startCeiling(opts.runner);
    try {
      const target = { host: '127.0.0.1', port };
      const jobs = enrollJobs(target, tokens, plan, null);
      const cpu0 = readCpuSeconds(child.pid);
      const { lastReplyAt: _l, ...load } = await runStorm({ label: `${run} ceiling`, host: target.host, port, clients: spec.students, next: cursorOver(jobs), total: spec.students * PER_STUDENT });
      const cpu = readCpuSeconds(child.pid) - cpu0;
      figures.ceiling = { load, cpuUsPerRequest: load.requests > 0 ? round((cpu * 1e6) / load.requests, 0) : 0 };
      figures.wallRatioToCeiling = ratio(figures.load.wallMs, load.wallMs);
    } finally {
      await child.stop();
    }
  }
  // The floor last, on a database and stream queue of its own, checking the engine's tokens.
  if (opts.floor && v.mode === 'full') {
    const floor = await startFloor(sys.jwtSecret);
    try {
      const target = { host: '127.0.0.1', port: floor.port };
      const acknowledged = new Ledger({ rows: 0, checksum: '0' });
      const jobs = enrollJobs(target, tokens, plan, acknowledged);
      const before = { engine: readCpuSeconds(floor.child.pid), batcher: NaN, machine: readMachineCpu() };
      const gen0 = process.cpuUsage();
      const { lastReplyAt: _l, ...load } = await runStorm({ label: `${run} floor`, host: target.host, port: floor.port, clients: spec.students, next: cursorOver(jobs), total: spec.students * PER_STUDENT });
      const after = { engine: readCpuSeconds(floor.child.pid), batcher: NaN, machine: readMachineCpu() };
      // Its writes are checked too: its database holds exactly the changes it answered 204.
      const caughtUp = await waitUntil(async () => acknowledged.matches(await floor.counts()), 10_000);
      report.checks.push({ name: `${run}: floor wrote every acknowledged change`, ok: caughtUp, detail: `${acknowledged.rows} rows acknowledged, ${(await floor.counts()).rows} in its database` });
      figures.floor = { load, cpu: cpuDelta(before, after, process.cpuUsage(gen0), load.requests) };
      figures.wallRatioToFloor = ratio(figures.load.wallMs, load.wallMs);
      if (figures.ceiling) figures.floorRatioToCeiling = ratio(load.wallMs, figures.ceiling.load.wallMs);
    } finally {
      await floor.stop();
    }
  }
  return figures;
}

async function waitUntil(ok: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await ok()) return true;
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function stormTargets(m: StormFigures, fullSize: boolean): TargetCheck[] {
  const judged = (x: boolean) => (fullSize ? x : null);
  return [
    check('listen-queue overflows (TcpExtListenOverflows)', '0', fmt(m.load.kernel.TcpExtListenOverflows), judged(m.load.kernel.TcpExtListenOverflows === 0)),
    check('requests slower than 1 s', '0', fmt(m.load.slowerThan1s), judged(m.load.slowerThan1s === 0)),
    check(
      'wall time vs bare Fastify under the same storm',
      '<= 1.5x',
      m.ceiling ? `${fmt(m.load.wallMs)} ms vs ${fmt(m.ceiling.load.wallMs)} ms = ${m.wallRatioToCeiling}x` : `${fmt(m.load.wallMs)} ms (no ceiling)`,
      m.ceiling ? judged((m.wallRatioToCeiling ?? Infinity) <= 1.5) : null,
    ),
    check('connection-level failures', '0', fmt(Object.entries(m.load.errors).filter(([k]) => k.startsWith('network')).reduce((a, [, n]) => a + n, 0)), judged(!Object.keys(m.load.errors).some((k) => k.startsWith('network')))),
    check(
      'CPU time per request (no target)',
      '-',
      `${fmt(m.cpuDuringLoad.engineCpuUsPerRequest)} µs` + (m.cpuDuringLoad.batcherCpuUsPerRequest !== null ? ` (+ batcher ${fmt(m.cpuDuringLoad.batcherCpuUsPerRequest)} µs)` : '') + (m.ceiling ? `; bare Fastify ${fmt(m.ceiling.cpuUsPerRequest)} µs` : ''),
      null,
    ),
    ...(m.floor
      ? [
          check(
            'floor (bare Fastify + the durability contract) vs bare Fastify, and engine vs floor (no target)',
            '-',
            `floor ${fmt(m.floor.load.wallMs)} ms` +
              (m.ceiling ? ` = ${m.floorRatioToCeiling}x bare Fastify` : '') +
              `; engine = ${m.wallRatioToFloor}x floor; floor CPU ${fmt(m.floor.cpu.engineCpuUsPerRequest)} µs per request`,
            null,
          ),
        ]
      : []),
  ];
}

export async function stormScenario(opts: BenchOptions, report: ScenarioReport<StormFigures>): Promise<void> {
  const spec = seedSpec(opts);
  report.notes.push(
    `The seed workload as the Go service's client sends it: ${fmt(spec.students)} students, ${PER_STUDENT} enrolls each for random sections of ${fmt(spec.sections)} ` +
      `(window open for ${WINDOW_MINUTES} min); every request on a new TCP connection (Connection: close), error bodies not read, all clients released at once. ` +
      `Latency includes the TCP handshake. The bare Fastify server gets the same storm after the engine has exited.`,
  );
  const limits = connectionLimits();
  report.notes.push(`kernel net.core.somaxconn ${limits.somaxconn}, tcp_max_syn_backlog ${limits.tcpMaxSynBacklog}; ulimit -n of the harness ${limits.nofile}`);
  for (const v of variantsOf(opts)) {
    const runs: StormFigures[] = [];
    for (let r = 1; r <= opts.runs; r++) {
      const run = `storm-${v.mode}${v.mode === 'full' ? `-${v.batcher}` : ''}-${opts.stamp}-run${r}`;
      const f = await stormOnce(opts, v, spec, run, report);
      runs.push(f);
      report.checks.push(...harnessChecks(run, f.load).filter((c) => !c.name.endsWith('no network errors')));
      if (v.mode === 'full') report.checks.push({ name: `${run}: database caught up`, ok: f.catchUp.caughtUp, detail: `${f.catchUp.ms} ms` });
      printStormRun(run, f);
    }
    const median = medianDeep(runs);
    const variant: VariantReport<StormFigures> = { variant: v.name, runs, median, targets: stormTargets(median, spec.students === 1000 && spec.sections === 1500) };
    report.variants.push(variant);
  }
}

function line(label: string, r: StormResult): string {
  const l = r.latencyMs;
  const net = Object.entries(r.errors).filter(([k]) => k.startsWith('network')).map(([k, n]) => `${k} x${n}`).join(', ');
  return (
    `  ${label}: ${fmt(r.requests)} requests in ${fmt(r.wallMs, 1)} ms = ${fmt(r.reqPerSec)} req/s; latency ms p50 ${l.p50} p99 ${l.p99} max ${l.max}; > 1 s: ${fmt(r.slowerThan1s)}; ` +
    `kernel: ListenOverflows ${r.kernel.TcpExtListenOverflows}, ListenDrops ${r.kernel.TcpExtListenDrops}, TCPSynRetrans ${r.kernel.TcpExtTCPSynRetrans}` +
    (net ? `; connection failures: ${net}` : '')
  );
}

export function printStormRun(run: string, f: StormFigures): void {
  const rej = Object.entries(f.load.rejections).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const other = Object.entries(f.load.errors).filter(([k]) => !k.startsWith('network')).map(([k, n]) => `${k} x${n}`).join(', ') || 'none';
  note(
    [
      `[${run}] somaxconn ${f.limits.somaxconn}, engine ulimit -n ${f.limits.nofile}`,
      line('engine', f.load),
      f.ceiling ? line('bare Fastify', f.ceiling.load) + `; wall ratio ${f.wallRatioToCeiling}` : '  (no ceiling)',
      ...(f.floor
        ? [
            line('floor', f.floor.load) + `; engine / floor ${f.wallRatioToFloor}` + (f.floorRatioToCeiling !== null ? `; floor / bare Fastify ${f.floorRatioToCeiling}` : ''),
            formatCpu(f.floor.cpu, null).replace(/engine/g, 'floor'),
          ]
        : []),
      `  2xx ${f.load.ok}; rejections: ${rej}; other errors: ${other}; login storm ${fmt(f.login.wallMs)} ms, > 1 s: ${f.login.slowerThan1s}, overflows ${f.login.kernel.TcpExtListenOverflows}`,
      `  database: ${f.catchUp.byConstruction ? 'caught up by construction (embedded)' : f.catchUp.caughtUp ? `caught up ${fmt(f.catchUp.ms, 1)} ms after the last reply` : 'NOT caught up'}` +
        (f.outcome ? `; ${f.outcome.registered} registered + ${f.outcome.queued} queued rows` : '') + `; engine RSS after load ${f.memoryMb.engineAfterLoad?.rssMb} MB`,
      formatCpu(f.cpuDuringLoad, f.ceiling ? { cpuUsPerRequest: f.ceiling.cpuUsPerRequest } as never : null),
      ...(f.warmRounds.length > 0 ? [`  measured after ${f.warmRounds.length} unmeasured storm(s) on the same engine: ${f.warmRounds.map((w) => `${fmt(w.enrollMs)} ms + ${fmt(w.dropMs)} ms drops`).join('; ')}`] : []),
      ...(f.threadsDuringLoad
        ? [
            `  engine threads during the load: event loop on a core ${f.threadsDuringLoad.mainRunS} s, waiting for one ${f.threadsDuringLoad.mainWaitS} s; ` +
              `other threads (V8 compiler and GC, libuv pool, batcher worker) on a core ${f.threadsDuringLoad.othersRunS} s` +
              byThreadName(f.threadsDuringLoad.othersByName),
          ]
        : []),
      ...(f.compileDuringLoad
        ? [`  TurboFan during the load (engine process, --trace-opt): ${fmt(f.compileDuringLoad.ms)} ms of compile in ${f.compileDuringLoad.jobs} jobs, ${f.compileDuringLoad.bailouts} bailouts`]
        : []),
    ].join('\n'),
  );
}
