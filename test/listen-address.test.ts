import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listenRefusal, portRefusal } from '../src/http/server-options.js';

/**
 * A port the engine cannot listen on is said at once and plainly (exit 3), before the store is
 * opened or a term loaded; before, the engine loaded everything and then died with a stack trace.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'enroll-listen-'));
const servers: Server[] = [];
after(() => {
  for (const s of servers) s.close();
  rmSync(work, { recursive: true, force: true });
});

async function occupied(): Promise<number> {
  const s = createServer();
  servers.push(s);
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, r));
  return (s.address() as AddressInfo).port;
}

describe('the listening address', () => {
  it('a port in use is refused with the reason; a free one is not', async () => {
    const port = await occupied();
    assert.match((await portRefusal('127.0.0.1', port)) ?? '', new RegExp(`port ${port} on 127\\.0\\.0\\.1 is in use by another process`));
    servers.pop()?.close();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await portRefusal('127.0.0.1', port), null);
    assert.equal(await portRefusal('127.0.0.1', 0), null, 'PORT=0: the system picks a free one');
    assert.match((await portRefusal('192.0.2.1', port)) ?? '', /HOST 192\.0\.2\.1 is not an address of this machine/);
    assert.equal(listenRefusal(new Error('other'), '127.0.0.1', 1), null);
  });

  it('the engine on a port in use exits 3 with the reason, without opening its data directory', { timeout: 120_000 }, async () => {
    const port = await occupied();
    const dataDir = join(work, 'data');
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'info', DATABASE_URL: '', RABBITMQ_URL: '', REDIS_URL: '', DEMO_DATA: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 3, out);
    assert.match(out, new RegExp(`refusing to start: port ${port} on 127\\.0\\.0\\.1 is in use by another process`));
    assert.doesNotMatch(out, /EADDRINUSE|at Server\./, 'no stack trace');
    assert.equal(existsSync(dataDir), false, 'nothing opened or created before the check');
  });
});
