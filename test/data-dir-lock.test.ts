import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { secureDataDir } from '../src/data-dir.js';
import { DataDirBusyError, takeDataDir } from '../src/data-dir-lock.js';

/**
 * One process at a time on an embedded data directory (a black-box probe had two engines on one
 * DATA_DIR both acknowledging writes, and one of them lost after a restart), and a DATA_DIR that is
 * plainly someone else's is neither used nor has its files' modes changed.
 */
const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'engine-lock-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const silent = pino({ level: 'silent' });
const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('the data directory lock', () => {
  it('refuses a second holder while the first holds it, names the first, and is free again after release', async () => {
    const dir = join(tmp(), 'data');
    const first = await takeDataDir(dir, 'the engine');
    await assert.rejects(takeDataDir(dir, 'npm run migrate'), (err: Error) => err instanceof DataDirBusyError && err.message.includes(`pid ${process.pid}`) && /the engine/.test(err.message));
    await first.release();
    const again = await takeDataDir(dir, 'npm run migrate');
    await again.release();
  });

  it('is released by the kernel when its holder is killed (no stale lock after kill -9)', async () => {
    const dir = join(tmp(), 'data');
    mkdirSync(dir);
    const code = `import('./src/data-dir-lock.ts').then(async (m) => { await m.takeDataDir(${JSON.stringify(dir)}, 'child'); process.stdout.write('held\\n'); setInterval(() => {}, 1000); });`;
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('held') && resolve()));
    await assert.rejects(takeDataDir(dir, 'test'), DataDirBusyError);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const mine = await takeDataDir(dir, 'test');
    await mine.release();
  });

  it('npm run migrate on a directory another process holds exits 3 with the reason, and works once it is free', { timeout: 60_000 }, async () => {
    const dir = join(tmp(), 'data');
    const held = await takeDataDir(dir, 'the engine');
    const run = () =>
      new Promise<{ code: number | null; err: string }>((resolve) => {
        const c = spawn(process.execPath, ['--import', 'tsx', 'src/cli/migrate.ts'], { cwd: ROOT, env: { ...process.env, DATA_DIR: dir, DATABASE_URL: '', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        c.stderr.on('data', (d: Buffer) => (err += d.toString()));
        c.once('exit', (code) => resolve({ code, err }));
      });
    const refused = await run();
    assert.equal(refused.code, 3, refused.err);
    assert.match(refused.err, /is in use by the engine/);
    await held.release();
    assert.equal((await run()).code, 0);
  });

  it('two compiled engines on one DATA_DIR: the second refuses to start (exit 3) and the first keeps serving', { timeout: 120_000 }, async () => {
    const dataDir = join(tmp(), 'data');
    const start = (port: number) =>
      spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
        cwd: ROOT,
        env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'info', DATABASE_URL: '', RABBITMQ_URL: '', REDIS_URL: '', DEMO_DATA: 'false' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const a = start(port);
    let aOut = '';
    a.stdout.on('data', (d: Buffer) => (aOut += d.toString()));
    try {
      for (let i = 0; i < 600 && !aOut.includes('enrollment engine ready'); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(aOut, /enrollment engine ready/);
      const b = start(port + 1);
      let bOut = '';
      b.stdout.on('data', (d: Buffer) => (bOut += d.toString()));
      const code = await new Promise<number | null>((resolve) => b.once('exit', resolve));
      assert.equal(code, 3, bOut);
      assert.match(bOut, /refusing to start: DATA_DIR .* is in use by the engine \(pid \d+/);
      assert.doesNotMatch(bOut, /state loaded/, 'the second engine must not open the store');
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 200);
    } finally {
      a.kill('SIGTERM');
      await new Promise((r) => a.once('exit', r));
    }
  });
});

describe('a DATA_DIR that is not the engine\'s', () => {
  it('is refused when it holds other files and nothing of the engine\'s, and nothing in it changes', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'tool.sh'), '#!/bin/sh\n');
    chmodSync(join(dir, 'tool.sh'), 0o755);
    chmodSync(dir, 0o755);
    await assert.rejects(takeDataDir(dir, 'test'), /already holds other files \(tool\.sh\) and no engine data/);
    assert.equal(statSync(join(dir, 'tool.sh')).mode & 0o777, 0o755);
    assert.equal(statSync(dir).mode & 0o777, 0o755);
    assert.deepEqual(readdirSync(dir), ['tool.sh']);
  });

  it('beside the engine\'s own entries, other files keep their modes; the engine\'s are made private', () => {
    const dir = tmp();
    mkdirSync(join(dir, 'pglite'));
    writeFileSync(join(dir, 'pglite', 'PG_VERSION'), '17\n');
    writeFileSync(join(dir, 'jwt-secret'), 'x'.repeat(40));
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    for (const f of ['pglite/PG_VERSION', 'jwt-secret', 'notes.txt']) chmodSync(join(dir, f), 0o644);
    const r = secureDataDir(dir, silent, 'test');
    assert.equal(statSync(join(dir, 'notes.txt')).mode & 0o777, 0o644);
    assert.equal(statSync(join(dir, 'jwt-secret')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'pglite', 'PG_VERSION')).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.ok(r.fixed >= 3);
  });
});
