import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './support/fault-harness.js';

/**
 * The front door of a production start: `npm run build && npm run start:prod` must run the
 * compiled tree on its own, admin page included (tsc copies no static files; the build script
 * does), and with PGlite on its worker thread (a file of its own in dist/). The build writes ./dist
 * as a user's would.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'enroll-compiled-'));
let child: ChildProcess | null = null;

after(() => {
  child?.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});


/**
 * `npm run start:prod` in its own process group on `dataDir`, with `env` added; resolves once
 * `path` answers 2xx (fails with the engine's output if it exits first or never does).
 */
async function startProd(env: Record<string, string>, path: string): Promise<{ base: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const c = spawn('npm', ['run', 'start:prod'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATA_DIR: dataDir, PORT: String(port), DEMO_DATA: 'false', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child = c;
  let output = '';
  c.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  c.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number>((resolve) => c.once('exit', (code) => resolve(code ?? -1)));
  const stop = async (): Promise<void> => {
    // npm runs node under a shell: stop the whole process group. The test times out if the
    // engine (its database thread included) does not end on SIGTERM. npm may exit before the
    // engine has finished: wait for the engine itself (named in the data directory's lock), whose
    // directory the next start takes over.
    let enginePid: number | null = null;
    try {
      enginePid = (JSON.parse(readFileSync(join(dataDir, '.engine.lock'), 'utf8')) as { pid: number }).pid;
    } catch {
      // not started far enough to hold the directory
    }
    if (c.pid) process.kill(-c.pid, 'SIGTERM');
    await exited;
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    while (enginePid !== null && alive(enginePid)) await new Promise((r) => setTimeout(r, 50));
    child = null;
  };
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (await fetch(`${base}${path}`).then((r) => r.ok, () => false)) return { base, stop };
    const done = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 200))]);
    if (done !== null) assert.fail(`the compiled engine (${JSON.stringify(env)}) exited with ${done}:\n${output}`);
  }
  await stop();
  return assert.fail(`the compiled engine (${JSON.stringify(env)}) never answered ${path}:\n${output}`);
}

describe('the compiled build', () => {
  it('npm run build, then npm run start:prod serves the API, the docs and the admin page', { timeout: 180_000 }, async () => {
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}\n${build.stderr}`);

    const { base, stop } = await startProd({}, '/health');
    try {
      const admin = await fetch(`${base}/admin`);
      assert.equal(admin.status, 200, 'the admin page (static files copied by the build)');
      assert.match(await admin.text(), /<html/i);
      assert.equal((await fetch(`${base}/docs/json`)).status, 200);
      const front = (await (await fetch(`${base}/`)).json()) as { docs: string; admin: string };
      assert.deepEqual([front.docs, front.admin], ['/docs', '/admin']);
    } finally {
      await stop();
    }

    // The compiled worker thread (PGLITE_THREAD=worker, a file of its own in dist/) starts too, on
    // the same data: /ready answers only when its database does.
    const worker = await startProd({ PGLITE_THREAD: 'worker' }, '/ready');
    await worker.stop();
  });
});
