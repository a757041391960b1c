import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './support/fault-harness.js';

/**
 * "A 2xx means durable, even under kill -9", in embedded mode, with PGlite on the engine's thread
 * (the default) and on its own worker thread (PGLITE_THREAD=worker): staff changes are sent in a
 * burst, the engine is killed (SIGKILL) as soon as half of them have been answered 204 while the
 * rest are still in flight, and the restarted engine must hold every answered change.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const children = new Set<ChildProcess>();
const dirs: string[] = [];

after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Engine {
  child: ChildProcess;
  base: string;
  exited: Promise<void>;
}

async function startEngine(dataDir: string, thread: string): Promise<Engine> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env['PATH'] ?? '',
      HOME: process.env['HOME'] ?? '',
      DATA_DIR: dataDir,
      PORT: String(port),
      DEMO_DATA: 'true',
      PGLITE_THREAD: thread,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      children.delete(child);
      resolve();
    }),
  );
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 900; i++) {
    if (await fetch(`${base}/ready`).then((r) => r.ok, () => false)) return { child, base, exited };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`the engine did not become ready:\n${output}`);
}

async function staffToken(base: string): Promise<string> {
  const r = await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 1, password: 'staff-pass', staff: true }) });
  assert.equal(r.status, 200);
  return ((await r.json()) as { token: string }).token;
}

async function capacities(base: string, token: string): Promise<Map<string, number>> {
  const r = await fetch(`${base}/sections`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200);
  const body = (await r.json()) as { sections: { course_id: number; group_id: number; capacity: number }[] };
  return new Map(body.sections.map((s) => [`${s.course_id}/${s.group_id}`, s.capacity]));
}

for (const thread of ['main', 'worker'] as const) {
  describe(`embedded mode, PGLITE_THREAD=${thread}`, () => {
    test('every change answered 2xx before a kill -9 is there after the restart', { timeout: 180_000 }, async () => {
      const dataDir = mkdtempSync(join(tmpdir(), `enroll-kill-${thread}-`));
      dirs.push(dataDir);
      const first = await startEngine(dataDir, thread);
      const token = await staffToken(first.base);
      const before = await capacities(first.base, token);
      const sections = [...before.keys()].slice(0, 400);
      assert.equal(sections.length, 400, 'the demo data has enough sections');
      const wanted = new Map(sections.map((k, i) => [k, (before.get(k) ?? 0) + 1000 + i]));
      const acknowledged: string[] = [];
      let killed = false;
      const sends = sections.map(async (k) => {
        const [course_id, group_id] = k.split('/').map(Number);
        try {
          const r = await fetch(`${first.base}/staff/capacity`, {
            method: 'PATCH',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ course_id, group_id, capacity: wanted.get(k) }),
          });
          if (r.status === 204 && !killed) {
            acknowledged.push(k);
            if (acknowledged.length === sections.length / 2) {
              killed = true;
              first.child.kill('SIGKILL');
            }
          }
        } catch {
          // In flight when the engine died: no answer, no promise made.
        }
      });
      await Promise.all(sends);
      await first.exited;
      assert.ok(killed, `half of the changes were answered before the kill (${acknowledged.length})`);

      const second = await startEngine(dataDir, thread);
      const after = await capacities(second.base, await staffToken(second.base));
      const lost = acknowledged.filter((k) => after.get(k) !== wanted.get(k));
      assert.deepEqual(lost, [], 'acknowledged changes missing after the restart');
      // Every section either has its new capacity or its old one: nothing half-applied.
      for (const k of sections) assert.ok([before.get(k), wanted.get(k)].includes(after.get(k)), `${k}: ${after.get(k)}`);
      second.child.kill('SIGTERM');
      await second.exited;
    });
  });
}

async function login(base: string, user: number, password: string, staff: boolean): Promise<string> {
  const r = await fetch(`${base}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password, staff }) });
  assert.equal(r.status, 200);
  return ((await r.json()) as { token: string }).token;
}

async function statusWith(base: string, token: string, path = '/student/courses'): Promise<number> {
  const r = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
  await r.body?.cancel();
  return r.status;
}

describe('embedded mode: revocations', () => {
  test('a logout and a staff revocation (of a student, of a staff member) answered 204 still hold after a kill -9 and restart; a new login works', { timeout: 180_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'enroll-kill-revocations-'));
    dirs.push(dataDir);
    const first = await startEngine(dataDir, 'main');
    const loggedOut = await login(first.base, 40000001, 'student-pass', false);
    const revoked = await login(first.base, 40000002, 'student-pass', false);
    const kept = await login(first.base, 40000003, 'student-pass', false);
    const staff = await staffToken(first.base);
    const out = await fetch(`${first.base}/logout`, { method: 'POST', headers: { authorization: `Bearer ${loggedOut}` } });
    assert.equal(out.status, 204);
    const rv = await fetch(`${first.base}/students/40000002/revoke-tokens`, { method: 'POST', headers: { authorization: `Bearer ${staff}` } });
    assert.equal(rv.status, 204);
    // A staff member whose token leaked: created, logged in, then cut off by the admin (demo staff 1).
    const json = { 'content-type': 'application/json', authorization: `Bearer ${staff}` };
    const created = await fetch(`${first.base}/staff`, { method: 'POST', headers: json, body: JSON.stringify({ id: 77, password: 'leaver-password-1' }) });
    assert.equal(created.status, 201);
    const leaked = await login(first.base, 77, 'leaver-password-1', true);
    assert.equal(await statusWith(first.base, leaked, '/sections'), 200);
    const rs = await fetch(`${first.base}/staff/77/revoke-tokens`, { method: 'POST', headers: { authorization: `Bearer ${staff}` } });
    assert.equal(rs.status, 204);
    assert.equal(await statusWith(first.base, loggedOut), 401);
    assert.equal(await statusWith(first.base, revoked), 401);
    assert.equal(await statusWith(first.base, leaked, '/sections'), 401);
    first.child.kill('SIGKILL');
    await first.exited;

    const second = await startEngine(dataDir, 'main');
    assert.equal(await statusWith(second.base, loggedOut), 401, 'the logged-out token works again after the restart');
    assert.equal(await statusWith(second.base, revoked), 401, 'the revoked token works again after the restart');
    assert.equal(await statusWith(second.base, kept), 200, 'a token nobody revoked still works');
    assert.equal(await statusWith(second.base, await login(second.base, 40000002, 'student-pass', false)), 200, 'a new login works');
    assert.equal(await statusWith(second.base, leaked, '/sections'), 401, "the revoked staff member's token works again after the restart");
    assert.equal(await statusWith(second.base, staff, '/sections'), 200, "the admin's token was not revoked");
    assert.equal(await statusWith(second.base, await login(second.base, 77, 'leaver-password-1', true), '/sections'), 200, 'a new staff login works');
    second.child.kill('SIGTERM');
    await second.exited;
  });
});
