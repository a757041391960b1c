import { cpuDelta, measureCeiling, ratio, variantsOf, type BenchOptions, type CeilingWork, type ScenarioReport } from '../lib/common.js';
import { closeAll, openConnections } from '../lib/http.js';
import { note } from '../lib/progress.js';
import { Ledger } from '../lib/seed.js';
import { round } from '../lib/stats.js';
import { STEADY_ENV, System } from '../lib/system.js';
import { loginAll, runSeedLoad, seedPlan, SteadyDriver } from '../lib/workloads.js';
import { ceilingScenario, type CeilingScenarioFigures } from './ceiling.js';
import { harnessChecks, PER_STUDENT, printSeedRun, seedSpec, seedTargets, type SeedFigures } from './seed.js';
import { MIX, printSteady, steadyTargets, type SteadyFigures } from './steady.js';

/**
 * `smoke`: proves the harness works, for CI, in well under a minute: one engine (embedded by
 * default, so no services are needed; `--mode full` exercises PostgreSQL and RabbitMQ with the
 * batcher in-process) takes the seed workload with 50 students, then 2 s of steady load from 50
 * other students on 8 connections; one bare Fastify child takes the same two loads; then the
 * ceiling scenario runs for 1 s. Fails (non-zero exit) when the harness breaks, a 5xx is seen or
 * the database does not hold exactly the acknowledged changes; speed is not judged.
 */
export async function smokeScenario(opts: BenchOptions, report: ScenarioReport<unknown>): Promise<void> {
  const o: BenchOptions = {
    ...opts,
    runs: 1,
    students: opts.students ?? 50,
    sections: opts.sections ?? 150,
    durationS: opts.durationS === 10 ? 2 : opts.durationS,
    warmupS: opts.warmupS === 1 ? 0.5 : opts.warmupS,
    connections: opts.connections === 64 ? 8 : opts.connections,
  };
  if (o.mode === 'full' && o.batchers.length > 1) o.batchers = ['in-process'];
  const seedStudents = o.students as number;
  const steadyStudents = Math.max(seedStudents, o.connections);
  // Students [0, seedStudents) take the seed workload, the next steadyStudents the steady one.
  const spec = { ...seedSpec(o), students: seedStudents + steadyStudents };
  report.notes.push(
    `smoke: ${seedStudents} students x ${PER_STUDENT} enrolls, then ${steadyStudents} other students for ${o.durationS} s at ${o.connections} connections; ` +
      `${spec.sections} sections; one engine for both.`,
  );
  for (const v of variantsOf(o)) {
    const run = `smoke-${v.mode}-${o.stamp}`;
    const sys = new System({ mode: v.mode, batcher: v.batcher, spec, runner: o.runner, cpuProfile: null, extraEnv: { ...STEADY_ENV, ...o.extraEnv } });
    note(`[${run}] starting: ${sys.label}`);
    await sys.start();
    let seed: SeedFigures;
    let steady: SteadyFigures;
    let ledger: Ledger;
    let seedCeiling: CeilingWork | null = null;
    let steadyCeiling: CeilingWork | null = null;
    try {
      const engineAfterStart = sys.memory().engine;
      const target = { host: sys.host, port: sys.port };
      const conns = await openConnections(target.host, target.port, seedStudents);
      try {
        const login = await loginAll({ label: `${run} login`, target, conns, students: spec.students, owner: (i) => i % seedStudents });
        ledger = new Ledger((await sys.counts()) ?? { rows: 0, checksum: '0' });
        const seedTokens = login.tokens.slice(0, seedStudents);
        const plan = seedPlan({ ...spec, students: seedStudents }, PER_STUDENT, o.seed);
        let cpu0 = sys.cpuSeconds();
        let gen0 = process.cpuUsage();
        const s = await runSeedLoad({ label: `${run} seed`, target, conns, tokens: seedTokens, plan, ledger });
        const { lastReplyAt: seedLast, ...seedLoad } = s;
        const seedCpu = cpuDelta(cpu0, sys.cpuSeconds(), process.cpuUsage(gen0), seedLoad.requests);
        const { counts: seedCounts, ...seedCatchUp } = await sys.catchUp(ledger, seedLast);
        seed = {
          students: seedStudents,
          sections: spec.sections,
          requests: seedLoad.requests,
          startupMs: Math.round(sys.startupMs),
          seedDbMs: sys.seed?.ms ?? 0,
          login: { wallMs: login.result.wallMs, reqPerSec: login.result.reqPerSec, latencyMs: login.result.latencyMs, errorCount: login.result.errorCount },
          load: seedLoad,
          outcome: seedCounts,
          catchUp: seedCatchUp,
          memoryMb: { engineAfterStart, engineAfterLoad: sys.memory().engine, batcherAfterLoad: sys.memory().batcher },
          cpuDuringLoad: seedCpu,
          ceiling: null,
          ratioToCeiling: null,
          floor: null,
          floorRatioToCeiling: null,
          ratioToFloor: null,
        };
        seedCeiling = (t, cs) => runSeedLoad({ label: `${run} seed ceiling`, target: t, conns: cs, tokens: seedTokens, plan, ledger: null });

        const steadyTokens = login.tokens.slice(seedStudents);
        const steadyConns = conns.slice(0, o.connections);
        const driver = new SteadyDriver({ target, conns: steadyConns, tokens: steadyTokens, spec, mix: MIX, seed: o.seed, maxHeld: 8, ledger, firstStudent: seedStudents });
        if (o.warmupS > 0) await driver.run(`${run} steady warm-up`, o.warmupS * 1000);
        cpu0 = sys.cpuSeconds();
        gen0 = process.cpuUsage();
        const { lastReplyAt: steadyLast, ...steadyLoad } = await driver.run(`${run} steady`, o.durationS * 1000);
        const steadyCpu = cpuDelta(cpu0, sys.cpuSeconds(), process.cpuUsage(gen0), steadyLoad.requests);
        const { counts: _c, ...steadyCatchUp } = await sys.catchUp(ledger, steadyLast);
        const writes = (steadyLoad.perOp.enroll?.count ?? 0) + (steadyLoad.perOp.drop?.count ?? 0);
        steady = {
          connections: steadyConns.length,
          durationS: o.durationS,
          students: steadyStudents,
          sections: spec.sections,
          startupMs: Math.round(sys.startupMs),
          load: steadyLoad,
          writesPerSec: steadyLoad.wallMs > 0 ? round((writes * 1000) / steadyLoad.wallMs, 0) : 0,
          catchUp: steadyCatchUp,
          memoryMb: { engineAfterLoad: sys.memory().engine, batcherAfterLoad: sys.memory().batcher },
          cpuDuringLoad: steadyCpu,
          ceiling: null,
          ratioToCeiling: null,
          floor: null,
          floorRatioToCeiling: null,
          ratioToFloor: null,
        };
        steadyCeiling = async (t, cs) => {
          const d = new SteadyDriver({ target: t, conns: cs, tokens: steadyTokens, spec, mix: MIX, seed: o.seed, maxHeld: 8, ledger: null, firstStudent: seedStudents });
          return d.run(`${run} steady ceiling`, o.durationS * 1000);
        };
      } finally {
        closeAll(conns);
      }
    } finally {
      const errors = sys.errorLines();
      await sys.stop({ readEmbeddedCounts: true });
      if (errors.length > 0) note(`[${run}] the engine logged ${errors.length} error line(s):\n  ${errors.slice(-5).join('\n  ')}`);
    }
    const { left, queuesListed } = await sys.leftovers();
    const how = o.mode === 'full' ? (queuesListed ? ' (queues: every one with the run prefix, as rabbitmqctl lists them)' : ' (queues: by name; rabbitmqctl could not list them)') : '';
    report.checks.push({ name: `${run}: left no database, queue or data directory behind`, ok: left.length === 0, detail: (left.join(', ') || 'nothing left') + how });
    if (o.ceiling && seedCeiling && steadyCeiling) {
      seed.ceiling = await measureCeiling(o.runner, seedStudents, seedCeiling);
      seed.ratioToCeiling = ratio(seed.load.reqPerSec, seed.ceiling.reqPerSec);
      steady.ceiling = await measureCeiling(o.runner, steady.connections, steadyCeiling);
      steady.ratioToCeiling = ratio(steady.load.reqPerSec, steady.ceiling.reqPerSec);
    }
    if (sys.finalCounts) {
      seed.outcome = sys.finalCounts;
      report.checks.push({
        name: `${run}: embedded database holds every acknowledged change`,
        ok: ledger.matches(sys.finalCounts),
        detail: `${sys.finalCounts.rows} rows, ${ledger.rows} acknowledged`,
      });
    } else {
      report.checks.push({ name: `${run}: database caught up (seed)`, ok: seed.catchUp.caughtUp, detail: `${seed.catchUp.ms} ms` });
      report.checks.push({ name: `${run}: database caught up (steady)`, ok: steady.catchUp.caughtUp, detail: `${steady.catchUp.ms} ms` });
    }
    report.checks.push(...harnessChecks(`${run} seed`, seed.load), ...harnessChecks(`${run} steady`, steady.load));
    report.checks.push({ name: `${run}: every login succeeded`, ok: seed.login.errorCount === 0, detail: `${seed.login.errorCount} failed logins` });
    printSeedRun(`${run} seed`, seed);
    printSteady(`${run} steady`, steady);
    report.variants.push({ variant: `seed — ${v.name}`, runs: [seed], median: seed, targets: seedTargets(seed, v.mode) });
    report.variants.push({ variant: `steady — ${v.name}`, runs: [steady], median: steady, targets: steadyTargets(steady) });
  }
  const c: ScenarioReport<CeilingScenarioFigures> = { ...report, variants: [], checks: [], notes: [], profiles: [] };
  await ceilingScenario({ ...o, durationS: Math.min(o.durationS, 1), warmupS: 0 }, c);
  report.variants.push(...(c.variants as never[]));
  report.checks.push(...c.checks);
}
