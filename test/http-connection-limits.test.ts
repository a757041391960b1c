import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config.js';
import { admitPipelined, DEFAULT_HTTP_LIMITS, listenOptions, type HttpLimits } from '../src/http/server-options.js';
import { createHttpFixture, S, type HttpFixture } from './support/http-fixture.js';

/**
 * The HTTP server's connection limits, checked on a real listening socket with raw TCP clients:
 * the listen backlog the kernel reports, a client that trickles its body or headers, and an idle
 * keep-alive connection.
 */

/** The accept-queue size of the listening socket on `port`, as the kernel reports it (ss's Send-Q). */
function listenBacklog(port: number): number {
  const out = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim();
  const cols = out.split(/\s+/);
  assert.ok(cols.length >= 4, `unexpected ss output: ${out}`);
  return Number(cols[2]);
}

function somaxconn(): number {
  return Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
}

interface RawOutcome {
  /** Everything the server sent. */
  received: string;
  /** The server closed the connection before the client finished (or gave up). */
  closedByServer: boolean;
  /** Bytes the client managed to send before the server closed. */
  sent: number;
}

/**
 * Sends `head` at once, then `trickle` one byte every `everyMs`, and stops after `giveUpMs`
 * (the connection then counts as held open by the client for that long).
 */
function trickle(port: number, head: string, trickleBytes: string, everyMs: number, giveUpMs: number): Promise<RawOutcome> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let received = '';
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(giveUp);
      s.destroy();
      resolve({ received, closedByServer, sent });
    };
    const giveUp = setTimeout(() => finish(false), giveUpMs);
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? finish(true) : reject(err)));
    s.on('data', (d) => (received += d.toString('latin1')));
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    s.on('connect', () => {
      s.write(head);
      sent += head.length;
      let i = 0;
      timer = setInterval(() => {
        if (i >= trickleBytes.length || s.destroyed) return;
        s.write(trickleBytes[i]!);
        sent += 1;
        i += 1;
      }, everyMs);
    });
  });
}

/** Writes `request` `times` over in one write, reads until the server closes (or 5 s pass). */
function pipeline(port: number, request: string, times: number): Promise<RawOutcome> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const expected = times;
    const finish = (closedByServer: boolean) => {
      clearTimeout(giveUp);
      s.destroy();
      resolve({ received, closedByServer, sent: request.length * times });
    };
    const giveUp = setTimeout(() => finish(false), 5_000);
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? finish(true) : reject(err)));
    s.on('data', (d) => {
      received += d.toString('latin1');
      // Every answer in: done (the server keeps the connection, as keep-alive does).
      if (statusLines(received).length === expected && received.endsWith('}')) finish(false);
    });
    s.on('close', () => finish(true));
    s.on('connect', () => s.write(request.repeat(times)));
  });
}

function statusLines(received: string): string[] {
  // Not anchored: an answer follows the previous body on the same line.
  return received.match(/HTTP\/1\.1 \d{3} /g) ?? [];
}

describe('admitPipelined', () => {
  const fake = () => {
    const socket = {
      destroyed: false,
      paused: false,
      ended: false,
      pause() {
        this.paused = true;
      },
      end() {
        this.ended = true;
      },
    };
    return { req: { socket } as unknown as IncomingMessage, socket };
  };
  /** Admits one request; records when it runs or is refused. */
  const admit = (req: IncomingMessage, max: number, log: string[], name: string) => {
    const res = new EventEmitter();
    admitPipelined(req, res as ServerResponse, max, () => log.push(`run ${name}`), () => log.push(`refuse ${name}`));
    return res;
  };

  it('runs a connection\'s requests one after another, in the order they arrived', () => {
    const { req } = fake();
    const log: string[] = [];
    const a = admit(req, 8, log, 'a');
    const b = admit(req, 8, log, 'b');
    admit(req, 8, log, 'c');
    assert.deepEqual(log, ['run a'], 'b and c wait for a');
    a.emit('close');
    assert.deepEqual(log, ['run a', 'run b']);
    b.emit('close');
    assert.deepEqual(log, ['run a', 'run b', 'run c']);
  });

  it('does not serve a waiting request once its connection is gone', () => {
    const { req, socket } = fake();
    const log: string[] = [];
    const a = admit(req, 8, log, 'a');
    admit(req, 8, log, 'b');
    (socket as { destroyed: boolean }).destroyed = true;
    a.emit('close');
    assert.deepEqual(log, ['run a', 'refuse b']);
  });

  it('over the bound: refuses that request and those waiting, answers the running one, then closes', () => {
    const { req, socket } = fake();
    const log: string[] = [];
    const a = admit(req, 2, log, 'a');
    admit(req, 2, log, 'b');
    admit(req, 2, log, 'c');
    assert.deepEqual(log, ['run a', 'refuse c']);
    assert.equal(socket.paused, true, 'no more of its requests is read');
    assert.equal(socket.ended, false, 'the running request is still answered');
    a.emit('close');
    assert.deepEqual(log, ['run a', 'refuse c', 'refuse b']);
    assert.equal(socket.ended, true);
    admit(req, 2, log, 'd');
    assert.deepEqual(log.at(-1), 'refuse d', 'nothing more from a refused connection');
  });

  it('counts only unanswered requests, and 0 means no bound', () => {
    const { req } = fake();
    const log: string[] = [];
    for (let i = 0; i < 5; i++) admit(req, 2, log, String(i)).emit('close');
    assert.deepEqual(log, ['run 0', 'run 1', 'run 2', 'run 3', 'run 4']);
    const other = fake();
    const many: string[] = [];
    for (let i = 0; i < 100; i++) admit(other.req, 0, many, String(i));
    assert.deepEqual(many, ['run 0']);
    assert.equal(other.socket.paused, false);
  });
});

describe('HTTP connection limits: configuration', () => {
  it('defaults suit a rush: headers 5 s, whole request 10 s, idle keep-alive 5 s, backlog up to somaxconn', () => {
    const c = loadConfig({});
    assert.equal(c.listenBacklog, 65_535);
    assert.deepEqual(c.http, DEFAULT_HTTP_LIMITS);
    assert.ok(c.http.requestTimeoutMs > 0, 'a request must have a deadline');
  });

  it('takes every limit from the environment and refuses headers longer than the request', () => {
    const c = loadConfig({
      LISTEN_BACKLOG: '2048',
      HTTP_HEADERS_TIMEOUT_MS: '2000',
      HTTP_REQUEST_TIMEOUT_MS: '4000',
      HTTP_KEEP_ALIVE_TIMEOUT_MS: '3000',
      HTTP_IDLE_TIMEOUT_MS: '20000',
      HTTP_MAX_REQUESTS_PER_SOCKET: '100',
      HTTP_MAX_PIPELINED_REQUESTS: '4',
    });
    assert.equal(c.listenBacklog, 2048);
    assert.deepEqual(c.http, { headersTimeoutMs: 2000, requestTimeoutMs: 4000, keepAliveTimeoutMs: 3000, idleTimeoutMs: 20000, maxRequestsPerSocket: 100, maxPipelinedRequests: 4 });
    assert.throws(() => loadConfig({ HTTP_HEADERS_TIMEOUT_MS: '9000', HTTP_REQUEST_TIMEOUT_MS: '4000' }), /HTTP_HEADERS_TIMEOUT_MS must not be larger/);
    assert.throws(() => loadConfig({ HTTP_REQUEST_TIMEOUT_MS: '0' }), /HTTP_REQUEST_TIMEOUT_MS must be a whole number/);
  });
});

describe('HTTP connection limits: a real listening server', () => {
  const limits: HttpLimits = { headersTimeoutMs: 800, requestTimeoutMs: 1500, keepAliveTimeoutMs: 1000, idleTimeoutMs: 60_000, maxRequestsPerSocket: 0, maxPipelinedRequests: 8 };
  let fx: HttpFixture;
  let port: number;

  before(async () => {
    fx = await createHttpFixture({ limits, logLevel: 'warn' });
    const config = loadConfig({ HOST: '127.0.0.1', PORT: '0' });
    await fx.app.listen(listenOptions({ host: config.host, port: config.port, backlog: config.listenBacklog }));
    port = (fx.app.server.address() as net.AddressInfo).port;
  });
  after(async () => fx.close());

  it('listens with the configured backlog, capped by the kernel (not Node default 511)', () => {
    assert.equal(listenBacklog(port), Math.min(65_535, somaxconn()));
  });

  it('cuts off a client that trickles its body with 408, long before it would finish', async () => {
    const body = JSON.stringify({ user: 1, password: 'whatever-it-is', staff: false });
    const head = `POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    // One byte every 200 ms: the body would take over 10 s; the client gives up after 8 s.
    const out = await trickle(port, head, body, 200, 8_000);
    assert.ok(out.closedByServer, `the server kept the trickling connection open (${out.sent} bytes sent, received ${JSON.stringify(out.received)})`);
    assert.match(out.received, /^HTTP\/1\.1 408 /);
    assert.ok(out.sent < head.length + body.length, 'the body was never completed');
  });

  it('cuts off a client that trickles its headers with 408', async () => {
    const rest = 'Host: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n';
    const out = await trickle(port, 'GET /health HTTP/1.1\r\n', rest, 200, 8_000);
    assert.ok(out.closedByServer, 'the server kept the trickling connection open');
    assert.match(out.received, /^HTTP\/1\.1 408 /);
  });

  it('closes an idle keep-alive connection after the keep-alive timeout, after answering', async () => {
    const out = await trickle(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', '', 1_000, 8_000);
    assert.ok(out.closedByServer, 'the idle keep-alive connection was never closed');
    assert.match(out.received, /^HTTP\/1\.1 200 /);
    assert.match(out.received, /keep-alive: timeout=1\b/i);
  });

  it('an HTTP/1.1 request without Host is a 400 in the one error shape (Node answered a bare 400); HTTP/1.0 may go without', async () => {
    const out = await trickle(port, 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n', '', 1_000, 3_000);
    assert.match(out.received, /^HTTP\/1\.1 400 /);
    assert.match(out.received, /x-content-type-options: nosniff/i, 'with the security headers');
    const body = out.received.slice(out.received.indexOf('\r\n\r\n') + 4);
    assert.match(body, /"code":"BAD_REQUEST"/);
    assert.match(body, /needs a Host header/);
    const old = await trickle(port, 'GET /health HTTP/1.0\r\n\r\n', '', 1_000, 3_000);
    assert.match(old.received, /^HTTP\/1\.1 200 /);
  });

  it('answers a few pipelined requests in order, as before', async () => {
    const out = await pipeline(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', limits.maxPipelinedRequests);
    assert.equal(statusLines(out.received).length, limits.maxPipelinedRequests, out.received.slice(0, 300));
    assert.ok(statusLines(out.received).every((l) => l.startsWith('HTTP/1.1 200 ')));
  });

  it('counts only unanswered requests: a keep-alive client that reads each answer is never cut off', async () => {
    const s = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((r) => s.once('connect', () => r()));
    let received = '';
    s.on('data', (d) => (received += d.toString('latin1')));
    const n = limits.maxPipelinedRequests * 3;
    for (let i = 1; i <= n; i++) {
      s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      while (statusLines(received).length < i && !s.destroyed) await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(statusLines(received).length, n);
    assert.ok(!s.destroyed, 'the connection was closed');
    s.destroy();
  });

  it('closes a connection that pipelines more requests than the bound, and serves no more of them', async () => {
    // 200 requests in one write: before the bound each was served and its answer held for the client.
    const out = await pipeline(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 200);
    assert.ok(out.closedByServer, 'the connection stayed open');
    const answered = statusLines(out.received).length;
    assert.ok(answered <= limits.maxPipelinedRequests, `${answered} of 200 pipelined requests were answered`);
    // Everyone else is served as before.
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
  });

  it('runs pipelined requests in the order sent, bodies or not (enroll, list, drop, list)', async () => {
    const token = fx.token(S.alice);
    const body = JSON.stringify({ course_id: 101, group_id: 2 });
    const auth = `Host: x\r\nAuthorization: Bearer ${token}\r\n`;
    const requests =
      `PUT /student/course HTTP/1.1\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
      `GET /student/course HTTP/1.1\r\n${auth}\r\n` +
      `DELETE /student/course?course_id=101 HTTP/1.1\r\n${auth}\r\n` +
      `GET /student/course HTTP/1.1\r\n${auth}Connection: close\r\n\r\n`;
    const out = await pipeline(port, requests, 1);
    const lines = statusLines(out.received);
    // Before: the GETs and the DELETE (no body to read) ran before the PUT: [], 400 NOT_ENROLLED, [], and the enroll stayed.
    assert.deepEqual(lines, ['HTTP/1.1 204 ', 'HTTP/1.1 200 ', 'HTTP/1.1 204 ', 'HTTP/1.1 200 '], out.received.slice(0, 400));
    // The first list (between the first 200 and the second 204) holds the course; the last is empty.
    const firstList = out.received.slice(out.received.indexOf('HTTP/1.1 200 '), out.received.lastIndexOf('HTTP/1.1 204 '));
    assert.match(firstList, /"course_id":101/);
    assert.ok(out.received.endsWith('{"data":[]}'), out.received.slice(-200));
    assert.equal(fx.engine.studentSections(S.alice).length, 0);
  });

  it('over the pipelining bound, a write already running is answered; one not answered was not done', async () => {
    const token = fx.token(S.alice);
    const body = JSON.stringify({ course_id: 102, group_id: 1 });
    const put = `PUT /student/course HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    // The enroll, then one more request than the bound allows.
    const out = await pipeline(port, put + 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(limits.maxPipelinedRequests), 1);
    assert.ok(out.closedByServer, 'the connection stayed open');
    const held = fx.engine.studentSections(S.alice).some((h) => h.section.info.courseId === 102);
    // Before: the connection was destroyed at once and the enroll was done without its answer.
    assert.equal(statusLines(out.received)[0], 'HTTP/1.1 204 ', `enroll held: ${held}; received ${JSON.stringify(out.received.slice(0, 200))}`);
    assert.ok(held);
    assert.ok(statusLines(out.received).length <= limits.maxPipelinedRequests);
  });

  it('serves a request that arrives at network speed as before', async () => {
    const r = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal(r.status, 200);
  });
});

describe('HTTP_MAX_REQUESTS_PER_SOCKET: the last request a connection may carry', () => {
  const limits: HttpLimits = { headersTimeoutMs: 800, requestTimeoutMs: 1500, keepAliveTimeoutMs: 5000, idleTimeoutMs: 60_000, maxRequestsPerSocket: 1, maxPipelinedRequests: 8 };
  let fx: HttpFixture;
  let port: number;

  before(async () => {
    fx = await createHttpFixture({ limits, logLevel: 'warn' });
    await fx.app.listen({ host: '127.0.0.1', port: 0 });
    port = (fx.app.server.address() as net.AddressInfo).port;
  });
  after(async () => fx.close());

  it('is answered with Connection: close and the connection is closed then, not left open for the keep-alive timeout (no bare 503 after it)', async () => {
    // The client keeps its end open for 3 s (below the 5 s keep-alive timeout).
    const out = await trickle(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', '', 3_000, 4_000);
    assert.match(out.received, /^HTTP\/1\.1 200 /);
    assert.match(out.received, /connection: close/i);
    assert.ok(out.closedByServer, 'the server left the connection open after the last answer it allows');
    assert.equal(statusLines(out.received).length, 1, `one answer only: ${out.received.slice(0, 300)}`);
  });
});
