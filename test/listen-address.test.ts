import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
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

  it('a HOST name that does not resolve is refused with the reason, with PORT=0 too; a name resolving elsewhere says where', async () => {
    // Probe F7: these reached the real listen after the store was opened and died with a stack trace.
    for (const port of [18399, 0]) {
      assert.match((await portRefusal('nosuchhost.invalid', port)) ?? '', /^HOST nosuchhost\.invalid is not a name this machine resolves: use 127\.0\.0\.1, localhost/, `port ${port}`);
      assert.match((await portRefusal('[::1]', port)) ?? '', /^HOST \[::1\] is not a name this machine resolves/, 'listen() takes no brackets (config strips them)');
    }
    assert.match((await portRefusal('192.0.2.1', 0)) ?? '', /HOST 192\.0\.2\.1 is not an address of this machine/, 'PORT=0 checks the host too');
    assert.equal(await portRefusal('localhost', 0), null);
    const elsewhere = Object.assign(new Error('listen EADDRNOTAVAIL'), { code: 'EADDRNOTAVAIL', address: '93.184.215.14' });
    assert.equal(listenRefusal(elsewhere, 'example.com', 80), 'HOST example.com is not an address of this machine (it resolves to 93.184.215.14): use 127.0.0.1, 0.0.0.0 or one of its addresses');
    assert.match(listenRefusal(Object.assign(new Error('x'), { code: 'EAI_AGAIN' }), 'enroll.example.edu', 80) ?? '', /could not be resolved \(the name server did not answer\)/);
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

/** The engine (src/main.ts) as a child process in embedded mode, with only the environment given. */
function runEngine(env: Record<string, string>): { exited: Promise<number | null>; ready: Promise<Record<string, unknown> | null>; output: () => string; stop: () => void } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let onReady: (line: Record<string, unknown> | null) => void = () => {};
  const ready = new Promise<Record<string, unknown> | null>((r) => (onReady = r));
  const take = (d: Buffer) => {
    out += d.toString();
    for (const l of out.split('\n')) {
      if (!l.startsWith('{') || !l.includes('enrollment engine ready')) continue;
      onReady(JSON.parse(l) as Record<string, unknown>);
    }
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    onReady(null);
    resolve(code);
  }));
  return { exited, ready, output: () => out, stop: () => child.kill('SIGTERM') };
}

describe('HOST as operators write it (probe F7)', () => {
  for (const [host, port] of [['nosuchhost.invalid', '18398'], ['nosuchhost.invalid', '0'], ['[localhost]', '18397']] as const) {
    it(`HOST=${host} PORT=${port} exits at once with the reason in one line, before the data directory is made`, { timeout: 120_000 }, async () => {
      const dataDir = join(work, `data-${host}-${port}`);
      const run = runEngine({ HOST: host, PORT: port, DATA_DIR: dataDir });
      const code = await run.exited;
      const out = run.output();
      if (host === '[localhost]') {
        assert.equal(code, 2, out);
        assert.match(out, /HOST must be an IP address or a host name.*"\[localhost\]"/);
      } else {
        assert.equal(code, 3, out);
        assert.match(out, /"msg":"refusing to start: HOST nosuchhost\.invalid is not a name this machine resolves: [^"\n]*"/);
      }
      assert.doesNotMatch(out, /ENOTFOUND|getaddrinfo|"stack"|\n\s+at /, 'no stack trace');
      assert.doesNotMatch(out, /store opened|demo data/i);
      assert.equal(existsSync(dataDir), false, 'nothing opened or created before the check');
    });
  }

  it('HOST=[::1] serves the loopback demo on ::1 and says so with a URL that works; other Host headers are refused there', { timeout: 180_000 }, async () => {
    const probe = createServer();
    const port = await new Promise<number>((r) => probe.listen({ host: '127.0.0.1', port: 0 }, () => r((probe.address() as AddressInfo).port)));
    await new Promise((r) => probe.close(r));
    const run = runEngine({ HOST: '[::1]', PORT: String(port), DATA_DIR: join(work, 'data-v6') });
    try {
      const ready = await run.ready;
      assert.ok(ready, run.output());
      assert.equal(ready['api'], `http://[::1]:${port}`);
      assert.equal(typeof ready['demoStaff'], 'object', 'the demo is loaded: ::1 is loopback');
      const call = async (host: string | null, path: string, body?: unknown) => {
        const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request({ host: '::1', port, path, method: body === undefined ? 'GET' : 'POST', headers: { ...(host === null ? {} : { host }), 'content-type': 'application/json' }, setHost: host === null }, (r) => {
            let b = '';
            r.on('data', (d: Buffer) => (b += d.toString()));
            r.on('end', () => resolve({ status: r.statusCode ?? 0, body: b }));
          });
          req.on('error', reject);
          req.end(body === undefined ? undefined : JSON.stringify(body));
        });
        return res;
      };
      const demoAdmin = { user: 1, password: 'staff-pass', staff: true };
      assert.equal((await call(null, '/login', demoAdmin)).status, 200, 'Host [::1]:port');
      assert.equal((await call(`localhost:${port}`, '/login', demoAdmin)).status, 200);
      const rebound = await call(`attacker.example:${port}`, '/login', demoAdmin);
      assert.equal(rebound.status, 421, rebound.body);
      assert.equal((JSON.parse(rebound.body) as { code: string }).code, 'DEMO_HOST_REFUSED');
      assert.equal((await call(`10.0.0.5:${port}`, '/health')).status, 200, 'health probes answer whatever the Host');
    } finally {
      run.stop();
      await run.exited;
    }
  });
});
