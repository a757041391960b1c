import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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


describe('the compiled build', () => {
  it('npm run build, then npm run start:prod serves the API, the docs and the admin page', { timeout: 180_000 }, async () => {
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}\n${build.stderr}`);

    const port = await freePort();
    child = spawn('npm', ['run', 'start:prod'], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATA_DIR: dataDir, PORT: String(port), DEMO_DATA: 'false', LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number>((resolve) => child?.once('exit', (code) => resolve(code ?? -1)));
    try {
      const base = `http://127.0.0.1:${port}`;
      let up = false;
      for (let i = 0; i < 600 && !up; i++) {
        up = await fetch(`${base}/health`).then((r) => r.ok, () => false);
        if (!up) {
          const done = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 200))]);
          if (done !== null) assert.fail(`the compiled engine exited with ${done}:\n${output}`);
        }
      }
      assert.ok(up, `the compiled engine never answered /health:\n${output}`);
      const admin = await fetch(`${base}/admin`);
      assert.equal(admin.status, 200, 'the admin page (static files copied by the build)');
      assert.match(await admin.text(), /<html/i);
      assert.equal((await fetch(`${base}/docs/json`)).status, 200);
      const front = (await (await fetch(`${base}/`)).json()) as { docs: string; admin: string };
      assert.deepEqual([front.docs, front.admin], ['/docs', '/admin']);
    } finally {
      // npm runs node under a shell: stop the whole process group.
      if (child.pid) process.kill(-child.pid, 'SIGTERM');
      await exited;
      child = null;
    }

    // The compiled worker thread (PGLITE_THREAD=worker) starts from dist/ too, on the same data.
    const port2 = await freePort();
    child = spawn('npm', ['run', 'start:prod'], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATA_DIR: dataDir, PORT: String(port2), DEMO_DATA: 'false', LOG_LEVEL: 'warn', PGLITE_THREAD: 'worker' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output2 = '';
    child.stdout?.on('data', (d: Buffer) => (output2 += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output2 += d.toString()));
    const exited2 = new Promise<number>((resolve) => child?.once('exit', (code) => resolve(code ?? -1)));
    try {
      const base = `http://127.0.0.1:${port2}`;
      let ready = false;
      for (let i = 0; i < 600 && !ready; i++) {
        ready = await fetch(`${base}/ready`).then((r) => r.ok, () => false);
        if (!ready) {
          const done = await Promise.race([exited2, new Promise<null>((r) => setTimeout(() => r(null), 200))]);
          if (done !== null) assert.fail(`the compiled engine with PGLITE_THREAD=worker exited with ${done}:\n${output2}`);
        }
      }
      assert.ok(ready, `the compiled engine with PGLITE_THREAD=worker never became ready (its database answers /ready):\n${output2}`);
    } finally {
      if (child.pid) process.kill(-child.pid, 'SIGTERM');
      // A SIGTERM ends the engine, its database thread included (the test times out otherwise).
      await exited2;
      child = null;
    }
  });
});
