import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { freePort } from './support/fault-harness.js';

/**
 * METRICS_PORT / METRICS_HOST are checked at the start as PORT / HOST are (docs/operations.md:
 * "the same holds for METRICS_HOST"): a port in use or a name that does not resolve is refused
 * with exit code 3 and the reason in one line before anything is opened or loaded, and
 * METRICS_PORT equal to PORT on the same host is a configuration error (exit code 2). Before, each
 * loaded the state, logged "Server listening", then died with a stack trace and exit code 1.
 * The compiled engine (`node dist/src/main.js`, as `npm run start:prod` runs it) in embedded mode.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'enroll-metrics-address-'));
after(() => rmSync(work, { recursive: true, force: true }));

interface Run {
  code: number | null;
  out: string;
  lines: string[];
}

/** Runs the compiled engine with `env` until it exits (or `timeoutMs`, then it is killed). */
function runEngine(env: Record<string, string>, timeoutMs = 60_000): Promise<Run> {
  const child = spawn(process.execPath, ['dist/src/main.js'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', LOG_LEVEL: 'info', DEMO_DATA: 'false', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, lines: out.split('\n').filter((l) => l.trim() !== '') });
    }),
  );
}

/** Nothing was opened or loaded: no data directory, no listener, no stack trace. */
function assertNothingStarted(r: Run, dataDir: string): void {
  assert.doesNotMatch(r.out, /Server listening|enrollment engine ready|storage|"stack"|\n\s+at /, `something was started, or a stack trace:\n${r.out}`);
  assert.equal(existsSync(dataDir), false, 'the data directory was made before the check');
}

describe('METRICS_PORT and PORT on one host (configuration)', () => {
  it('are refused when equal, unless METRICS_PORT is 0 or the two hosts are different addresses', () => {
    assert.throws(() => loadConfig({ PORT: '18210', METRICS_PORT: '18210' }), /METRICS_PORT must differ from PORT \(both 18210/);
    assert.throws(() => loadConfig({ PORT: '18210', METRICS_PORT: '18210', HOST: '0.0.0.0' }), /METRICS_PORT must differ from PORT/, 'a wildcard takes every address');
    assert.throws(() => loadConfig({ PORT: '18210', METRICS_PORT: '18210', METRICS_HOST: 'localhost' }), /METRICS_PORT must differ from PORT/, 'a name may be the same address');
    assert.equal(loadConfig({ PORT: '0', METRICS_PORT: '0' }).metrics.port, 0, 'METRICS_PORT=0: no listener');
    assert.equal(loadConfig({ PORT: '18210', METRICS_PORT: '18211' }).metrics.port, 18211);
    assert.equal(loadConfig({ PORT: '18210', METRICS_PORT: '18210', HOST: '127.0.0.1', METRICS_HOST: '127.0.0.2' }).metrics.port, 18210);
  });
});

describe('a bad METRICS_PORT or METRICS_HOST refuses the start of the compiled engine', () => {
  let holder: Server;
  let held: number;

  before(async () => {
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}\n${build.stderr}`);
    holder = createServer();
    held = await new Promise<number>((r) => holder.listen({ host: '127.0.0.1', port: 0 }, () => r((holder.address() as net.AddressInfo).port)));
  });
  after(() => holder.close());

  it('METRICS_PORT in use: exit 3 with the reason in one line, before anything is opened or loaded', { timeout: 120_000 }, async () => {
    const dataDir = join(work, 'in-use');
    const r = await runEngine({ PORT: String(await freePort()), METRICS_PORT: String(held), DATA_DIR: dataDir });
    assert.equal(r.code, 3, r.out);
    const said = r.lines.filter((l) => l.includes('refusing to start'));
    assert.equal(said.length, 1, r.out);
    assert.match(said[0]!, new RegExp(`"msg":"refusing to start: port ${held} on 127\\.0\\.0\\.1 is in use by another process \\(another engine\\?\\): stop it, or choose another METRICS_PORT"`));
    assertNothingStarted(r, dataDir);
  });

  it('METRICS_PORT equal to PORT: exit 2, a configuration problem in one line', { timeout: 120_000 }, async () => {
    const dataDir = join(work, 'same-port');
    const port = String(await freePort());
    const r = await runEngine({ PORT: port, METRICS_PORT: port, DATA_DIR: dataDir });
    assert.equal(r.code, 2, r.out);
    const problems = r.lines.filter((l) => l.startsWith('  - '));
    assert.equal(problems.length, 1, r.out);
    assert.match(problems[0]!, new RegExp(`^ {2}- METRICS_PORT must differ from PORT \\(both ${port};`));
    assertNothingStarted(r, dataDir);
  });

  it('METRICS_HOST that does not resolve: exit 3 with the reason in one line, before anything is opened or loaded', { timeout: 120_000 }, async () => {
    const dataDir = join(work, 'no-such-host');
    const r = await runEngine({ PORT: String(await freePort()), METRICS_PORT: String(await freePort()), METRICS_HOST: 'nosuch.invalid', DATA_DIR: dataDir });
    assert.equal(r.code, 3, r.out);
    const said = r.lines.filter((l) => l.includes('refusing to start'));
    assert.equal(said.length, 1, r.out);
    assert.match(said[0]!, /"msg":"refusing to start: METRICS_HOST nosuch\.invalid (is not a name this machine resolves|could not be resolved)[^"\n]*"/);
    assertNothingStarted(r, dataDir);
  });

  it('the standalone batcher: METRICS_PORT in use is refused in one line (exit 3) before the database is waited for', { timeout: 120_000 }, async () => {
    // Storage that is never there: without the check the batcher would wait for it (retrying) and never say why.
    const child = spawn(process.execPath, ['dist/src/cli/batcher.js'], {
      cwd: ROOT,
      env: {
        PATH: process.env['PATH'] ?? '',
        HOME: process.env['HOME'] ?? '',
        DATABASE_URL: `postgres://nobody@127.0.0.1:${await freePort()}/none`,
        RABBITMQ_URL: `amqp://guest:guest@127.0.0.1:${await freePort()}`,
        JWT_SECRET: 'metrics-address-test-secret-0123456789abcdef',
        METRICS_PORT: String(held),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    clearTimeout(timer);
    assert.equal(code, 3, out);
    const said = out.split('\n').filter((l) => l.includes('refusing to start'));
    assert.equal(said.length, 1, out);
    assert.match(said[0]!, new RegExp(`"msg":"refusing to start: port ${held} on 127\\.0\\.0\\.1 is in use by another process \\(another engine\\?\\): stop it, or choose another METRICS_PORT"`));
    assert.doesNotMatch(out, /storage unavailable|batcher started|"stack"/, out);
  });

  it('a good METRICS_PORT is served, with the HTTP_* limits: a silent connection gets 408 within the headers limit', { timeout: 180_000 }, async () => {
    const metricsPort = await freePort();
    const child = spawn(process.execPath, ['dist/src/main.js'], {
      cwd: ROOT,
      env: {
        PATH: process.env['PATH'] ?? '',
        HOME: process.env['HOME'] ?? '',
        DEMO_DATA: 'false',
        PORT: String(await freePort()),
        METRICS_PORT: String(metricsPort),
        DATA_DIR: join(work, 'good'),
        HTTP_HEADERS_TIMEOUT_MS: '500',
        HTTP_REQUEST_TIMEOUT_MS: '1000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    try {
      for (let i = 0; i < 600 && !out.includes('enrollment engine ready') && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, /enrollment engine ready/, out);
      const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      await r.text();
      // Node's default would hold it for a minute or more; 10 s is generous against 0.5 s.
      const silent = await new Promise<{ closed: boolean; received: string }>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: metricsPort });
        let received = '';
        const giveUp = setTimeout(() => (s.destroy(), resolve({ closed: false, received })), 10_000);
        s.on('data', (d) => (received += d.toString('latin1')));
        s.on('error', () => undefined);
        s.on('close', () => (clearTimeout(giveUp), resolve({ closed: true, received })));
      });
      assert.ok(silent.closed, 'the silent connection to METRICS_PORT was still open after 10 s');
      assert.match(silent.received, /^HTTP\/1\.1 408 /);
    } finally {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      child.kill('SIGKILL');
    }
  });
});
