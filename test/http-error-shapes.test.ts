import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ReadinessReport } from '../src/persistence/types.js';
import { DEFAULT_HTTP_LIMITS } from '../src/http/server-options.js';
import { createHttpFixture, type HttpFixture } from './support/http-fixture.js';

/**
 * Refusals made below the app's routes, on a real socket: a URL Fastify cannot decode, what Node's
 * parser refuses (a malformed request, headers too large, a request that arrives too slowly), and
 * a request that arrives while the server closes. Each used to be answered in Fastify's own shape
 * (`{"error", "message", "statusCode"}`, no security headers); every refusal has the one shape,
 * `{"reason", "code"}`, and the headers every reply carries.
 */

interface Answer {
  raw: string;
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** Sends `data` (then nothing), collects everything until the server closes or `waitMs` pass. */
function exchange(port: number, data: string, waitMs = 4_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(received);
    };
    const timer = setTimeout(done, waitMs);
    s.on('data', (d) => (received += d.toString('utf8')));
    s.on('close', done);
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? done() : reject(err)));
    s.on('connect', () => s.write(data));
  });
}

/** Splits one or more HTTP/1.1 answers with Content-Length bodies. */
function answers(raw: string): Answer[] {
  const out: Answer[] = [];
  let rest = raw;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    assert.ok(end > 0, `incomplete answer: ${rest.slice(0, 200)}`);
    const lines = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    const bodyText = Buffer.from(rest.slice(end + 4), 'utf8').subarray(0, length).toString('utf8');
    out.push({ raw: rest.slice(0, end + 4 + bodyText.length), status: Number(lines[0]!.split(' ')[1]), headers, body: bodyText ? JSON.parse(bodyText) : null });
    rest = rest.slice(end + 4 + bodyText.length);
  }
  return out;
}

function expectRefusal(a: Answer | undefined, status: number, code: string): void {
  assert.ok(a, 'no answer');
  assert.equal(a.status, status, a.raw);
  assert.equal((a.body as { code?: string }).code, code, a.raw);
  assert.equal(typeof (a.body as { reason?: unknown }).reason, 'string', a.raw);
  assert.deepEqual(Object.keys(a.body as object).sort(), ['code', 'reason'], a.raw);
  assert.ok(a.headers['content-security-policy'], `no security headers: ${a.raw}`);
  assert.equal(a.headers['x-content-type-options'], 'nosniff');
}

describe('refusals below the routes have the one error shape', () => {
  let fx: HttpFixture;
  let port: number;
  /** /ready waits for this while set: a request in flight on demand. */
  let gate: Promise<void> | null = null;
  let entered: () => void = () => undefined;

  before(async () => {
    fx = await createHttpFixture({
      logLevel: 'warn',
      limits: { ...DEFAULT_HTTP_LIMITS, headersTimeoutMs: 500, requestTimeoutMs: 1_000 },
      app: {
        readiness: async (): Promise<ReadinessReport> => {
          entered();
          if (gate) await gate;
          return { ready: true, checks: {} };
        },
      },
    });
    await fx.app.listen({ host: '127.0.0.1', port: 0 });
    port = (fx.app.server.address() as net.AddressInfo).port;
  });
  after(async () => fx.close());

  it('a URL that cannot be decoded: 400 BAD_REQUEST', async () => {
    for (const path of ['/%', '/sections/%zz/1', '/student/course%']) {
      const [a] = answers(await exchange(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
      expectRefusal(a, 400, 'BAD_REQUEST');
      assert.ok(a!.headers['x-request-id'], 'the request id is sent');
    }
  });

  it('a path parameter over the router\'s length limit: 414 URI_TOO_LONG', async () => {
    const [a] = answers(await exchange(port, `GET /sections/${'1'.repeat(120)}/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    expectRefusal(a, 414, 'URI_TOO_LONG');
  });

  it('a request Node cannot parse: 400 BAD_REQUEST, and the connection closed', async () => {
    const [a] = answers(await exchange(port, 'HELLO THERE\r\n\r\n'));
    expectRefusal(a, 400, 'BAD_REQUEST');
    const [b] = answers(await exchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'));
    expectRefusal(b, 400, 'BAD_REQUEST');
  });

  it('headers over the size limit: 431 HEADERS_TOO_LARGE', async () => {
    const [a] = answers(await exchange(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    expectRefusal(a, 431, 'HEADERS_TOO_LARGE');
  });

  it('headers that arrive too slowly: 408 REQUEST_TIMEOUT', async () => {
    const [a] = answers(await exchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\n', 4_000));
    expectRefusal(a, 408, 'REQUEST_TIMEOUT');
  });

  it('a request that arrives while the server closes is served, with Connection: close', async () => {
    let release: () => void = () => undefined;
    gate = new Promise<void>((r) => (release = r));
    const inside = new Promise<void>((r) => (entered = r));
    const s = net.connect({ host: '127.0.0.1', port });
    let received = '';
    s.on('data', (d) => (received += d.toString('utf8')));
    const closedByServer = new Promise<void>((r) => s.on('close', () => r()));
    await new Promise<void>((r) => s.on('connect', () => r()));
    s.write('GET /ready HTTP/1.1\r\nHost: x\r\n\r\n');
    await inside;
    const closing = fx.app.close();
    // The connection is busy (its request waits in /ready), so closing keeps it; this request
    // arrives on it after closing began.
    s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 200));
    release();
    await closedByServer;
    await closing;
    const [ready, health] = answers(received);
    assert.equal(ready?.status, 200, received);
    assert.equal(health?.status, 200, received);
    assert.deepEqual(health?.body, { status: 'ok' });
    assert.equal(health?.headers['connection'], 'close');
  });
});
