import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * SIGTERM while clients are still sending requests (probe: a body that never completes held the
 * engine until its 30 s shutdown deadline, then exit code 1). Node stops enforcing the header and
 * request time limits once its server is closed, so the drain (src/http/drain.ts) must bound those
 * requests itself; a request fully received before the signal is still answered.
 *
 * The real engine, embedded mode, with short limits: headers 3 s, whole request 4 s, drain 0.5 s.
 * The two incomplete requests are younger than their limits when the server stops listening, so
 * only the drain's own bound can end them.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const STAFF_ID = 7;
const STAFF_PASSWORD = 'a-staff-password-for-the-test';

interface Raw {
  socket: Socket;
  text(): string;
  /** Resolves when the server ended or reset the connection. */
  closed: Promise<void>;
}

async function open(port: number, send: string): Promise<Raw> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  const closed = new Promise<void>((resolve) => {
    socket.once('error', () => resolve());
    socket.once('close', () => resolve());
  });
  socket.write(send);
  return { socket, text: () => received, closed };
}

type LogLine = { msg?: string; api?: string; level?: number };

test('SIGTERM: a request whose body or headers never complete is answered 408, one received before the signal is answered 200, and the engine exits 0 promptly', { timeout: 90_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'engine-shutdown-incomplete-'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env['PATH'] ?? '',
      HOME: process.env['HOME'] ?? '',
      HOST: '127.0.0.1',
      PORT: '0',
      DATA_DIR: dataDir,
      DEMO_DATA: 'false',
      LOG_LEVEL: 'info',
      BOOTSTRAP_STAFF_ID: String(STAFF_ID),
      BOOTSTRAP_STAFF_PASSWORD: STAFF_PASSWORD,
      // Logins wait for one bcrypt check at a time: a burst of them is still being decided at the signal.
      MAX_CONCURRENT_PASSWORD_CHECKS: '1',
      LOGIN_QUEUE_MS: '20000',
      // The burst is one account's: counted by the login throttle (10 by default) before it is checked.
      LOGIN_FAILURES_PER_USER: '50',
      HTTP_HEADERS_TIMEOUT_MS: '3000',
      HTTP_REQUEST_TIMEOUT_MS: '4000',
      SHUTDOWN_DRAIN_MS: '500',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const lines = (): LogLine[] => out.split('\n').flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as LogLine] : []));
  const sockets: Socket[] = [];
  try {
    let api: string | undefined;
    for (let i = 0; i < 900 && api === undefined && child.exitCode === null; i++) {
      api = lines().find((l) => l.msg?.startsWith('enrollment engine ready'))?.api;
      if (api === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(api, `the engine did not become ready:\n${out}`);
    const port = Number(new URL(api).port);

    // A body announced as 100 bytes, 10 of them sent; headers without their closing blank line.
    const partialBody = await open(port, 'POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user": 7');
    const partialHeaders = await open(port, 'GET /health HTTP/1.1\r\nHost: x\r\n');
    sockets.push(partialBody.socket, partialHeaders.socket);
    // Fully received before the signal, decided after it (one password check at a time).
    const t0 = performance.now();
    const logins = Array.from({ length: 16 }, () =>
      fetch(`${api}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: STAFF_ID, password: STAFF_PASSWORD, staff: true }),
      }).then(
        async (r) => ({ status: r.status, ms: Math.round(performance.now() - t0), body: await r.text() }),
        (err: Error) => ({ status: 0, ms: Math.round(performance.now() - t0), body: err.message }),
      ),
    );
    await new Promise((r) => setTimeout(r, 200));
    child.kill('SIGTERM');

    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<'still running'>((r) => (timer = setTimeout(() => r('still running'), 20_000)))]);
    clearTimeout(timer);
    const exitMs = Math.round(performance.now() - t0);
    const answers = await Promise.all(logins);
    console.log(`[shutdown] exit ${String(code)} ${exitMs} ms after the logins were sent; logins answered at ${answers.map((a) => a.ms).join(', ')} ms`);

    assert.equal(code, 0, `exit code ${String(code)} (SIGTERM 200 ms after the logins were sent):\n${out}`);
    const messages = lines().map((l) => l.msg);
    assert.ok(messages.includes('stopped'), `the engine logged "stopped":\n${out}`);
    assert.ok(!messages.includes('shutdown did not finish in time; exiting'), out);

    // The incomplete requests were answered 408 in the one error shape, their connections closed.
    for (const [what, c] of [['body', partialBody], ['headers', partialHeaders]] as const) {
      await c.closed;
      assert.match(c.text(), /^HTTP\/1\.1 408 /, `the request with an incomplete ${what}: ${JSON.stringify(c.text())}`);
      assert.match(c.text(), /"code":"REQUEST_TIMEOUT"/);
    }
    // Every login received before the signal was decided and answered.
    assert.deepEqual(
      answers.map((a) => a.status),
      answers.map(() => 200),
      JSON.stringify(answers.filter((a) => a.status !== 200)),
    );
  } finally {
    for (const s of sockets) s.destroy();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
});
