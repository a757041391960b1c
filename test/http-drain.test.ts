import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { createDrain, type Drain } from '../src/http/drain.js';
import { DEFAULT_HTTP_LIMITS, type HttpLimits } from '../src/http/server-options.js';
import { createHttpFixture, S, type HttpFixture } from './support/http-fixture.js';

/**
 * The graceful shutdown (src/http/drain.ts) over real sockets: what a client on a kept-alive or a
 * just-opened connection gets while the server closes. Each case also runs against a plain
 * `app.close()`, which shows what the drain is for (the case would fail with it).
 */

interface Raw {
  socket: Socket;
  /** Everything received so far. */
  text(): string;
  /** Resolves when the server ended or reset the connection (the error code, if any). */
  closed: Promise<string | null>;
}

async function open(port: number): Promise<Raw> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let received = '';
  socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
  const closed = new Promise<string | null>((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.once('close', () => resolve(null));
  });
  return { socket, text: () => received, closed };
}

const GET_HEALTH = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const responses = (text: string): string[] => text.split('HTTP/1.1 ').slice(1);

async function listening(drain: Drain, limits: Partial<HttpLimits> = {}): Promise<{ fx: HttpFixture; port: number }> {
  // Idle kept-alive connections live longer than any test here: what closes them is the drain.
  const fx = await createHttpFixture({ app: { drain }, limits: { ...DEFAULT_HTTP_LIMITS, keepAliveTimeoutMs: 60_000, ...limits } });
  await fx.app.listen({ host: '127.0.0.1', port: 0 });
  const address = fx.app.server.address();
  assert.ok(address && typeof address === 'object');
  return { fx, port: address.port };
}

/** A listening app with one raw connection open to it; both gone afterwards. */
async function withConnection(fn: (fx: HttpFixture, drain: Drain, c: Raw, port: number) => Promise<void>): Promise<void> {
  const drain = createDrain();
  const { fx, port } = await listening(drain);
  const c = await open(port);
  try {
    await fn(fx, drain, c, port);
  } finally {
    c.socket.destroy();
    if (fx.app.server.listening) await fx.app.close();
    fx.engine.stop();
  }
}

/** Sends a request on a kept-alive connection and waits for its (kept-alive) answer. */
async function keptAlive(c: Raw): Promise<void> {
  c.socket.write(GET_HEALTH);
  await until(() => responses(c.text()).length === 1, 'the first answer');
  assert.doesNotMatch(c.text(), /connection: close/i, 'kept alive before the shutdown');
}

/** How each case closes: through the drain, or Fastify's close as before it. */
const closers = {
  drain: (fx: HttpFixture, drain: Drain, deadlineMs: number) => drain.close(fx.app, { deadline: performance.now() + deadlineMs }),
  plain: (fx: HttpFixture) => fx.app.close(),
};

describe('graceful shutdown of the HTTP server', () => {
  test('once it begins: every answer says Connection: close, and /ready says 503 with the reason', async () => {
    const drain = createDrain();
    const { fx } = await listening(drain);
    try {
      const before = await fx.request('GET', '/ready');
      assert.equal(before.status, 200);
      assert.notEqual(before.headers.connection, 'close');
      drain.begin();
      const ready = await fx.request('GET', '/ready');
      assert.equal(ready.status, 503);
      assert.equal(ready.body.checks.shutdown.ok, false);
      assert.match(ready.body.checks.shutdown.detail, /shutting down/);
      const health = await fx.request('GET', '/health');
      assert.equal(health.status, 200);
      assert.equal(health.headers.connection, 'close');
    } finally {
      await fx.close();
    }
  });

  for (const how of ['drain', 'plain'] as const) {
    const outcome = how === 'drain' ? 'is answered, then the connection is closed' : 'is not answered: the idle connection was closed under the client (why the drain exists)';
    test(`${how}: a request sent on a kept-alive connection during the shutdown ${outcome}`, () =>
      withConnection(async (fx, drain, c) => {
        await keptAlive(c);
        drain.begin();
        const closing = how === 'drain' ? closers.drain(fx, drain, 2000) : closers.plain(fx);
        // The client, unaware, writes its next request on the connection it kept.
        await new Promise((r) => setTimeout(r, 100));
        c.socket.write(GET_HEALTH);
        const err = await c.closed;
        await closing;
        const answers = responses(c.text());
        if (how === 'plain') {
          // Before the drain: the idle connection was closed under the client, its request unanswered.
          assert.equal(answers.length, 1, 'plain close: the second request is not answered');
          return;
        }
        assert.equal(err, null, 'no reset');
        assert.equal(answers.length, 2, `both requests answered: ${c.text()}`);
        assert.match(answers[1] as string, /^200 /);
        assert.match(answers[1] as string, /connection: close/i);
      }),
    );
  }

  test('an open event stream ends when the shutdown begins, so the drain does not wait for it until its deadline; a stream opened during the drain ends at once', { timeout: 20_000 }, () =>
    withConnection(async (fx, drain, c, port) => {
      c.socket.write(`GET /admin/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fx.staffToken()}\r\n\r\n`);
      await until(() => c.text().includes('event: ready'), 'the stream to open');
      drain.begin();
      assert.equal(await c.closed, null, 'the stream ended cleanly (no reset)');
      assert.match(c.text(), /retry: \d+/, 'the client was told when to reconnect');
      // A page reconnecting to this instance meanwhile gets its stream ended at once.
      const again = await open(port);
      again.socket.write(`GET /admin/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fx.staffToken()}\r\n\r\n`);
      assert.equal(await again.closed, null);
      assert.match(again.text(), /^HTTP\/1.1 200 /);
      // Nothing left open: a minute's deadline is not waited for (the test's timeout is 20 s).
      await drain.close(fx.app, { deadline: performance.now() + 60_000 });
    }),
  );

  test('a connection accepted just before the close has its request answered; a new one is refused', () =>
    withConnection(async (fx, drain, c, port) => {
      // No drain period at all (Ctrl-C): the server closes at once.
      const closing = drain.close(fx.app, { deadline: 0 });
      await new Promise((r) => setTimeout(r, 50));
      c.socket.write(GET_HEALTH);
      const err = await c.closed;
      await closing;
      const answers = responses(c.text());
      assert.equal(err, null, 'no reset');
      assert.equal(answers.length, 1, `answered: ${c.text()}`);
      assert.match(answers[0] as string, /^200 /);
      // Nobody new gets in: the listener is closed (refused, nothing sent: safe to retry elsewhere).
      await assert.rejects(open(port), (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED');
    }),
  );

  test('the drain ends as soon as no connection is open, without waiting for its deadline', () =>
    withConnection(async (fx, drain, c) => {
      await keptAlive(c);
      drain.begin();
      const t0 = performance.now();
      const closing = drain.close(fx.app, { deadline: t0 + 20_000 });
      await new Promise((r) => setTimeout(r, 100));
      c.socket.write(GET_HEALTH);
      await c.closed;
      await closing;
      const ms = performance.now() - t0;
      assert.ok(ms < 5000, `closed ${Math.round(ms)} ms after it began, once its one connection left (deadline 20 s)`);
      assert.equal(fx.app.server.listening, false);
    }),
  );

  test('after the drain, a request still arriving (its body or its headers) is answered 408 within the closing bound; one that arrived is answered once its write is durable, and the close ends then', { timeout: 30_000 }, async () => {
    const drain = createDrain();
    // Limits longer than the test waits for the 408s: only the drain's own bound can explain them.
    const { fx, port } = await listening(drain, { headersTimeoutMs: 8_000, requestTimeoutMs: 10_000 });
    let release = () => {};
    fx.persistence.holdAppends = new Promise<void>((r) => (release = r));
    let appends = 0;
    const append = fx.persistence.append.bind(fx.persistence);
    fx.persistence.append = (events) => {
      appends += 1;
      return append(events);
    };
    const conns: Raw[] = [];
    try {
      // Fully received before the close; its write waits for a slow store.
      const body = JSON.stringify({ course_id: 101, group_id: 2 });
      const inFlight = await open(port);
      conns.push(inFlight);
      inFlight.socket.write(
        `PUT /student/course HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fx.studentToken(S.alice)}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      await until(() => appends > 0, 'the enroll to reach the store');
      // A body announced as 100 bytes, 10 of them sent; headers without their closing blank line.
      const partialBody = await open(port);
      partialBody.socket.write('POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user": 1');
      const partialHeaders = await open(port);
      partialHeaders.socket.write('GET /health HTTP/1.1\r\nHost: x\r\n');
      conns.push(partialBody, partialHeaders);

      let closed = false;
      const t0 = performance.now();
      // No drain period (Ctrl-C): the listener stops at once.
      const closing = drain.close(fx.app, { deadline: 0 }).then(() => (closed = true));
      const ended = { body: false, headers: false };
      void partialBody.closed.then(() => (ended.body = true));
      void partialHeaders.closed.then(() => (ended.headers = true));
      // Before the fix, Node's limits stopped with the listener: these stayed open for ever.
      await until(() => ended.body && ended.headers, 'the incomplete requests to be ended', 5_000);
      const ms = performance.now() - t0;
      for (const c of [partialBody, partialHeaders]) {
        assert.match(c.text(), /^HTTP\/1\.1 408 /, c.text());
        assert.match(c.text(), /"code":"REQUEST_TIMEOUT"/);
      }
      assert.ok(ms < 5_000, `ended ${Math.round(ms)} ms after the close began (limits: 8 s, 10 s)`);

      // The request that had arrived is not cut: it waits for its write, and the close for it.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(inFlight.text(), '', 'not answered before its write is durable');
      assert.equal(closed, false, 'the close waits for the request in flight');
      const released = performance.now();
      release();
      assert.equal(await inFlight.closed, null, 'no reset');
      assert.match(inFlight.text(), /^HTTP\/1\.1 204 /, inFlight.text());
      await closing;
      // Its answer said keep-alive (it came before the drain): the connection is closed once the
      // answer is out, not held for the keep-alive timeout (60 s here).
      assert.ok(performance.now() - released < 5_000, `closed ${Math.round(performance.now() - released)} ms after the write was released`);
      assert.equal(fx.app.server.listening, false);
      assert.ok(fx.engine.studentSections(S.alice).some((h) => h.section.info.courseId === 101), 'enrolled');
    } finally {
      release();
      for (const c of conns) c.socket.destroy();
      if (fx.app.server.listening) await fx.app.close();
      fx.engine.stop();
    }
  });
});
