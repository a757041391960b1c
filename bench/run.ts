/**
 * `npm run bench -- <scenario> [--mode full|embedded] [--runs N] ...`: the benchmark harness of
 * SPEC section 7 (GitHub issue 6). Every run builds its own system under test from nothing (a
 * database or data directory, an AMQP prefix, seeded rows, the engine as a child process) and
 * tears it down again, also on failure and Ctrl-C. Results go to bench/results/ as JSON and SVG.
 * See bench/README.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderChart } from './lib/chart.js';
import { installSignalHandlers, isInterrupted, runAllCleanups } from './lib/cleanup.js';
import { parseArgs, USAGE, UsageError, type Scenario } from './lib/cli.js';
import { machineInfo, timestamp, warnIfBusy, type BenchOptions, type ScenarioReport } from './lib/common.js';
import { clearProgress, note } from './lib/progress.js';
import { prepareRunner, REPO_ROOT, resolveRunner } from './lib/procs.js';
import { printReport } from './lib/report.js';
import { ceilingScenario } from './scenarios/ceiling.js';
import { clusterScenario } from './scenarios/cluster.js';
import { memoryScenario } from './scenarios/memory.js';
import { rushScenario } from './scenarios/rush.js';
import { seedScenario } from './scenarios/seed.js';
import { smokeScenario } from './scenarios/smoke.js';
import { stormScenario } from './scenarios/storm.js';
import { steadyScenario } from './scenarios/steady.js';

const RESULTS_DIR = join(REPO_ROOT, 'bench/results');

type Runnable = Exclude<Scenario, 'all' | 'smoke'>;

const RUNNERS: Record<Runnable, (opts: BenchOptions, report: ScenarioReport<never>) => Promise<void>> = {
  seed: seedScenario as never,
  rush: rushScenario as never,
  storm: stormScenario as never,
  steady: steadyScenario as never,
  ceiling: ceilingScenario as never,
  memory: memoryScenario as never,
  cluster: clusterScenario as never,
};

function newReport(scenario: string, opts: BenchOptions): ScenarioReport<never> {
  const { stamp: _s, ...options } = opts;
  return {
    scenario,
    mode: opts.mode,
    startedAt: new Date().toISOString(),
    finishedAt: '',
    machine: machineInfo(),
    options,
    notes: [],
    variants: [],
    checks: [],
    profiles: [],
  };
}

function write(report: ScenarioReport<unknown>, stamp: string): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const base = join(RESULTS_DIR, `${report.scenario}-${report.mode}-${stamp}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${base}.svg`, renderChart([report]));
  return base;
}

async function runScenario(name: Runnable, opts: BenchOptions, batcherGiven: boolean): Promise<ScenarioReport<unknown>> {
  const o = { ...opts };
  // The memory scenario measures the engine with its batcher inside unless asked otherwise.
  if (name === 'memory' && !batcherGiven) o.batchers = ['in-process'];
  const report = newReport(name, o);
  warnIfBusy();
  try {
    await RUNNERS[name](o, report);
  } catch (err) {
    report.checks.push({ name: `${name}: harness ran to the end`, ok: false, detail: (err as Error).stack ?? String(err) });
    // After Ctrl-C the teardown pulls storage from under the run: those errors are expected.
    if (!isInterrupted()) note(`${name} failed: ${(err as Error).stack ?? String(err)}`);
  }
  report.finishedAt = new Date().toISOString();
  clearProgress();
  if (isInterrupted()) return report; // the signal handler cleans up and exits; no partial results
  printReport(report);
  const base = write(report, opts.stamp);
  note(`results: ${base}.json, ${base}.svg\n`);
  return report;
}

async function main(): Promise<number> {
  const stamp = timestamp();
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs(process.argv.slice(2), stamp);
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message) console.error(`${err.message}\n`);
      console.error(USAGE);
      return err.message ? 2 : 0;
    }
    throw err;
  }
  const { scenario, opts, batcherGiven } = parsed;
  opts.runner = resolveRunner(opts.runner);
  installSignalHandlers(clearProgress);
  const how = await prepareRunner(opts.runner);
  note(`bench ${scenario}: mode ${opts.mode}, runs ${opts.runs}; ${how}`);

  const reports: ScenarioReport<unknown>[] = [];
  if (scenario === 'smoke') {
    const report = newReport('smoke', opts);
    warnIfBusy();
    try {
      await smokeScenario(opts, report);
    } catch (err) {
      report.checks.push({ name: 'smoke: harness ran to the end', ok: false, detail: (err as Error).stack ?? String(err) });
      if (!isInterrupted()) note(`smoke failed: ${(err as Error).stack ?? String(err)}`);
    }
    report.finishedAt = new Date().toISOString();
    clearProgress();
    if (isInterrupted()) return 130;
    printReport(report);
    const base = write(report, stamp);
    note(`results: ${base}.json, ${base}.svg`);
    reports.push(report);
  } else if (scenario === 'all') {
    for (const s of ['seed', 'rush', 'steady', 'ceiling', 'memory'] as const) {
      if (!isInterrupted()) reports.push(await runScenario(s, opts, batcherGiven));
    }
    if (isInterrupted()) return 130;
    mkdirSync(RESULTS_DIR, { recursive: true });
    const base = join(RESULTS_DIR, `all-${opts.mode}-${stamp}`);
    writeFileSync(`${base}.json`, `${JSON.stringify(reports, null, 2)}\n`);
    writeFileSync(`${base}.svg`, renderChart(reports));
    note(`combined results: ${base}.json, ${base}.svg`);
  } else {
    reports.push(await runScenario(scenario, opts, batcherGiven));
  }
  if (isInterrupted()) return 130;

  const failed = reports.flatMap((r) => r.checks.filter((c) => !c.ok));
  if (failed.length > 0) {
    note(`\n${failed.length} harness check(s) failed:\n${failed.map((c) => `  - ${c.name}: ${c.detail.split('\n')[0]}`).join('\n')}`);
    return 1;
  }
  return 0;
}

main()
  .then(async (code) => {
    // After a signal the handler owns the cleanup and the exit.
    if (isInterrupted()) return;
    await runAllCleanups(() => undefined); // what is left: the build and ceiling directories
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    if (isInterrupted()) return;
    clearProgress();
    console.error(err);
    await runAllCleanups(note);
    process.exit(1);
  });
