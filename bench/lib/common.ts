import { cpus, loadavg, totalmem } from 'node:os';
import { closeAll, openConnections, type HttpConnection } from './http.js';
import type { LoadResult } from './load.js';
import { note } from './progress.js';
import { formatProfile, summarizeProfile, type ProfileSummary } from './profile.js';
import { readCpuSeconds, readMemory, type Runner } from './procs.js';
import { round } from './stats.js';
import { Ledger } from './seed.js';
import { startCeiling, startFloor, type BatcherPlacement, type CpuSnapshot, type Mode, type Profiles, type System } from './system.js';
import type { Target } from './workloads.js';

export interface BenchOptions {
  mode: Mode;
  runs: number;
  /** Full mode: where the batcher runs; each placement is measured as its own variant. */
  batchers: BatcherPlacement[];
  runner: Runner;
  cpuProf: boolean;
  /** Steady and ceiling: measured seconds, and connections. */
  durationS: number;
  warmupS: number;
  connections: number;
  /** Overrides of the scenario's data set size. */
  students: number | null;
  sections: number | null;
  seed: number;
  ceiling: boolean;
  /**
   * storm, seed, steady (full mode): also give the same load to the floor server
   * (bench/floor-server.mjs: bare Fastify plus the least SPEC's durability rule asks of every
   * write), after the bare server.
   */
  floor: boolean;
  /**
   * memory: which data sets to measure. `small` (1,500 sections, about 20 s a run) skips the
   * 100k-section set (about 50 s a run, mostly seeding a million rows); each set is measured the
   * same way whichever are chosen.
   */
  memoryDatasets: MemoryDatasets;
  extraEnv: Record<string, string>;
  /** seed and rush: every request on a new TCP connection, as in the storm scenario. */
  freshConnections: boolean;
  /** The run's timestamp, used in every file name. */
  stamp: string;
  /** steady: also measure each run while this many student event streams (GET /me/events) are open (issue 16). */
  eventStreams?: number;
  /**
   * storm: unmeasured storms (enrolls, then drops of them) given to the same engine before the
   * measured one, so the figure is that of an engine that has served a storm already.
   */
  warmRounds?: number;
  /** storm: the engine runs with V8's --trace-opt; TurboFan's compile time during the load is reported. */
  traceCompile?: boolean;
}

export type MemoryDatasets = 'small' | 'large' | 'both';

/** A target from issue 6, shown beside the figure. Benchmarks are not tests: a miss fails nothing. */
export interface TargetCheck {
  name: string;
  target: string;
  actual: string;
  met: boolean | null;
}

export function check(name: string, target: string, actual: string, met: boolean | null): TargetCheck {
  return { name, target, actual, met };
}

/** Something the harness itself asserts (rush counts, no 5xx); a failure makes the exit code non-zero. */
export interface HarnessCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface VariantReport<F> {
  variant: string;
  runs: F[];
  median: F;
  targets: TargetCheck[];
}

export interface ScenarioReport<F = unknown> {
  scenario: string;
  mode: Mode;
  startedAt: string;
  finishedAt: string;
  machine: ReturnType<typeof machineInfo>;
  options: Omit<BenchOptions, 'stamp'>;
  notes: string[];
  variants: VariantReport<F>[];
  checks: HarnessCheck[];
  profiles: { run: string; engine: ProfileSummary | null; batcher: ProfileSummary | null }[];
}

export function timestamp(d = new Date()): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

/** Warns when the machine is busy before a measurement starts. */
export function warnIfBusy(): void {
  const [one] = loadavg();
  const n = cpus().length;
  if (one !== undefined && one > n * 0.5) {
    note(`warning: load average ${one.toFixed(2)} on ${n} CPUs before starting: other processes compete with the engine, figures will be low`);
  }
}

export function machineInfo() {
  const c = cpus();
  return {
    cpus: c.length,
    cpuModel: c[0]?.model ?? 'unknown',
    memoryGb: round(totalmem() / 1e9, 1),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    /** 1/5/15-minute load averages when the scenario started: other work on the machine skews every figure. */
    loadAverage: loadavg().map((x) => round(x, 2)),
  };
}

export interface CeilingFigures {
  reqPerSec: number;
  wallMs: number;
  latencyMs: LoadResult['latencyMs'];
  connections: number;
  rssMb: number | null;
  /** CPU time the bare server used per request: less sensitive to a busy machine than req/s. */
  cpuUsPerRequest: number;
}

export type CeilingWork = (target: Target, conns: HttpConnection[]) => Promise<LoadResult>;

/**
 * Runs `work` against a fresh bare Fastify child with `connections` open connections, after the
 * engine has stopped, so the two never share the CPU.
 */
export async function measureCeiling(
  runner: Runner,
  connections: number,
  work: CeilingWork,
): Promise<CeilingFigures> {
  const { child, port } = await startCeiling(runner);
  try {
    const target = { host: '127.0.0.1', port };
    const conns = await openConnections(target.host, target.port, connections);
    try {
      const cpu0 = readCpuSeconds(child.pid);
      const r = await work(target, conns);
      return serverFigures(r, readCpuSeconds(child.pid) - cpu0, connections, child.pid);
    } finally {
      closeAll(conns);
    }
  } finally {
    await child.stop();
  }
}

/** A comparison server's figures from its load and the CPU seconds it used meanwhile. */
function serverFigures(r: LoadResult, cpuSec: number, connections: number, pid: number): CeilingFigures {
  return {
    cpuUsPerRequest: r.requests > 0 ? round((cpuSec * 1e6) / r.requests, 0) : 0,
    reqPerSec: r.reqPerSec,
    wallMs: r.wallMs,
    latencyMs: r.latencyMs,
    connections,
    rssMb: readMemory(pid)?.rssMb ?? null,
  };
}

/** The floor's figures in a keep-alive scenario, and whether its database holds what it acknowledged. */
export interface FloorFigures extends CeilingFigures {
  /** Replies per second by operation (enroll, drop, list), where the load tells them apart. */
  perOpReqPerSec: Record<string, number>;
  /** Its database holds exactly what it answered 204, and no request failed. */
  wrote: { ok: boolean; detail: string };
}

/** Like CeilingWork, with the ledger the load keeps of the server's 204 replies (null: the ceiling, which keeps nothing). */
export type FloorWork = (target: Target, conns: HttpConnection[], ledger: Ledger | null) => Promise<LoadResult>;

/**
 * Runs `work` against the floor (bench/floor-server.mjs: bare Fastify plus what SPEC's durability
 * rule costs) with `connections` open connections, after the engine has stopped, and checks that
 * its database came to hold exactly the changes it answered 204 (within 10 s).
 */
export async function measureFloor(jwtSecret: string, connections: number, work: FloorWork): Promise<FloorFigures> {
  const floor = await startFloor(jwtSecret);
  try {
    const target = { host: '127.0.0.1', port: floor.port };
    const conns = await openConnections(target.host, target.port, connections);
    try {
      const ledger = new Ledger({ rows: 0, checksum: '0' });
      const cpu0 = readCpuSeconds(floor.child.pid);
      const r = await work(target, conns, ledger);
      const cpu = readCpuSeconds(floor.child.pid) - cpu0;
      const deadline = performance.now() + 10_000;
      let held = await floor.counts();
      while (!ledger.matches(held) && performance.now() < deadline) {
        await new Promise((res) => setTimeout(res, 50));
        held = await floor.counts();
      }
      return {
        ...serverFigures(r, cpu, connections, floor.child.pid),
        perOpReqPerSec: Object.fromEntries(Object.entries(r.perOp ?? {}).map(([op, o]) => [op, o.reqPerSec])),
        wrote: {
          ok: ledger.matches(held) && Object.keys(r.errors).length === 0,
          detail: `${ledger.rows} rows acknowledged, ${held.rows} in its database; errors ${JSON.stringify(r.errors)}`,
        },
      };
    } finally {
      closeAll(conns);
    }
  } finally {
    await floor.stop();
  }
}

export function ratio(a: number, b: number): number {
  return b > 0 ? round(a / b, 3) : 0;
}

/**
 * The CPU profiles of one run, summarised over the load window (performance.now() times of this
 * process; each profile starts when its child was spawned).
 */
export function profileSummaries(
  run: string,
  profiles: Profiles,
  window: { start: number; end: number } | null,
): { run: string; engine: ProfileSummary | null; batcher: ProfileSummary | null } {
  const w = (spawnedAt: number): [number, number] | null =>
    window && Number.isFinite(spawnedAt) ? [window.start - spawnedAt, window.end - spawnedAt] : null;
  const engine = profiles.engine ? summarizeProfile(profiles.engine, w(profiles.engineStartedAt)) : null;
  const batcher = profiles.batcher ? summarizeProfile(profiles.batcher, w(profiles.batcherStartedAt)) : null;
  if (engine) note(formatProfile(`CPU profile, engine (${run})`, engine));
  if (batcher) note(formatProfile(`CPU profile, batcher (${run})`, batcher));
  return { run, engine, batcher };
}

/**
 * Stops the system under test after a run: the engine's error lines are shown, and with
 * --cpu-prof its (and the batcher's) profiles are summarised over the load window.
 */
export async function stopAndReport(
  sys: System,
  run: string,
  opts: BenchOptions,
  report: ScenarioReport,
  window: { start: number; end: number } | null,
): Promise<void> {
  const errors = sys.errorLines();
  const profiles = await sys.stop({ readEmbeddedCounts: true });
  if (errors.length > 0) note(`[${run}] the engine logged ${errors.length} error line(s):\n  ${errors.slice(-5).join('\n  ')}`);
  if (opts.cpuProf) report.profiles.push(profileSummaries(run, profiles, window));
}

/** "full, batcher in-process" / "embedded" for each variant the options ask for. */
export function variantsOf(opts: BenchOptions): { mode: Mode; batcher: BatcherPlacement; name: string }[] {
  if (opts.mode === 'embedded') return [{ mode: 'embedded', batcher: 'in-process', name: 'embedded' }];
  return opts.batchers.map((b) => ({ mode: 'full' as const, batcher: b, name: `full, batcher ${b}` }));
}

/**
 * CPU seconds each process used during the load, and the engine's (plus a separate batcher's)
 * CPU time per request: on a shared or busy machine this moves far less than req/s does, and set
 * beside the bare server's it says what one core could serve.
 */
export function cpuDelta(before: CpuSnapshot, after: CpuSnapshot, gen: NodeJS.CpuUsage, requests: number) {
  const engineSec = after.engine - before.engine;
  const batcherSec = Number.isNaN(after.batcher) ? null : after.batcher - before.batcher;
  const generatorSec = (gen.user + gen.system) / 1e6;
  const m = (k: keyof CpuSnapshot['machine']) => after.machine[k] - before.machine[k];
  const wall = m('busy') + m('idle') + m('steal');
  const rabbitmqSec = m('rabbitmq');
  const postgresSec = m('postgres');
  return {
    engineSec: round(engineSec, 2),
    batcherSec: batcherSec === null ? null : round(batcherSec, 2),
    generatorSec: round(generatorSec, 2),
    engineCpuUsPerRequest: requests > 0 ? round((engineSec * 1e6) / requests, 0) : 0,
    batcherCpuUsPerRequest: batcherSec !== null && requests > 0 ? round((batcherSec * 1e6) / requests, 0) : null,
    /** The whole machine during the load: share of all CPUs busy, and stolen by the hypervisor. */
    machineBusyPct: wall > 0 ? round((100 * m('busy')) / wall, 1) : null,
    machineStealPct: wall > 0 ? round((100 * m('steal')) / wall, 1) : null,
    rabbitmqSec: round(rabbitmqSec, 2),
    postgresSec: round(postgresSec, 2),
    /** Busy CPU seconds not accounted for by the engine, batcher, generator, RabbitMQ or PostgreSQL. */
    // Readings are not simultaneous and exited postgres backends drop out: clamp the noise at 0.
    otherSec: Math.max(0, round(m('busy') - engineSec - (batcherSec ?? 0) - generatorSec - rabbitmqSec - postgresSec, 2)),
  };
}

/** Two lines for the per-run output: who used the CPUs during the load, and CPU time per request. */
export function formatCpu(cpu: ReturnType<typeof cpuDelta>, ceiling: CeilingFigures | null): string {
  const who =
    `  CPU seconds during the load: engine ${cpu.engineSec}` +
    (cpu.batcherSec !== null ? `, batcher ${cpu.batcherSec}` : '') +
    `, generator ${cpu.generatorSec}, RabbitMQ ${cpu.rabbitmqSec}, PostgreSQL ${cpu.postgresSec}, other processes ${cpu.otherSec}` +
    (cpu.machineBusyPct !== null ? `; all CPUs ${cpu.machineBusyPct}% busy, ${cpu.machineStealPct}% stolen` : '');
  const per =
    `  CPU per request: engine ${cpu.engineCpuUsPerRequest} µs` +
    (cpu.batcherCpuUsPerRequest !== null ? `, batcher ${cpu.batcherCpuUsPerRequest} µs` : '') +
    (ceiling ? `; bare Fastify ${ceiling.cpuUsPerRequest} µs` : '');
  return `${who}\n${per}`;
}
