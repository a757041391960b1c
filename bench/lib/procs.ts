import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { track, type Resource } from './cleanup.js';

/** Child processes under test (engine, batcher, bare Fastify), measured on their own. */

export const REPO_ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

/**
 * How `npm start` (scripts/start.mjs) starts the compiled engine: node arguments (V8 flags) and
 * environment defaults from scripts/engine-flags.json. The harness starts the engine the same way.
 */
const ALL_ENGINE_FLAGS = JSON.parse(readFileSync(join(REPO_ROOT, 'scripts/engine-flags.json'), 'utf8')) as {
  nodeArgs: string[];
  env: Record<string, string>;
  embedded: { nodeArgs: string[]; env: Record<string, string> };
};

/** Full mode's settings (as npm start gives them when DATABASE_URL is set). */
export const ENGINE_FLAGS = { nodeArgs: ALL_ENGINE_FLAGS.nodeArgs, env: ALL_ENGINE_FLAGS.env };

/** Embedded mode's settings: the full-mode ones plus engine-flags.json's `embedded` ones. */
export const EMBEDDED_ENGINE_FLAGS = {
  nodeArgs: [...ALL_ENGINE_FLAGS.nodeArgs, ...ALL_ENGINE_FLAGS.embedded.nodeArgs],
  env: { ...ALL_ENGINE_FLAGS.env, ...ALL_ENGINE_FLAGS.embedded.env },
};

/** How npm start starts the engine in a mode. */
export function engineFlags(mode: 'full' | 'embedded'): { nodeArgs: string[]; env: Record<string, string> } {
  return mode === 'embedded' ? EMBEDDED_ENGINE_FLAGS : ENGINE_FLAGS;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface MemoryReading {
  /** Resident set size now (VmRSS), MB (10^6 bytes). */
  rssMb: number;
  /** Peak resident set size so far (VmHWM), MB. */
  peakRssMb: number;
}

/** Reads /proc/<pid>/status; null when the process is gone. */
export function readMemory(pid: number): MemoryReading | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMb: Math.round((kb('VmRSS') * 1024) / 1e5) / 10, peakRssMb: Math.round((kb('VmHWM') * 1024) / 1e5) / 10 };
  } catch {
    return null;
  }
}

const CLK_TCK = 100; // USER_HZ on every Linux the harness targets

/** CPU seconds (user + system) the process has used so far, from /proc/<pid>/stat. */
export function readCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the ")" that ends the command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Where a process's threads spent their time (Linux `/proc/<pid>/task/<tid>/schedstat`: time on
 * a core and time runnable but waiting for one, in ns): the event loop's thread apart from the
 * others (V8's compiler and GC helpers, libuv's pool, worker threads). Whether a slow storm is the
 * event loop's own work or the event loop waiting for a core others hold; null off Linux.
 */
export interface ThreadTimes {
  /** The main (event loop) thread: seconds on a core, seconds runnable but not running. */
  mainRunS: number;
  mainWaitS: number;
  /** Every other thread: seconds on a core, seconds runnable but not running. */
  othersRunS: number;
  othersWaitS: number;
  /** Other threads' seconds on a core by thread (`name#tid`, the name from `/proc/.../comm`). */
  othersByName?: Record<string, number>;
}

export function readThreadTimes(pid: number): ThreadTimes | null {
  try {
    const t: ThreadTimes = { mainRunS: 0, mainWaitS: 0, othersRunS: 0, othersWaitS: 0, othersByName: {} };
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      let fields: string[];
      try {
        fields = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ');
      } catch {
        continue; // the thread ended meanwhile
      }
      const run = Number(fields[0]) / 1e9;
      const wait = Number(fields[1]) / 1e9;
      if (Number(tid) === pid) {
        t.mainRunS += run;
        t.mainWaitS += wait;
      } else {
        t.othersRunS += run;
        t.othersWaitS += wait;
        let name = '?';
        try {
          name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
        } catch {
          // the thread ended meanwhile
        }
        const byName = t.othersByName as Record<string, number>;
        byName[`${name}#${tid}`] = run;
      }
    }
    return t;
  } catch {
    return null;
  }
}

/** What the threads did between two readings (threads that ended meanwhile are not counted). */
export function threadTimesDelta(a: ThreadTimes | null, b: ThreadTimes | null): ThreadTimes | null {
  if (a === null || b === null) return null;
  const r = (x: number) => Math.round(x * 100) / 100;
  const byName: Record<string, number> = {};
  for (const [name, s] of Object.entries(b.othersByName ?? {})) byName[name] = r(s - (a.othersByName?.[name] ?? 0));
  return { mainRunS: r(b.mainRunS - a.mainRunS), mainWaitS: r(b.mainWaitS - a.mainWaitS), othersRunS: r(b.othersRunS - a.othersRunS), othersWaitS: r(b.othersWaitS - a.othersWaitS), othersByName: byName };
}

/**
 * How the project's entry points are started: `tsx` runs the sources, `dist` the build in ./dist
 * (`npm run build`), `build` compiles the working tree into a temporary directory first, as the
 * Dockerfile's build stage does (tsc, then the non-TypeScript assets copied beside the output),
 * so production-like figures need no change to the checkout.
 */
/**
 * The whole machine's CPU (from /proc/stat, in seconds summed over CPUs) and what the shared
 * services used (RabbitMQ's beam.smp, every postgres process), so a run can say who had the cores.
 * The services' figures include work for anything else using them at the time.
 */
export interface MachineCpu {
  busy: number;
  idle: number;
  steal: number;
  rabbitmq: number;
  postgres: number;
}

export function readMachineCpu(): MachineCpu {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  let rabbitmq = 0;
  let postgres = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let comm: string;
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (comm === 'beam.smp') rabbitmq += readCpuSeconds(Number(pid)) || 0;
    else if (comm === 'postgres' || comm.startsWith('postgres')) postgres += readCpuSeconds(Number(pid)) || 0;
  }
  return {
    busy: (user + nice + system + irq + softirq) / CLK_TCK,
    idle: (idle + iowait) / CLK_TCK,
    steal: steal / CLK_TCK,
    rabbitmq,
    postgres,
  };
}

export type Runner = 'tsx' | 'dist' | 'build';

let distRoot: string | null = null;

export function resolveRunner(requested: Runner | undefined): Runner {
  if (requested) return requested;
  return existsSync(join(REPO_ROOT, 'dist/src/main.js')) ? 'dist' : 'tsx';
}

/** Compiles for `build` (once per harness process); returns what to log. */
export async function prepareRunner(runner: Runner): Promise<string> {
  if (runner === 'tsx') return 'engine from source (node --import tsx)';
  if (runner === 'dist') {
    distRoot = join(REPO_ROOT, 'dist');
    return 'engine from ./dist (node dist/src/main.js)';
  }
  const root = mkdtempSync(join(tmpdir(), 'enroll-bench-build-'));
  track(`build directory ${root}`, async () => rmSync(root, { recursive: true, force: true }));
  const t0 = performance.now();
  const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', join(root, 'dist')], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (!existsSync(join(root, 'dist/src/main.js'))) throw new Error(`tsc produced no dist/src/main.js:\n${r.stdout}${r.stderr}`);
  const warn = r.status !== 0 ? ` (tsc reported errors but emitted: ${r.stdout.split('\n')[0]})` : '';
  // Assets beside the compiled files, the migrations and the dependencies, as in the image.
  copyAssets(join(REPO_ROOT, 'src'), join(root, 'dist/src'));
  symlinkSync(join(REPO_ROOT, 'sql'), join(root, 'sql'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  copyFileSync(join(REPO_ROOT, 'package.json'), join(root, 'package.json'));
  distRoot = join(root, 'dist');
  return `engine compiled into ${root} in ${Math.round(performance.now() - t0)} ms${warn}`;
}

function copyAssets(from: string, to: string): void {
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory()) copyAssets(src, dst);
    else if (!e.name.endsWith('.ts')) {
      mkdirSync(to, { recursive: true });
      copyFileSync(src, dst);
    }
  }
}

export function entryArgs(runner: Runner, source: string): string[] {
  if (runner === 'tsx') return ['--import', 'tsx', source];
  if (!distRoot) throw new Error('prepareRunner() was not called');
  const built = join(distRoot, source.replace(/\.ts$/, '.js'));
  if (!existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\`, or use --runner tsx or build`);
  return [built];
}

/** TurboFan work seen in a child's V8 trace (`--trace-opt --trace-deopt`) over a window. */
export interface CompileFigures {
  /** Sum of the three phases V8 reports per job (prepare, execute on a helper thread, finalize). */
  ms: number;
  jobs: number;
  /** Deoptimisations (optimised code thrown away). */
  bailouts: number;
}

const COMPILED = /^\[completed compiling .* took ([\d.]+), ([\d.]+), ([\d.]+) ms\]/;
const V8_TRACE = /^\[(marking|compiling|completed|bailout|deoptimiz|optimizing|found optimized|not marking)/;

export class Child {
  readonly proc: ChildProcess;
  /** With `recordCompiles`: when each TurboFan job completed (performance.now()) and its ms, and each bailout. */
  private compiles: { at: number; ms: number }[] = [];
  private bailouts: number[] = [];
  private partial = '';
  readonly startedAt = performance.now();
  private tail: string[] = [];
  readonly exited: Promise<number | null>;
  exitCode: number | null | undefined = undefined;
  /** performance.now() when the process exited. */
  exitedAt = NaN;
  private readonly resource: Resource;

  constructor(
    readonly name: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    opts: { recordCompiles?: boolean } = {},
  ) {
    this.proc = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        this.tail.push(line);
        if (this.tail.length > 200) this.tail.shift();
      }
    };
    // V8's trace goes to stdout, a line possibly split over two chunks; it is counted, not kept.
    const record = (chunk: Buffer) => {
      const at = performance.now();
      const lines = (this.partial + chunk.toString('utf8')).split('\n');
      this.partial = lines.pop() ?? '';
      const rest: string[] = [];
      for (const line of lines) {
        const m = COMPILED.exec(line);
        if (m) this.compiles.push({ at, ms: Number(m[1]) + Number(m[2]) + Number(m[3]) });
        else if (line.startsWith('[bailout')) this.bailouts.push(at);
        else if (!V8_TRACE.test(line)) rest.push(line);
      }
      if (rest.length > 0) keep(Buffer.from(rest.join('\n')));
    };
    this.proc.stdout?.on('data', opts.recordCompiles ? record : keep);
    this.proc.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.exitedAt = performance.now();
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(this.exitCode);
      });
      this.proc.once('error', (err) => {
        this.tail.push(`spawn error: ${err.message}`);
        this.exitCode = -1;
        resolve(-1);
      });
    });
    this.resource = track(`${name} (pid ${this.proc.pid})`, () => this.terminate());
  }

  get pid(): number {
    return this.proc.pid as number;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** The child's last output lines (its logs at LOG_LEVEL=warn: warnings and errors). */
  output(): string[] {
    return [...this.tail];
  }

  /** TurboFan jobs completed and bailouts between two performance.now() times (needs `recordCompiles`). */
  compileBetween(start: number, end: number): CompileFigures {
    const jobs = this.compiles.filter((c) => c.at >= start && c.at <= end);
    return {
      ms: Math.round(jobs.reduce((a, c) => a + c.ms, 0)),
      jobs: jobs.length,
      bailouts: this.bailouts.filter((t) => t >= start && t <= end).length,
    };
  }

  /** Lines that look like error logs (pino level >= 50) or uncaught errors. */
  errorLines(): string[] {
    return this.tail.filter((l) => /"level":(50|60)/.test(l) || /^\s*(Error|TypeError|RangeError)\b/.test(l));
  }

  /** SIGTERM (graceful: the engine flushes and, with --cpu-prof, writes its profile), then SIGKILL. */
  private async terminate(timeoutMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.running) this.proc.kill('SIGKILL');
    }, timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  stop(timeoutMs?: number): Promise<void> {
    return timeoutMs === undefined ? this.resource.release() : this.terminate(timeoutMs).then(() => this.resource.release());
  }
}

/**
 * Polls `url` until it answers 200; returns the milliseconds since the child was spawned. Fails
 * with the child's output when it exits first or the time is up.
 */
export async function waitForHttp(child: Child, url: string, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (!child.running) {
      throw new Error(`${child.name} exited (code ${child.exitCode}) before answering ${url}:\n  ${child.output().slice(-30).join('\n  ')}`);
    }
    const ok = await fetch(url, { signal: AbortSignal.timeout(1000) })
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) return performance.now() - child.startedAt;
    if (performance.now() > deadline) {
      throw new Error(`${child.name} did not answer ${url} within ${timeoutMs} ms:\n  ${child.output().slice(-30).join('\n  ')}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
