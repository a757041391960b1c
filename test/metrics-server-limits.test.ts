import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../src/logger.js';
import type { HttpLimits } from '../src/http/server-options.js';
import { startMetricsServer } from '../src/metrics/server.js';

/**
 * The Prometheus listener (METRICS_PORT) keeps the API's connection limits (HTTP_*) and security
 * headers. Before, it ran with Node's defaults: a connection that sent nothing or trickled its
 * headers got 408 only after about a minute, and an idle keep-alive connection stayed for 5 s
 * whatever HTTP_KEEP_ALIVE_TIMEOUT_MS said. The bounds asserted here are generous against the
 * small limits used (well above them, far below Node's 60 s defaults), so a loaded machine does
 * not make them flaky.
 */

const LIMITS: HttpLimits = { headersTimeoutMs: 500, requestTimeoutMs: 1_000, keepAliveTimeoutMs: 1_000, idleTimeoutMs: 60_000, maxRequestsPerSocket: 0, maxPipelinedRequests: 8 };
/** Far below Node's defaults (headers 60 s, checked every 30 s), far above the limits above. */
const BOUND_MS = 10_000;

interface Outcome {
  received: string;
  closedByServer: boolean;
  ms: number;
}

/** Connects, sends `head`, then one of `lines` every `everyMs`; gives up (closedByServer false) after `giveUpMs`. */
function hold(port: number, head: string, lines: string[], everyMs: number, giveUpMs: number): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = net.connect({ host: '127.0.0.1', port });
    let received = '';
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(giveUp);
      s.destroy();
      resolve({ received, closedByServer, ms: performance.now() - t0 });
    };
    const giveUp = setTimeout(() => finish(false), giveUpMs);
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? finish(true) : reject(err)));
    s.on('data', (d) => (received += d.toString('latin1')));
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    s.on('connect', () => {
      if (head !== '') s.write(head);
      let i = 0;
      timer = setInterval(() => {
        if (i < lines.length && !s.destroyed) s.write(lines[i++]!);
      }, everyMs);
    });
  });
}

describe('the METRICS_PORT listener: the API connection limits and security headers', () => {
  let server: Server;
  let port: number;

  before(async () => {
    server = await startMetricsServer({ host: '127.0.0.1', port: 0, logger: createLogger('silent'), limits: LIMITS });
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('closes a connection that sends nothing, with 408, within the headers limit', async () => {
    const out = await hold(port, '', [], 1_000, BOUND_MS);
    assert.ok(out.closedByServer, `the silent connection was still open after ${BOUND_MS} ms`);
    assert.match(out.received, /^HTTP\/1\.1 408 /);
    assert.ok(out.ms >= LIMITS.headersTimeoutMs - 50, `closed after ${Math.round(out.ms)} ms, before the limit`);
  });

  it('closes a client that trickles a header line every 100 ms, with 408 and the security headers', async () => {
    const lines = Array.from({ length: 200 }, (_, i) => `X-Slow-${i}: a\r\n`);
    const out = await hold(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\n', lines, 100, BOUND_MS);
    assert.ok(out.closedByServer, `the trickling connection was still open after ${BOUND_MS} ms`);
    assert.match(out.received, /^HTTP\/1\.1 408 /);
    assert.match(out.received, /\r\nx-content-type-options: nosniff\r\n/i);
  });

  it('closes an idle keep-alive connection after HTTP_KEEP_ALIVE_TIMEOUT_MS, and says so', async () => {
    const out = await hold(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n', [], 1_000, BOUND_MS);
    assert.ok(out.closedByServer, `the idle keep-alive connection was still open after ${BOUND_MS} ms`);
    assert.match(out.received, /^HTTP\/1\.1 200 /);
    assert.match(out.received, /\r\nkeep-alive: timeout=1\r\n/i);
  });

  it('answers /metrics (and its 404s) with the API\'s security headers', async () => {
    for (const path of ['/metrics', '/login']) {
      const r = await fetch(`http://127.0.0.1:${port}${path}`);
      await r.arrayBuffer();
      assert.equal(r.status, path === '/metrics' ? 200 : 404);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff', path);
      assert.match(r.headers.get('content-security-policy') ?? '', /default-src 'none'/, path);
      assert.equal(r.headers.get('x-frame-options'), 'SAMEORIGIN', path);
    }
  });
});

describe('the METRICS_PORT listener with HTTP_MAX_REQUESTS_PER_SOCKET', () => {
  it('closes the connection after the last answer it may carry (Node left it open to the keep-alive timeout)', async () => {
    const server = await startMetricsServer({
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('silent'),
      limits: { ...LIMITS, keepAliveTimeoutMs: 5000, maxRequestsPerSocket: 1 },
    });
    try {
      const port = (server.address() as AddressInfo).port;
      const out = await hold(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n', [], 1000, 3000);
      assert.match(out.received, /^HTTP\/1\.1 200 /);
      assert.ok(out.closedByServer, 'left open after the last answer it allows');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
