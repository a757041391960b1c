import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { demoExposure } from '../src/demo/demo-exposure.js';
import { freePort } from './support/fault-harness.js';

/**
 * Issue 11: the published demo credentials are never served to the network by default. These
 * tests run the real engine (src/main.ts) as a child process in embedded mode.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'wt11-demo-'));
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});


interface Run {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  /** Resolves 'ready' on the ready line, or the exit code if the engine exits first. */
  outcome: Promise<'ready' | number>;
  exited: Promise<number>;
}

function startEngine(env: Record<string, string>): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    // Only what the test sets: no DATABASE_URL etc. from the caller's environment.
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATA_DIR: dataDir, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  let onReady: (() => void) | null = null;
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => {
    children.delete(child);
    resolve(code ?? -1);
  }));
  const ready = new Promise<'ready'>((resolve) => (onReady = () => resolve('ready')));
  const take = (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) {
      if (!p.startsWith('{')) continue;
      const line = JSON.parse(p) as Record<string, unknown>;
      lines.push(line);
      if (String(line['msg']).startsWith('enrollment engine ready')) onReady?.();
    }
  };
  child.stdout?.on('data', take);
  child.stderr?.on('data', take);
  return { child, lines, exited, outcome: Promise.race([ready, exited]) };
}

async function stop(run: Run): Promise<void> {
  run.child.kill('SIGTERM');
  await run.exited;
}

async function login(port: number, body: unknown): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${port}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return r.status;
}

const DEMO_STAFF = { user: 1, password: 'staff-pass', staff: true };

/** A login to 127.0.0.1 whose Host header names another site, as after DNS rebinding (fetch sets its own Host). */
async function loginAs(port: number, host: string, body: unknown): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/login', method: 'POST', headers: { host, 'content-type': 'text/plain' } }, (res) => {
      let b = '';
      res.on('data', (d: Buffer) => (b += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(b) as { code?: string }).code }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe('demo credentials and the listen address', () => {
  it('decides: none without live credentials, local on loopback, warn if explicit, refuse otherwise', () => {
    assert.equal(demoExposure({ live: false, loopback: false, explicit: false }), 'none');
    assert.equal(demoExposure({ live: true, loopback: true, explicit: false }), 'local');
    assert.equal(demoExposure({ live: true, loopback: false, explicit: true }), 'warn');
    assert.equal(demoExposure({ live: true, loopback: false, explicit: false }), 'refuse');
  });

  it('with no settings: loads the demo, listens on 127.0.0.1 only, and leaves the data directory private', async () => {
    const port = await freePort();
    const run = startEngine({ PORT: String(port) });
    assert.equal(await run.outcome, 'ready', JSON.stringify(run.lines.slice(-5)));
    assert.equal(await login(port, DEMO_STAFF), 200);
    // Probe F5: a page of another site pointing its name at 127.0.0.1 (DNS rebinding) is refused.
    assert.deepEqual(await loginAs(port, `attacker.example:${port}`, DEMO_STAFF), { status: 421, code: 'DEMO_HOST_REFUSED' });
    assert.equal((await loginAs(port, `localhost:${port}`, DEMO_STAFF)).status, 200);
    // In demo mode demo staff 1 is the admin: it may create staff, staff 2 may not.
    const tokenOf = async (user: number) => {
      const r = await fetch(`http://127.0.0.1:${port}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password: 'staff-pass', staff: true }) });
      return ((await r.json()) as { token: string }).token;
    };
    const createStaff = async (token: string, id: number) =>
      (await fetch(`http://127.0.0.1:${port}/staff`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ id, password: 'a-long-enough-password' }),
      })).status;
    assert.equal(await createStaff(await tokenOf(2), 901), 403);
    assert.equal(await createStaff(await tokenOf(1), 900), 201);
    // Fastify logs one line per address it listens on: only the loopback one.
    const listening = run.lines.map((l) => String(l['msg'])).filter((m) => m.startsWith('Server listening'));
    assert.deepEqual(listening, [`Server listening at http://127.0.0.1:${port}`]);
    assert.ok(!run.lines.some((l) => String(l['msg']).includes('DEMO CREDENTIALS ARE LIVE')), 'no network warning on loopback');
    await stop(run);
    const open: string[] = [];
    const visit = (p: string) => {
      const st = lstatSync(p);
      if ((st.mode & 0o777) !== (st.isDirectory() ? 0o700 : 0o600)) open.push(p);
      if (st.isDirectory()) for (const n of readdirSync(p)) visit(join(p, n));
    };
    visit(dataDir);
    assert.deepEqual(open, []);
  });

  it('refuses to serve the demo credentials on a network address without DEMO_DATA=true', async () => {
    const port = await freePort();
    const run = startEngine({ PORT: String(port), HOST: '0.0.0.0' });
    const outcome = await run.outcome;
    assert.equal(outcome, 3, `expected exit 3, got ${outcome}: ${JSON.stringify(run.lines.slice(-3))}`);
    const fatal = run.lines.find((l) => l['level'] === 60);
    assert.ok(fatal && String(fatal['msg']).includes('refusing to start'), JSON.stringify(fatal));
    await assert.rejects(login(port, DEMO_STAFF), 'nothing listens');
  });

  it('serves them on a network address with DEMO_DATA=true, with a loud warning', async () => {
    const port = await freePort();
    const run = startEngine({ PORT: String(port), HOST: '0.0.0.0', DEMO_DATA: 'true' });
    assert.equal(await run.outcome, 'ready', JSON.stringify(run.lines.slice(-5)));
    const warn = run.lines.find((l) => l['level'] === 40 && String(l['msg']).includes('DEMO CREDENTIALS ARE LIVE ON A NETWORK ADDRESS'));
    assert.ok(warn, 'the warning line');
    assert.equal(await login(port, DEMO_STAFF), 200);
    // Served to the network on purpose: reached by any of the machine's names, as before.
    assert.equal((await loginAs(port, `enroll-demo.example.edu:${port}`, DEMO_STAFF)).status, 200);
    await stop(run);
  });
});
