import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

/** PORT=0 lets the system pick the port: the ready line must name the one picked (it said `:0`). */
test('with PORT=0 the ready line names the port the server listens on', { timeout: 120_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'engine-port0-'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir, DATABASE_URL: '', RABBITMQ_URL: '', REDIS_URL: '', DEMO_DATA: 'false', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  try {
    for (let i = 0; i < 600 && !out.includes('enrollment engine ready'); i++) await new Promise((r) => setTimeout(r, 100));
    const ready = out.split('\n').map((l) => (l.startsWith('{') ? (JSON.parse(l) as { msg?: string; api?: string }) : {})).find((l) => l.msg?.startsWith('enrollment engine ready'));
    assert.ok(ready?.api, out);
    const port = Number(new URL(ready.api).port);
    assert.ok(port > 0, ready.api);
    assert.equal((await fetch(`${ready.api}/health`)).status, 200);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dataDir, { recursive: true, force: true });
  }
});
