// `npm run build`: compiles src/ into dist/src (tsc), copies the non-TypeScript files beside it
// (scripts/copy-assets.mjs), and records a hash of every input in dist/build-stamp.json, so that
// `npm start` (scripts/start.mjs) can tell whether dist/ is up to date with the working tree.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const STAMP = join(ROOT, 'dist', 'build-stamp.json');
/** Pid of the engine `npm start` left running, for `npm stop` (scripts/start.mjs, scripts/stop.mjs); ENGINE_PID_FILE moves it. */
export const PID_FILE = process.env.ENGINE_PID_FILE || join(ROOT, '.engine.pid');

/** Everything the build output depends on: the sources, the compiler settings and the build scripts. */
function inputs() {
  const files = ['tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs', 'scripts/copy-assets.mjs'].map((f) => join(ROOT, f));
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else files.push(path);
    }
  };
  walk(join(ROOT, 'src'));
  return files;
}

/** Hash of the inputs' paths and contents (not their times: a checkout or copy changes those). */
export function inputsHash() {
  const h = createHash('sha256');
  for (const f of inputs()) {
    h.update(relative(ROOT, f));
    h.update('\0');
    h.update(readFileSync(f));
    h.update('\0');
  }
  return h.digest('hex');
}

/** Why dist/ must be rebuilt, or null when it is up to date. */
export function staleReason() {
  if (!existsSync(join(ROOT, 'dist', 'src', 'main.js'))) return 'no build in dist/';
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(STAMP, 'utf8'));
  } catch {
    return 'dist/ has no build stamp';
  }
  return stamp.inputs === inputsHash() ? null : 'the sources changed since the last build';
}

const LOCK = join(ROOT, '.build-lock');

/**
 * One build at a time in this checkout (two `npm start`s, or a test building beside another): a
 * lock directory, taken over when older than 10 minutes (a build killed half-way).
 */
function withLock(fn) {
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(LOCK).mtimeMs > 10 * 60_000) rmSync(LOCK, { recursive: true, force: true });
      } catch {
        // gone meanwhile: try again
      }
      if (Date.now() > deadline) throw new Error(`another build holds ${LOCK}; remove it if no build is running`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

/**
 * Runs the build; throws with the compiler's output when it fails. With `ifStale`, does nothing
 * (and returns false) when dist/ turned out to be up to date once the lock was held.
 */
export function build({ ifStale = false } = {}) {
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) throw new Error('TypeScript is not installed: run `npm ci` (with dev dependencies) first');
  return withLock(() => {
    if (ifStale && staleReason() === null) return false;
    const hash = inputsHash();
    rmSync(STAMP, { force: true });
    const steps = [
      [tsc, '-p', 'tsconfig.build.json'],
      [join(ROOT, 'scripts', 'copy-assets.mjs')],
    ];
    for (const args of steps) {
      const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`build step failed: node ${args.map((a) => relative(ROOT, a) || a).join(' ')}\n${r.stdout}${r.stderr}`);
    }
    writeFileSync(STAMP, `${JSON.stringify({ inputs: hash, builtAt: new Date().toISOString() })}\n`);
    return true;
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    build();
    process.stdout.write('built dist/\n');
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
}
