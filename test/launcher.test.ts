import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './support/fault-harness.js';
import { json } from './support/http-json.js';

/**
 * The front door: `npm start` (scripts/start.mjs) builds dist/ when stale, starts the compiled
 * engine with the V8 flag and allocator setting of scripts/engine-flags.json, and leaves only the
 * engine running; `npm stop` shuts it down cleanly and what it acknowledged is there after the
 * next start. `--foreground` keeps the launcher, which passes Ctrl-C (SIGINT) on once.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'enroll-launcher-'));
const pidFile = join(work, 'engine.pid');
const started: number[] = [];

after(() => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  rmSync(work, { recursive: true, force: true });
});

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Every live process whose session is `sid` (a session the engine leads holds what it started). */
const inSession = (sid: number): number[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return f[0] !== 'Z' && Number(f[3]) === sid;
      } catch {
        return false;
      }
    })
    .map(Number);

interface Run {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function run(cmd: string, args: string[], env: Record<string, string>): Run {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', ENGINE_PID_FILE: pidFile, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  // 'exit', not 'close': the engine keeps the pipes open after the launcher has gone.
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('npm start / npm stop', () => {
  it('leaves the compiled engine as the only process, stops it cleanly, and keeps what it acknowledged', { timeout: 600_000 }, async () => {
    const port = await freePort();
    const env = { DATA_DIR: join(work, 'data'), PORT: String(port) };
    const base = `http://127.0.0.1:${port}`;

    const start = run('npm', ['start'], env);
    const code = await start.exited;
    assert.equal(code, 0, `npm start failed:\n${start.output()}`);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    started.push(pid);
    assert.ok(alive(pid), 'the engine runs after npm start has returned');
    assert.match(start.output(), new RegExp(`engine running as pid ${pid}`));

    // One process: the engine leads its own session and nothing else is in it (no npm, no launcher,
    // no tsx, no initdb child); npm and the launcher have exited.
    assert.deepEqual(inSession(pid), [pid], 'processes left in the engine session');
    assert.equal(alive(start.child.pid as number), false, 'npm has exited');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    // Every V8 flag and allocator setting of scripts/engine-flags.json (docs/memory.md).
    const all = JSON.parse(readFileSync(join(ROOT, 'scripts', 'engine-flags.json'), 'utf8')) as {
      nodeArgs: string[];
      env: Record<string, string>;
      embedded: { nodeArgs: string[]; env: Record<string, string> };
    };
    // No DATABASE_URL here: embedded mode, so the `embedded` settings too.
    const flags = { nodeArgs: [...all.nodeArgs, ...all.embedded.nodeArgs], env: { ...all.env, ...all.embedded.env } };
    for (const a of flags.nodeArgs) assert.ok(cmdline.includes(a), `${a} in ${cmdline.join(' ')}`);
    assert.ok(cmdline.some((a) => a.endsWith('dist/src/main.js')), cmdline.join(' '));
    assert.ok(!cmdline.some((a) => a.includes('tsx')), 'no TypeScript loader');
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    for (const [k, v] of Object.entries(flags.env)) assert.ok(environ.includes(`${k}=${v}`), `${k}=${v} in the engine's environment`);
    assert.deepEqual(flags.nodeArgs, ['--liftoff-only', '--max-semi-space-size=4']);
    assert.deepEqual(flags.env, { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' });
    // The compiled build carries the ready-made data directory: no initdb on the first start (docs/memory.md).
    assert.match(start.output(), /new PGlite data directory created from the shipped template/);

    const login = await json(base, 'POST', '/login', { user: 40000001, password: 'student-pass', staff: false });
    assert.equal(login.status, 200);
    const token = (login.body as { token: string }).token;
    assert.equal((await json(base, 'PUT', '/student/course', { course_id: 40101, group_id: 1 }, token)).status, 204);

    const stop = run('npm', ['stop'], env);
    assert.equal(await stop.exited, 0, stop.output());
    assert.equal(alive(pid), false, 'the engine has exited when npm stop returns');
    assert.equal(existsSync(pidFile), false, 'the pid file is removed');
    assert.match(start.output(), /"signal":"SIGTERM".*shutting down/);
    assert.match(start.output(), /"msg":"stopped"/, 'a clean shutdown');

    // The next start (no build now) serves what was acknowledged before the stop.
    const again = run('npm', ['start'], env);
    assert.equal(await again.exited, 0, again.output());
    assert.doesNotMatch(again.output(), /building dist/, 'dist/ is up to date: no second build');
    const pid2 = Number(readFileSync(pidFile, 'utf8').trim());
    started.push(pid2);
    const relogin = await json(base, 'POST', '/login', { user: 40000001, password: 'student-pass', staff: false });
    const mine = await json(base, 'GET', '/student/course', undefined, (relogin.body as { token: string }).token);
    assert.equal(mine.status, 200);
    assert.match(JSON.stringify(mine.body), /40101/, 'the enrollment acknowledged before npm stop is there');
    const stop2 = run('npm', ['stop'], env);
    assert.equal(await stop2.exited, 0, stop2.output());
    assert.equal(alive(pid2), false);
  });

  it('a second npm start on a running engine\'s DATA_DIR fails and leaves the first one stoppable with npm stop', { timeout: 600_000 }, async () => {
    const port = await freePort();
    const env = { DATA_DIR: join(work, 'data-two'), PORT: String(port), DEMO_DATA: 'false' };
    const first = run('npm', ['start'], env);
    assert.equal(await first.exited, 0, `npm start failed:\n${first.output()}`);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    started.push(pid);
    assert.ok(alive(pid));

    // The same directory, another port: the second engine refuses the held directory (exit 3).
    const second = run('npm', ['start'], { ...env, PORT: String(await freePort()) });
    const code = await second.exited;
    assert.notEqual(code, 0, `the second npm start must fail:\n${second.output()}`);
    assert.match(second.output(), /engine exited with status 3/, second.output());
    assert.equal(readFileSync(pidFile, 'utf8').trim(), String(pid), 'the pid file still names the first engine');
    assert.ok(alive(pid), 'the first engine still runs');
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);

    const stop = run('npm', ['stop'], env);
    assert.equal(await stop.exited, 0, stop.output());
    assert.equal(alive(pid), false, 'npm stop stopped the first engine');
    assert.equal(existsSync(pidFile), false);
  });

  it('a foreground engine started beside a recorded one (another DATA_DIR and PORT) leaves that record alone: npm stop still stops the first', { timeout: 600_000 }, async () => {
    const env = { DATA_DIR: join(work, 'data-rec'), PORT: String(await freePort()), DEMO_DATA: 'false' };
    const first = run('npm', ['start'], env);
    assert.equal(await first.exited, 0, `npm start failed:\n${first.output()}`);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    started.push(pid);
    const port2 = await freePort();
    const fg = run(process.execPath, ['scripts/start.mjs', '--foreground'], { DATA_DIR: join(work, 'data-rec-2'), PORT: String(port2), DEMO_DATA: 'false' });
    // Whatever happens below, the foreground launcher passes a Ctrl-C on to its engine at the end.
    after(() => void (fg.child.exitCode === null && fg.child.signalCode === null && fg.child.kill('SIGINT')));
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port2}/health`).catch(() => null))?.status === 200, 'the second engine to answer');
    await waitFor(() => /another engine started by npm start is recorded/.test(fg.output()), 'the launcher to say the first stays recorded');
    assert.equal(readFileSync(pidFile, 'utf8').trim(), String(pid), 'the record still names the first engine');
    fg.child.kill('SIGINT');
    assert.equal(await fg.exited, 0, fg.output());
    assert.equal(readFileSync(pidFile, 'utf8').trim(), String(pid), 'and still does after the second one stopped (probe T: it was removed)');
    const stop = run('npm', ['stop'], env);
    assert.equal(await stop.exited, 0, stop.output());
    assert.equal(alive(pid), false, 'npm stop stopped the first engine');
  });

  it('--foreground passes SIGINT on to the engine once and exits with its status', { timeout: 300_000 }, async () => {
    const port = await freePort();
    const env = { DATA_DIR: join(work, 'data-fg'), PORT: String(port), DEMO_DATA: 'false' };
    const fg = run(process.execPath, ['scripts/start.mjs', '--foreground'], env);
    await waitFor(() => existsSync(pidFile), 'the engine to be ready');
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    started.push(pid);
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    assert.ok(alive(fg.child.pid as number), 'the launcher stays in the foreground');
    // A terminal's Ctrl-C and npm's forwarding both deliver SIGINT: the second must not cut the shutdown short.
    fg.child.kill('SIGINT');
    fg.child.kill('SIGINT');
    assert.equal(await fg.exited, 0, fg.output());
    assert.equal(alive(pid), false);
    assert.match(fg.output(), /"signal":"SIGINT".*shutting down/);
    assert.match(fg.output(), /"msg":"stopped"/);
  });
});
