import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './support/fault-harness.js';

/**
 * A SIGTERM sent the moment the engine's port opens (an orchestrator rolling back a release, a
 * launcher that saw the port, a script that starts and stops it) stops it gracefully: exit code 0
 * after "stopped", never death by the signal. Before, the engine installed its signal handlers only
 * after its ready line, so a signal in between found no listener and Node's default action killed
 * the process at once (4 of 6 tries when the signal followed "Server listening", 2 of 8 when it
 * followed the ready line, on a loaded two-core machine): no drain, no lease hand-over.
 *
 * The real engine, embedded mode with a metrics port, three starts; the signal is sent from the
 * stdout handler that sees Fastify's "Server listening" line, which the engine logs before its own
 * start-up ends (its metrics server is started after it, an await in which the signal arrives).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));

type LogLine = { msg?: string };

async function startAndSignal(): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'engine-early-signal-'));
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env['PATH'] ?? '',
        HOME: process.env['HOME'] ?? '',
        HOST: '127.0.0.1',
        PORT: '0',
        DATA_DIR: dataDir,
        DEMO_DATA: 'false',
        WARMUP_REQUESTS: '0',
        // The metrics server starts after the API listens: its own listen widened the old gap.
        METRICS_PORT: String(await freePort()),
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let signalled = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!signalled && out.includes('"msg":"Server listening at')) {
        signalled = true;
        child.kill('SIGTERM');
      }
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    clearTimeout(deadline);
    assert.ok(signalled, `the engine never logged that it listens:\n${out}`);
    return { code, signal, out };
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

test('SIGTERM the moment the port opens: the engine stops gracefully (exit 0, "stopped"), three starts out of three', { timeout: 180_000 }, async () => {
  for (let i = 0; i < 3; i++) {
    const r = await startAndSignal();
    assert.equal(r.signal, null, `start ${i + 1}: killed by ${String(r.signal)} (no handler yet):\n${r.out.slice(-2000)}`);
    assert.equal(r.code, 0, `start ${i + 1}: exit code ${String(r.code)}:\n${r.out.slice(-2000)}`);
    const lines = r.out.split('\n').flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as LogLine] : []));
    assert.ok(lines.some((l) => l.msg === 'shutting down'), `start ${i + 1}: no "shutting down" line`);
    assert.ok(lines.some((l) => l.msg === 'stopped'), `start ${i + 1}: no "stopped" line`);
  }
});
