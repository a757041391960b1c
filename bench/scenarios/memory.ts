import { check, profileSummaries, ratio, variantsOf, type BenchOptions, type ScenarioReport, type TargetCheck } from '../lib/common.js';
import { closeAll, openConnections } from '../lib/http.js';
import { measureFrontDoor, type FrontDoorFigures } from '../lib/front-door.js';
import { EMBEDDED_ENGINE_FLAGS, ENGINE_FLAGS, readMemory, REPO_ROOT } from '../lib/procs.js';
import { spawnSync } from 'node:child_process';
import { note } from '../lib/progress.js';
import { Ledger, type SeedSpec } from '../lib/seed.js';
import { fmt, medianDeep } from '../lib/stats.js';
import { startCeiling, System } from '../lib/system.js';
import { loginAll, runSeedLoad, seedPlan } from '../lib/workloads.js';
import { harnessChecks, PER_STUDENT, seedSpec } from './seed.js';

/**
 * `memory`: the engine's resident memory (VmRSS of the child, and its peak VmHWM) right after
 * start and after a load, and its startup time, for two data sets:
 * - 1,500 sections / 1,000 students, loaded with the seed workload;
 * - 100,000 sections with 1,000,000 enrollments seeded straight into the database (100,000
 *   students x 10 courses), then 1,000 of those students log in and send 7 enrolls each.
 * Embedded mode is measured beside full mode (`--mode full`, the default, runs both; `--mode
 * embedded` only embedded). For embedded mode, the front door as well (bench/lib/front-door.ts,
 * always the compiled build in ./dist, built when stale): the first start on an empty directory
 * with the demo data (its peak), a restart, and what `npm start` leaves running.
 * The bare Fastify server's RSS and startup time are the ceiling.
 */

export interface MemoryFigures {
  dataset: string;
  sections: number;
  students: number;
  seededEnrollments: number;
  seedDbMs: number;
  startupMs: number;
  rssAfterStartMb: number | null;
  rssAfterLoadMb: number | null;
  peakRssMb: number | null;
  batcherRssAfterLoadMb: number | null;
  load: { requests: number; reqPerSec: number; wallMs: number; ok: number; errorCount: number; status5xx: number };
  catchUpMs: number | null;
  ceiling: { rssMb: number | null; startupMs: number } | null;
  /** Engine RSS after load over the bare Fastify server's RSS. */
  ratioToCeiling: number | null;
  /** Embedded mode, small data set: first start (demo data), restart and `npm start`; null otherwise. */
  frontDoor: FrontDoorFigures | null;
}

interface Dataset {
  name: string;
  spec: SeedSpec;
  loadStudents: number;
  targetMb: number;
}

function datasets(opts: BenchOptions): Dataset[] {
  const small: Dataset = { name: '1,500 sections / 1,000 students', spec: seedSpec(opts), loadStudents: opts.students ?? 1000, targetMb: 100 };
  const big: Dataset = {
    name: '100,000 sections / 1,000,000 enrollments',
    spec: {
      students: 100_000,
      sections: 100_000,
      groupsPerCourse: 2,
      capacity: 30,
      reserveCapacity: 10,
      units: 2,
      maxUnits: 40,
      remainingActions: 100,
      enrollmentsPerStudent: 10,
    },
    loadStudents: 1000,
    targetMb: 1000,
  };
  const wanted = opts.memoryDatasets;
  const sets: Dataset[] = [];
  if (wanted !== 'large') sets.push(small);
  if (wanted !== 'small') sets.push(big);
  return sets;
}

export async function memoryScenario(opts: BenchOptions, report: ScenarioReport<MemoryFigures>): Promise<void> {
  report.notes.push(
    'RSS = VmRSS of the engine child process (MB = 10^6 bytes), read 0.5 s after it first answered /health and after the load; peak = VmHWM. ' +
      'Startup = spawn to the first /health reply (migrations, loading every row, listening).',
  );
  report.notes.push(
    `Engine started as npm start starts it (scripts/engine-flags.json): embedded node ${EMBEDDED_ENGINE_FLAGS.nodeArgs.join(' ')}, ${Object.entries(EMBEDDED_ENGINE_FLAGS.env).map(([k, v]) => `${k}=${v}`).join(' ')}; ` +
      `full node ${ENGINE_FLAGS.nodeArgs.join(' ')}, ${Object.entries(ENGINE_FLAGS.env).map(([k, v]) => `${k}=${v}`).join(' ')}. ` +
      'Front door (embedded): first start = empty data directory with the demo data (the shipped empty PGlite directory, migrations, 1,500 sections), peak = VmHWM of the engine, ' +
      'tree peak = highest summed VmRSS of the engine and its children (npm start: npm, sh, launcher, engine, and an initdb child if one runs), sampled every 50 ms; ' +
        'npm start is measured on the directory the first start created and on a new, empty one.',
  );
  if (opts.memoryDatasets !== 'both') report.notes.push(`Data sets measured: ${opts.memoryDatasets} only (--datasets).`);
  // Embedded beside full: a full-mode run measures embedded mode too.
  const variants = opts.mode === 'full' ? [...variantsOf({ ...opts, mode: 'embedded' }), ...variantsOf(opts)] : variantsOf(opts);
  for (const ds of datasets(opts)) {
    for (const v of variants) {
      const runs: MemoryFigures[] = [];
      for (let r = 1; r <= opts.runs; r++) {
        const run = `memory-${ds.spec.sections}-${v.mode}${v.mode === 'full' ? `-${v.batcher}` : ''}-${opts.stamp}-run${r}`;
        runs.push(await memoryOnce(opts, v, ds, run, report));
      }
      const m = medianDeep(runs);
      const targets: TargetCheck[] = [
        check('RSS after load', `< ${fmt(ds.targetMb)} MB`, `${m.rssAfterLoadMb} MB (after start ${m.rssAfterStartMb} MB, peak ${m.peakRssMb} MB)`,
          m.rssAfterLoadMb !== null ? m.rssAfterLoadMb < ds.targetMb : null),
        check('startup time (no target)', '-', `${fmt(m.startupMs)} ms`, null),
      ];
      if (v.mode === 'embedded' && ds.spec.sections < 100_000) {
        targets.push(
          check('embedded RSS after start and after load (issue 17)', '< 250 MB', `${m.rssAfterStartMb} / ${m.rssAfterLoadMb} MB`,
            m.rssAfterStartMb !== null && m.rssAfterLoadMb !== null ? m.rssAfterStartMb < 250 && m.rssAfterLoadMb < 250 : null),
        );
      }
      const fd = m.frontDoor;
      if (fd) {
        targets.push(
          check('first start (demo data): peak', '< 300 MB', `${fd.firstStart.peakMb} MB (tree ${fd.firstStart.treePeakMb} MB), ${fmt(fd.firstStart.startupMs)} ms`,
            fd.firstStart.peakMb !== null ? fd.firstStart.peakMb < 300 : null),
          check('after first start / after restart', '< 250 MB', `${fd.firstStart.rssMb} / ${fd.restart.rssMb} MB (restart peak ${fd.restart.peakMb} MB)`,
            fd.firstStart.rssMb !== null && fd.restart.rssMb !== null ? fd.firstStart.rssMb < 250 && fd.restart.rssMb < 250 : null),
        );
        if (fd.npmStart) {
          targets.push(
            check('npm start: processes left / their RSS', '1 (the engine)', `${fd.npmStart.left.length} / ${fd.npmStart.leftRssMb} MB; tree peak while starting ${fd.npmStart.treePeakMb} MB`,
              fd.npmStart.left.length === 1),
          );
        }
        if (fd.npmFirstStart) {
          targets.push(
            check('npm start on an empty data directory: tree peak', '< 300 MB', `${fd.npmFirstStart.treePeakMb} MB; ${fd.npmFirstStart.left.length} process(es) left, ${fd.npmFirstStart.leftRssMb} MB`,
              fd.npmFirstStart.treePeakMb < 300),
          );
        }
      }
      report.variants.push({ variant: `${ds.name} — ${v.name}`, runs, median: m, targets });
    }
  }
}

async function memoryOnce(
  opts: BenchOptions,
  v: ReturnType<typeof variantsOf>[number],
  ds: Dataset,
  run: string,
  report: ScenarioReport<MemoryFigures>,
): Promise<MemoryFigures> {
  const sys = new System({ mode: v.mode, batcher: v.batcher, spec: ds.spec, runner: opts.runner, cpuProfile: opts.cpuProf ? run : null, extraEnv: opts.extraEnv });
  note(`[${run}] seeding and starting: ${sys.label}, ${ds.name}`);
  await sys.start();
  let f: MemoryFigures;
  let window: { start: number; end: number } | null = null;
  try {
    await new Promise((r) => setTimeout(r, 500));
    const afterStart = sys.memory().engine;
    note(`[${run}] engine up in ${fmt(sys.startupMs)} ms (database seeded in ${fmt(sys.seed?.ms ?? 0)} ms); RSS ${afterStart?.rssMb} MB`);
    const target = { host: sys.host, port: sys.port };
    const students = Math.min(ds.loadStudents, ds.spec.students);
    const conns = await openConnections(target.host, target.port, students);
    try {
      const login = await loginAll({ label: `${run} login`, target, conns, students, owner: (i) => i });
      const ledger = new Ledger((await sys.counts()) ?? { rows: ds.spec.students * ds.spec.enrollmentsPerStudent, checksum: '0' });
      const plan = seedPlan({ ...ds.spec, students }, PER_STUDENT, opts.seed);
      const start = performance.now();
      const { lastReplyAt, ...load } = await runSeedLoad({ label: `${run} enroll`, target, conns, tokens: login.tokens, plan, ledger });
      window = { start, end: lastReplyAt };
      const catchUp = await sys.catchUp(ledger, lastReplyAt);
      await new Promise((r) => setTimeout(r, 500));
      const mem = sys.memory();
      report.checks.push(...harnessChecks(run, load));
      if (v.mode === 'full') report.checks.push({ name: `${run}: database caught up`, ok: catchUp.caughtUp, detail: `${catchUp.ms} ms` });
      f = {
        dataset: ds.name,
        sections: ds.spec.sections,
        students: ds.spec.students,
        seededEnrollments: ds.spec.students * ds.spec.enrollmentsPerStudent,
        seedDbMs: sys.seed?.ms ?? 0,
        startupMs: Math.round(sys.startupMs),
        rssAfterStartMb: afterStart?.rssMb ?? null,
        rssAfterLoadMb: mem.engine?.rssMb ?? null,
        peakRssMb: mem.engine?.peakRssMb ?? null,
        batcherRssAfterLoadMb: mem.batcher?.rssMb ?? null,
        load: { requests: load.requests, reqPerSec: load.reqPerSec, wallMs: load.wallMs, ok: load.ok, errorCount: load.errorCount, status5xx: load.status5xx },
        catchUpMs: catchUp.byConstruction ? 0 : catchUp.ms,
        ceiling: null,
        ratioToCeiling: null,
        frontDoor: null,
      };
    } finally {
      closeAll(conns);
    }
  } finally {
    const profiles = await sys.stop();
    if (opts.cpuProf) report.profiles.push(profileSummaries(run, profiles, window));
  }
  if (v.mode === 'embedded' && ds.spec.sections < 100_000) {
    note(`[${run}] front door: first start with the demo data, restart, npm start (compiled build in ./dist)`);
    const built = spawnSync(process.execPath, ['-e', "import('./scripts/build.mjs').then((m) => m.build({ ifStale: true }))"], { cwd: REPO_ROOT, encoding: 'utf8' });
    if (built.status !== 0) throw new Error(`building dist/ failed:\n${built.stdout}${built.stderr}`);
    f.frontDoor = await measureFrontDoor({ root: REPO_ROOT, engineArgs: [...EMBEDDED_ENGINE_FLAGS.nodeArgs, 'dist/src/main.js'], engineEnv: { ...EMBEDDED_ENGINE_FLAGS.env }, npmStart: true });
    const fd = f.frontDoor;
    note(
      `[${run}] front door: first start peak ${fd.firstStart.peakMb} MB (tree ${fd.firstStart.treePeakMb} MB), ${fd.firstStart.rssMb} MB after; ` +
        `restart ${fd.restart.rssMb} MB (peak ${fd.restart.peakMb} MB); npm start leaves ${fd.npmStart?.left.length} process(es), ${fd.npmStart?.leftRssMb} MB, tree peak ${fd.npmStart?.treePeakMb} MB; ` +
        `npm start on an empty directory: tree peak ${fd.npmFirstStart?.treePeakMb} MB`,
    );
  }
  if (opts.ceiling) {
    const c = await startCeiling(opts.runner);
    try {
      await new Promise((r) => setTimeout(r, 500));
      f.ceiling = { rssMb: readMemory(c.child.pid)?.rssMb ?? null, startupMs: Math.round(c.startupMs) };
      f.ratioToCeiling = f.rssAfterLoadMb !== null && f.ceiling.rssMb ? ratio(f.rssAfterLoadMb, f.ceiling.rssMb) : null;
    } finally {
      await c.child.stop();
    }
  }
  note(
    `[${run}] ${ds.name}: startup ${fmt(f.startupMs)} ms; engine RSS ${f.rssAfterStartMb} MB after start, ${f.rssAfterLoadMb} MB after ` +
      `${fmt(f.load.requests)} enrolls (${fmt(f.load.reqPerSec)} req/s), peak ${f.peakRssMb} MB` +
      (f.batcherRssAfterLoadMb !== null ? `; batcher ${f.batcherRssAfterLoadMb} MB` : '') +
      (f.ceiling ? `; bare Fastify ${f.ceiling.rssMb} MB, starts in ${f.ceiling.startupMs} ms` : ''),
  );
  return f;
}
