import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './procs.js';

/**
 * The engine as a new user meets it: embedded mode on an empty data directory (initdb, migrations,
 * the demo data set), then a restart on the same directory, then `npm start` itself. Memory is
 * read from /proc: VmRSS / VmHWM of the engine, and the summed VmRSS of every process of the tree
 * (the engine with its initdb child; npm, its shell, the launcher and the engine for `npm start`),
 * sampled every 50 ms, whose maximum is the tree's peak.
 */

export interface StartFigures {
  /** Spawn to the first 200 on /health. */
  startupMs: number;
  /** Engine VmRSS 0.5 s after the first /health reply, MB. */
  rssMb: number | null;
  /** Engine VmHWM then (its peak so far), MB. */
  peakMb: number | null;
  /** Highest summed VmRSS of the process tree seen while starting, MB (50 ms samples). */
  treePeakMb: number;
}

export interface NpmStartFigures {
  startupMs: number;
  treePeakMb: number;
  /** Processes still running 0.5 s after the engine answered (and npm returned, if it does). */
  left: { pid: number; command: string; rssMb: number }[];
  leftRssMb: number;
}

export interface FrontDoorFigures {
  firstStart: StartFigures;
  restart: StartFigures;
  /** `npm start` on the data directory the first start created. */
  npmStart: NpmStartFigures | null;
  /** `npm start` on a new, empty data directory: what a new user's first `npm start` costs (tree peak). */
  npmFirstStart: NpmStartFigures | null;
}

const kb = (status: string, field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
const mb = (kbs: number): number => Math.round((kbs * 1024) / 1e5) / 10;

function status(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
}

function command(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '?';
  }
}

/** pid -> parent pid of every process. */
function parents(): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      out.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * Follows the tree under `root`: every sample adds the live descendants to `seen` (processes that
 * outlive their parent, as the engine outlives the launcher, stay counted) and sums their VmRSS.
 */
class TreeSampler {
  readonly seen = new Set<number>();
  peakKb = 0;
  private timer: NodeJS.Timeout;
  constructor(root: number) {
    this.seen.add(root);
    this.sample();
    this.timer = setInterval(() => this.sample(), 50);
  }
  sample(): void {
    const ppid = parents();
    for (const [pid, parent] of ppid) if (this.seen.has(parent)) this.seen.add(pid);
    // Grandchildren found in one pass only if listed after their parent: a second pass catches the rest.
    for (const [pid, parent] of ppid) if (this.seen.has(parent)) this.seen.add(pid);
    let total = 0;
    for (const pid of this.seen) {
      const s = status(pid);
      if (s && !/^State:\s+Z/m.test(s)) total += kb(s, 'VmRSS') || 0;
    }
    this.peakKb = Math.max(this.peakKb, total);
  }
  alive(): number[] {
    return [...this.seen].filter((pid) => {
      const s = status(pid);
      return s !== null && !/^State:\s+Z/m.test(s);
    });
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

async function untilHealthy(base: string, child: ChildProcess, timeoutMs: number, output: () => string, exitedOk = false): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null && !(exitedOk && child.exitCode === 0)) throw new Error(`exited with ${child.exitCode} before answering:\n${output().slice(-3000)}`);
    const ok = await fetch(`${base}/health`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
    if (ok) return;
    if (performance.now() > deadline) throw new Error(`no /health reply within ${timeoutMs} ms:\n${output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function spawnLogged(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString('utf8');
    if (out.length > 20_000) out = out.slice(-10_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return { child, output: () => out };
}

async function terminate(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + 60_000;
  while (status(pid) && !/^State:\s+Z/m.test(status(pid) ?? '') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (status(pid) && !/^State:\s+Z/m.test(status(pid) ?? '')) process.kill(pid, 'SIGKILL');
}

/** One start of `node <args>` on `dataDir`, measured; the engine is stopped (SIGTERM) afterwards. */
async function measuredStart(root: string, nodeArgs: string[], env: NodeJS.ProcessEnv): Promise<StartFigures> {
  const port = await freePort();
  const t0 = performance.now();
  const { child, output } = spawnLogged(process.execPath, nodeArgs, root, { ...env, PORT: String(port) });
  const tree = new TreeSampler(child.pid as number);
  try {
    await untilHealthy(`http://127.0.0.1:${port}`, child, 300_000, output);
    const startupMs = Math.round(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 500));
    tree.sample();
    const s = status(child.pid as number);
    return { startupMs, rssMb: s ? mb(kb(s, 'VmRSS')) : null, peakMb: s ? mb(kb(s, 'VmHWM')) : null, treePeakMb: mb(tree.peakKb) };
  } finally {
    tree.stop();
    await terminate(child.pid as number);
  }
}

/** `npm start` in `root` on env.DATA_DIR (existing or empty): its whole tree, and what it leaves running. */
async function measuredNpmStart(root: string, env: NodeJS.ProcessEnv): Promise<NpmStartFigures> {
  const port = await freePort();
  const t0 = performance.now();
  const { child, output } = spawnLogged('npm', ['start'], root, { ...env, PORT: String(port) });
  const tree = new TreeSampler(child.pid as number);
  try {
    await untilHealthy(`http://127.0.0.1:${port}`, child, 600_000, output, true);
    const startupMs = Math.round(performance.now() - t0);
    // A launcher that returns once the engine listens may still be exiting: give it a moment.
    await new Promise((r) => setTimeout(r, 500));
    tree.sample();
    const left = tree.alive().map((pid) => ({ pid, command: command(pid).slice(0, 120), rssMb: mb(kb(status(pid) ?? '', 'VmRSS')) }));
    return { startupMs, treePeakMb: mb(tree.peakKb), left, leftRssMb: Math.round(left.reduce((a, p) => a + p.rssMb, 0) * 10) / 10 };
  } finally {
    tree.stop();
    // Stop what is left, the engine last (npm and a launcher in the foreground pass SIGTERM on).
    for (const pid of tree.alive().reverse()) await terminate(pid);
  }
}

/**
 * Measures the front door of the checkout at `root`: first start and restart of the engine started
 * with `engineArgs` (node arguments, relative to `root`), then `npm start` when `npmStart` is set.
 */
export async function measureFrontDoor(opts: { root: string; engineArgs: string[]; engineEnv?: Record<string, string>; npmStart: boolean }): Promise<FrontDoorFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'enroll-bench-front-door-'));
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.engineEnv, DATA_DIR: join(dir, 'data'), HOST: '127.0.0.1', LOG_LEVEL: 'warn', ENGINE_PID_FILE: join(dir, 'engine.pid') };
  for (const k of ['DATABASE_URL', 'RABBITMQ_URL', 'DEMO_DATA', 'JWT_SECRET', 'NODE_OPTIONS', 'PGLITE_SHARED_BUFFERS_MB']) delete env[k];
  try {
    const firstStart = await measuredStart(opts.root, opts.engineArgs, env);
    const restart = await measuredStart(opts.root, opts.engineArgs, env);
    const npmStart = opts.npmStart ? await measuredNpmStart(opts.root, env) : null;
    const npmFirstStart = opts.npmStart ? await measuredNpmStart(opts.root, { ...env, DATA_DIR: join(dir, 'data-npm') }) : null;
    return { firstStart, restart, npmStart, npmFirstStart };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
