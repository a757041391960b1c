// `npm start`: the front door. Builds dist/ when it is missing or older than the sources, then starts
// the compiled engine as a child with the V8 flags and environment of scripts/engine-flags.json
// (`--liftoff-only` cannot go through NODE_OPTIONS), and leaves nothing else running:
//
// - default: waits until the engine is listening (it says so over the IPC channel), writes its pid
//   to .engine.pid, and exits 0, so npm exits too and the engine is the only process left. It runs
//   in its own session (no controlling terminal): stop it with `npm stop` (SIGTERM; a clean
//   shutdown) or `kill <pid>`. Until it is ready, SIGINT/SIGTERM/SIGHUP sent to this launcher are
//   passed on to the engine and the launcher exits with the engine's status.
// - `npm start -- --foreground`: stays in the foreground until the engine exits, passing signals
//   on (Ctrl-C stops the engine cleanly), and exits with the engine's status. npm and this
//   launcher then stay resident beside the engine (see docs/memory.md for what they cost).
//
// Arguments after `--foreground` are not taken; configuration is the environment (and .env).
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import { build, PID_FILE, ROOT, staleReason } from './build.mjs';
import { engineStart } from './engine-args.mjs';
const say = (text) => process.stderr.write(`[npm start] ${text}\n`);

const args = process.argv.slice(2);
const unknown = args.filter((a) => a !== '--foreground');
if (unknown.length > 0) {
  say(`unknown argument(s): ${unknown.join(' ')} (only --foreground is taken; configure with environment variables or .env)`);
  process.exit(2);
}
const foreground = args.includes('--foreground');

const stale = staleReason();
if (stale) {
  say(`building dist/ (${stale}) ...`);
  const t0 = performance.now();
  try {
    build({ ifStale: true });
  } catch (err) {
    say(err.message);
    process.exit(1);
  }
  say(`built in ${Math.round(performance.now() - t0)} ms`);
}

// Embedded mode (no DATABASE_URL in the environment or .env) also gets engine-flags.json's `embedded`
// settings: a small young generation and a fixed malloc threshold (docs/memory.md).
let envText = '';
try {
  envText = readFileSync(join(ROOT, '.env'), 'utf8');
} catch {
  // no .env
}
const { nodeArgs, env } = engineStart(process.env, envText);
const engine = spawn(process.execPath, [...nodeArgs, '--env-file-if-exists=.env', join('dist', 'src', 'main.js')], {
  cwd: ROOT,
  env,
  // Own session and process group: a terminal's Ctrl-C reaches only this launcher, which passes it
  // on once (npm forwards signals to its child too; a second SIGINT would end the engine's
  // graceful shutdown).
  detached: true,
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});

let forwarded = null;
let forwardedAt = 0;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    const now = Date.now();
    // The same signal twice within a second is one event seen twice (terminal and npm).
    if (forwarded === signal && now - forwardedAt < 1000) return;
    forwarded = signal;
    forwardedAt = now;
    if (engine.exitCode === null && engine.signalCode === null) engine.kill(signal);
  });
}

/** Removes the pid file only when it names this launcher's engine: a second `npm start` that fails must not orphan the first engine from `npm stop`. */
const forgetPid = () => {
  try {
    if (readFileSync(PID_FILE, 'utf8').trim() === String(engine.pid)) rmSync(PID_FILE, { force: true });
  } catch {
    // no pid file
  }
};

const exitLikeEngine = (code, signal) => {
  forgetPid();
  if (signal) say(`engine ended by ${signal}`);
  else if (code !== 0) say(`engine exited with status ${code}`);
  // 128 + signal number, as a shell reports a process ended by a signal.
  process.exit(code ?? 128 + (constants.signals[signal] ?? 15));
};

engine.once('error', (err) => {
  say(`cannot start the engine: ${err.message}`);
  process.exit(1);
});
engine.once('exit', exitLikeEngine);
/** The live engine another `npm start` recorded (its pid), or null: a dead one's record is stale. */
const otherRecorded = () => {
  let pid;
  try {
    pid = Number(readFileSync(PID_FILE, 'utf8').trim());
  } catch {
    return null; // no record
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === engine.pid) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive, someone else's; ESRCH: gone, the record is stale.
    return err?.code === 'EPERM' ? pid : null;
  }
};

engine.on('message', (msg) => {
  if (typeof msg !== 'object' || msg === null || msg.type !== 'engine-ready') return;
  // Another engine of this checkout (another DATA_DIR and PORT) keeps its record: overwriting it,
  // then removing this one's at exit, left that engine out of reach of `npm stop` (probe T).
  const other = otherRecorded();
  if (other === null) writeFileSync(PID_FILE, `${engine.pid}\n`);
  else say(`another engine started by npm start is recorded (pid ${other}, stopped by \`npm stop\`); this one is not: stop it with Ctrl-C or kill ${engine.pid}`);
  if (foreground) return;
  // Leave: the engine keeps running alone (its stdout and stderr are still this terminal's).
  engine.removeListener('exit', exitLikeEngine);
  if (engine.connected) engine.disconnect();
  engine.unref();
  say(`engine running as pid ${engine.pid}; stop it with \`npm stop\` (or kill ${engine.pid})`);
  process.exit(0);
});
