import type { BenchOptions, MemoryDatasets } from './common.js';
import type { Runner } from './procs.js';
import type { BatcherPlacement, Mode } from './system.js';

export const SCENARIOS = ['seed', 'rush', 'storm', 'steady', 'ceiling', 'memory', 'cluster', 'smoke', 'all'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export const USAGE = `usage: npm run bench -- <scenario> [options]

scenarios:
  seed      the Go service's workload: N students log in, then 7 enrolls each, all released at once
  rush      10,000 students at once on 20 sections (capacity 30, reserve 10); asserts 600/200/9,200
  storm     the seed workload with a new TCP connection per request (Connection: close), error
            bodies not read, beside bare Fastify under the same storm; kernel listen-queue counters
  steady    mixed enroll / drop / list at a fixed connection count for a fixed time
  ceiling   a bare Fastify server, with this harness's generator and with autocannon
  memory    engine RSS and startup time: 1,500 sections / 1,000 students, and 100k sections / 1M enrollments;
            embedded beside full (with --mode full), and embedded's front door: first start, restart, npm start
  cluster   the rush on 1 instance, on 3 with SHARDS=1 and on 3 with SHARDS=3 (one database and
            stream), then kill -9 of the first of three under load: throughput, latency and the
            failover gap (full mode)
  smoke     a tiny seed + steady + ceiling run for CI (non-zero exit if the harness breaks or a 5xx is seen)
  all       seed, rush, steady, ceiling and memory

options:
  --mode full|embedded      full: PostgreSQL + RabbitMQ (default); embedded: PGlite, in-process log
                            (smoke defaults to embedded)
  --runs N                  runs per figure; the median is reported (default 1)
  --batcher in-process|separate|both
                            full mode: batcher inside the engine or as a second child process
                            (default both; memory: in-process)
  --duration S              steady/ceiling measured seconds (default 10)
  --warmup S                steady/ceiling warm-up seconds, not measured (default 1)
  --connections N           steady/ceiling connections (default 64)
  --students N, --sections N  override the scenario's data set size
  --seed N                  PRNG seed for the sections drawn (default 1)
  --no-ceiling              skip the bare Fastify comparison
  --floor                   storm, seed, steady (full mode): also the floor server, bare Fastify
                            plus what SPEC's durability asks of every write (token check,
                            broker-confirmed group commit, batched PostgreSQL writes), under the
                            same load
  --datasets small|large|both
                            memory: 1,500 sections, 100k sections / 1M enrollments, or both
                            (default: small; large seeds 1M rows, minutes in embedded mode)
  --event-streams N         steady: measure each run twice, without and with N open student event
                            streams (GET /me/events, one per student, read continuously)
  --warm-rounds N           storm: first N unmeasured storms (enrolls, then drops of them) on the
                            same engine, so the figure is that of an engine that has served one
  --trace-compile           storm: run the engine with V8's --trace-opt and report the TurboFan
                            compile time (on V8's helper threads) during the load
  --fresh-connections       seed, rush: every request on a new TCP connection (Connection: close),
                            error bodies not read, as in storm
  --cpu-prof                profile the engine (and batcher) children; top-15 self time printed
  --runner tsx|dist|build   engine from source with tsx, from ./dist (npm run build), or compiled
                            into a temporary directory first (default: dist if built, else tsx)
  --env KEY=VALUE           extra engine environment, e.g. --env BATCH_MAX_EVENTS=500 (repeatable)

environment: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres),
             BENCH_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672)`;

export class UsageError extends Error {}

export function parseArgs(argv: string[], stamp: string): { scenario: Scenario; opts: BenchOptions; batcherGiven: boolean } {
  const args = [...argv];
  const scenario = args.shift() as Scenario | undefined;
  if (!scenario || scenario === ('--help' as Scenario) || scenario === ('-h' as Scenario)) throw new UsageError('');
  if (!SCENARIOS.includes(scenario)) throw new UsageError(`unknown scenario "${scenario}"`);
  const opts: BenchOptions = {
    mode: scenario === 'smoke' ? 'embedded' : 'full',
    runs: 1,
    batchers: ['in-process', 'separate'],
    runner: undefined as unknown as Runner,
    cpuProf: false,
    durationS: 10,
    warmupS: 1,
    connections: 64,
    students: null,
    sections: null,
    seed: 1,
    ceiling: true,
    floor: false,
    memoryDatasets: 'both',
    extraEnv: {},
    freshConnections: false,
    stamp,
  };
  let batcherGiven = false;
  const value = (flag: string): string => {
    const v = args.shift();
    if (v === undefined || v.startsWith('--')) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  const int = (flag: string, min: number): number => {
    const raw = value(flag);
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be a whole number >= ${min} (got "${raw}")`);
    return n;
  };
  const num = (flag: string, min: number): number => {
    const raw = value(flag);
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) throw new UsageError(`${flag} must be a number >= ${min} (got "${raw}")`);
    return n;
  };
  while (args.length > 0) {
    const raw = args.shift() as string;
    // --flag=value is the same as --flag value (split at the first "=").
    const [flag, inline] = raw.startsWith('--') && raw.includes('=') ? raw.split(/=(.*)/s, 2) : [raw, undefined];
    if (inline !== undefined) args.unshift(inline);
    switch (flag) {
      case '--mode': {
        const m = value(flag);
        if (m !== 'full' && m !== 'embedded') throw new UsageError('--mode must be full or embedded');
        opts.mode = m as Mode;
        break;
      }
      case '--runs':
        opts.runs = int(flag, 1);
        break;
      case '--batcher': {
        const b = value(flag);
        if (b === 'both') opts.batchers = ['in-process', 'separate'];
        else if (b === 'in-process' || b === 'separate') opts.batchers = [b as BatcherPlacement];
        else throw new UsageError('--batcher must be in-process, separate or both');
        batcherGiven = true;
        break;
      }
      case '--duration':
        opts.durationS = num(flag, 0.1);
        break;
      case '--warmup':
        opts.warmupS = num(flag, 0);
        break;
      case '--connections':
        opts.connections = int(flag, 1);
        break;
      case '--students':
        opts.students = int(flag, 1);
        break;
      case '--sections':
        opts.sections = int(flag, 1);
        break;
      case '--seed':
        opts.seed = int(flag, 0);
        break;
      case '--no-ceiling':
        opts.ceiling = false;
        break;
      case '--floor':
        opts.floor = true;
        break;
      case '--datasets': {
        const d = value(flag);
        if (d !== 'small' && d !== 'large' && d !== 'both') throw new UsageError('--datasets must be small, large or both');
        opts.memoryDatasets = d as MemoryDatasets;
        break;
      }
      case '--event-streams':
        opts.eventStreams = int(flag, 0);
        break;
      case '--fresh-connections':
        opts.freshConnections = true;
        break;
      case '--warm-rounds':
        opts.warmRounds = int(flag, 0);
        break;
      case '--trace-compile':
        opts.traceCompile = true;
        break;
      case '--cpu-prof':
        opts.cpuProf = true;
        break;
      case '--runner': {
        const r = value(flag);
        if (r !== 'tsx' && r !== 'dist' && r !== 'build') throw new UsageError('--runner must be tsx, dist or build');
        opts.runner = r;
        break;
      }
      case '--env': {
        const kv = value(flag);
        const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/s.exec(kv);
        if (!m) throw new UsageError(`--env needs KEY=VALUE (got "${kv}")`);
        opts.extraEnv[m[1] as string] = m[2] as string;
        break;
      }
      default:
        throw new UsageError(`unknown option "${raw}"`);
    }
  }
  return { scenario, opts, batcherGiven };
}
