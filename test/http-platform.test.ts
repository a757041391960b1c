import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { createHttpFixture, expectError, expectStatus, GUARDED, parsedLogs, type HttpFixture } from './support/http-fixture.js';

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

describe('GET /health and GET /ready', () => {
  it('health answers 200 {status: ok} without a token', async () => {
    const r = await fx.request('GET', '/health');
    expectStatus(r, 200);
    assert.deepEqual(r.body, { status: 'ok' });
  });

  it('ready answers 200 with the report when storage is ready', async () => {
    const r = await fx.request('GET', '/ready');
    expectStatus(r, 200);
    assert.deepEqual(r.body, { ready: true, checks: { memory: { ok: true } } });
  });

  it('ready answers 503 with the report when storage is not ready', async () => {
    fx.readiness.report = { ready: false, checks: { database: { ok: false, detail: 'connection refused' }, broker: { ok: true } } };
    const r = await fx.request('GET', '/ready');
    expectStatus(r, 503);
    assert.deepEqual(r.body, fx.readiness.report);
  });

  it('ready answers 503 with a short reason when the check itself fails; the details are only logged', async () => {
    fx.readiness.report = new Error('connect ECONNREFUSED 10.1.2.3:5432 (user enroll_admin)');
    const r = await fx.request('GET', '/ready');
    expectStatus(r, 503);
    assert.equal(r.body.ready, false);
    assert.deepEqual(r.body.checks, { readiness: { ok: false, detail: 'the readiness check failed' } });
    assert.doesNotMatch(r.raw, /ECONNREFUSED|10\.1\.2\.3|enroll_admin/);
    assert.ok(fx.logs.some((l) => l.includes('ECONNREFUSED 10.1.2.3:5432')), 'the details are in the log');
  });
});

describe('OpenAPI document and UI', () => {
  it('documents every route, with a bearer scheme, at /docs/json', async () => {
    const r = await fx.request('GET', '/docs/json');
    expectStatus(r, 200);
    assert.match(r.body.openapi, /^3\./);
    assert.deepEqual(r.body.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
    const documented = new Set<string>();
    for (const [path, ops] of Object.entries(r.body.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(ops)) documented.add(`${method.toUpperCase()} ${path}`);
    }
    const expected = [
      'GET /health', 'GET /ready', 'POST /login',
      ...GUARDED.map((g) => `${g.method} ${g.url.split('?')[0]!.replace('/101/1', '/{courseId}/{groupId}').replace(/^\/(students|staff)\/1$/, '/$1/{id}')}`),
    ];
    for (const e of expected) assert.ok(documented.has(e), `${e} is not documented`);
    // Guarded routes declare the bearer requirement; error replies are documented too.
    const put = r.body.paths['/student/course'].put;
    assert.deepEqual(put.security, [{ bearerAuth: [] }]);
    assert.ok(put.responses['204'] && put.responses['4XX'] && put.responses['5XX']);
    assert.deepEqual(put.requestBody.content['application/json'].schema.required, ['course_id', 'group_id']);
    assert.equal(r.body.paths['/health'].get.security, undefined);
  });

  it('serves the UI and its assets locally, with no CDN', async () => {
    const ui = await fx.app.inject({ method: 'GET', url: '/docs' });
    assert.ok(ui.statusCode === 200 || ui.statusCode === 302, `docs: ${ui.statusCode}`);
    const index = await fx.app.inject({ method: 'GET', url: '/docs/static/index.html' });
    const html = index.statusCode === 200 ? index.body : ui.body;
    assert.match(html, /swagger-ui/i);
    assert.doesNotMatch(html, /(src|href)=["']https?:\/\//i);
    const css = await fx.app.inject({ method: 'GET', url: '/docs/static/swagger-ui.css' });
    assert.equal(css.statusCode, 200);
    const js = await fx.app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' });
    assert.equal(js.statusCode, 200);
  });
});

describe('unknown routes', () => {
  it('answer 404 {reason, code: NOT_FOUND} as JSON', async () => {
    for (const [method, url] of [['GET', '/nope'], ['GET', '/sections/1/2/3/4'], ['DELETE', '/nope/student/course']] as const) {
      const r = await fx.request(method, url, { token: fx.studentToken() });
      expectError(r, 404, 'NOT_FOUND');
      assert.match(String(r.headers['content-type']), /application\/json/);
    }
  });

  it('answer a known path asked with another method 405 METHOD_NOT_ALLOWED, with Allow, and change nothing', async () => {
    const cases: [string, string, string][] = [
      ['POST', '/student/course', 'GET, HEAD, PUT, PATCH, DELETE'],
      ['PUT', '/login', 'POST'],
      ['GET', '/login', 'POST'],
      ['PUT', '/staff/capacity', 'PATCH'],
      ['POST', '/student/course/?x=1', 'GET, HEAD, PUT, PATCH, DELETE'],
      ['DELETE', '/sections/101/1', 'GET, HEAD, PATCH'],
    ];
    for (const [method, url, allow] of cases) {
      const r = await fx.request(method, url, { token: fx.studentToken(), body: { course_id: 101, group_id: 1 } });
      expectError(r, 405, 'METHOD_NOT_ALLOWED');
      assert.equal(r.headers.allow, allow, `${method} ${url}`);
      assert.match(r.body.reason, new RegExp(`^${method} is not allowed on `));
    }
    // Nothing was enrolled by the POST.
    assert.deepEqual((await fx.request('GET', '/student/course', { token: fx.studentToken() })).body.data, []);
  });
});

describe('request ids', () => {
  it('echoes a caller-supplied x-request-id, sanitised and capped at 100 characters', async () => {
    const plain = await fx.request('GET', '/health', { headers: { 'x-request-id': 'abc-123' } });
    assert.equal(plain.headers['x-request-id'], 'abc-123');
    const dirty = await fx.request('GET', '/health', { headers: { 'x-request-id': 'a b<script>"c\'' } });
    assert.equal(dirty.headers['x-request-id'], 'abscriptc');
    const long = await fx.request('GET', '/health', { headers: { 'x-request-id': 'x'.repeat(500) } });
    assert.equal(long.headers['x-request-id'], 'x'.repeat(100));
  });

  it('generates a UUID when none (or nothing usable) is supplied, also on errors', async () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const a = await fx.request('GET', '/health');
    const b = await fx.request('GET', '/health', { headers: { 'x-request-id': '<<>>' } });
    const c = await fx.request('GET', '/student/course');
    const d = await fx.request('GET', '/nope');
    for (const r of [a, b, c, d]) assert.match(String(r.headers['x-request-id']), uuid);
    assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
  });

  it('stamps the request id and the actor on the transitions a request causes', async () => {
    const r = await fx.request('PUT', '/staff/force-std', {
      token: fx.staffToken(),
      body: { std_id: 1, course_id: 108, group_id: 1 },
      headers: { 'x-request-id': 'force-42' },
    });
    expectStatus(r, 204);
    const last = fx.persistence.log.at(-1);
    assert.ok(last && 'cause' in last);
    assert.deepEqual({ requestId: last.cause.requestId, actor: last.cause.actor }, { requestId: 'force-42', actor: 'staff:900' });
  });
});

describe('unexpected errors', () => {
  it('answer 500 {reason: internal error, code: INTERNAL}, leak nothing, and log the error under err', async () => {
    fx.engine.listSections = () => {
      throw new TypeError('secret internals exploded');
    };
    const r = await fx.request('GET', '/sections', { token: fx.studentToken() });
    expectStatus(r, 500);
    assert.deepEqual(r.body, { reason: 'internal error', code: 'INTERNAL' });
    assert.ok(!r.raw.includes('exploded'));
    const line = parsedLogs(fx).find((l) => (l['err'] as { message?: string } | undefined)?.message === 'secret internals exploded');
    assert.ok(line, 'the error is logged with the err key');
    assert.equal(line['level'], 50);
    assert.match(String((line['err'] as { stack?: string }).stack), /TypeError/);
    assert.equal(line['reqId'], r.headers['x-request-id']);
  });

  it('unsupported media types are 415, oversized bodies 413, never 500', async () => {
    const t = fx.studentToken();
    const form = await fx.request('PUT', '/student/course', { token: t, rawBody: 'course_id=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expectError(form, 415, 'UNSUPPORTED_MEDIA_TYPE');
    const big = await fx.request('PUT', '/student/course', { token: t, rawBody: JSON.stringify({ x: 'y'.repeat(100_000) }) });
    expectError(big, 413, 'PAYLOAD_TOO_LARGE');
  });

  it('a JSON body without a content type is read as JSON, as the Go service did', async () => {
    const r = await fx.app.inject({
      method: 'PUT',
      url: '/student/course',
      headers: { authorization: `Bearer ${fx.studentToken()}` },
      payload: Buffer.from(JSON.stringify({ course_id: 108, group_id: 1 })),
    });
    assert.equal(r.statusCode, 204, r.body);
    const utf8 = await fx.request('PUT', '/student/course', {
      token: fx.studentToken(),
      body: { course_id: 101, group_id: 1 },
      headers: { 'content-type': 'application/json; charset=utf-8' },
    });
    expectStatus(utf8, 204);
  });

  it('a JSON body with an empty Content-Type header (what Go\'s http.Post(url, "", body) sends) is read as JSON, as with none', async () => {
    for (const empty of ['', ' ']) {
      const r = await fx.app.inject({
        method: 'PUT',
        url: '/student/course',
        headers: { authorization: `Bearer ${fx.studentToken()}`, 'content-type': empty },
        payload: Buffer.from(JSON.stringify({ course_id: 108, group_id: 1 })),
      });
      assert.notEqual(r.statusCode, 415, `Content-Type ${JSON.stringify(empty)}: ${r.body}`);
      // Read as JSON: enrolled, or (the earlier test enrolled in 108 already) refused by the rules about course 108.
      assert.ok(r.statusCode === 204 || r.json().code === 'SAME_COURSE', `${r.statusCode} ${r.body}`);
    }
  });

  it("a JSON body sent as text/plain (a browser's fetch with a string body) is read as JSON, as the Go service did", async () => {
    const r = await fx.request('PUT', '/student/course', {
      token: fx.studentToken(),
      rawBody: JSON.stringify({ course_id: 108, group_id: 1 }),
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
    });
    expectStatus(r, 204);
    const bad = await fx.request('PUT', '/student/course', { token: fx.studentToken(), rawBody: 'course_id=1', headers: { 'content-type': 'text/plain' } });
    expectError(bad, 400, 'BAD_REQUEST');
  });
});

describe('request loggers', () => {
  it('with request logging on, both request lines carry the request id, and the token is redacted', async () => {
    const lfx = await createHttpFixture({ logRequests: true, logLevel: 'info' });
    try {
      const token = lfx.studentToken();
      const r = await lfx.request('GET', '/student/course', { token, headers: { 'x-request-id': 'list-7' } });
      expectStatus(r, 200);
      const lines = parsedLogs(lfx).filter((l) => l['reqId'] === 'list-7');
      assert.deepEqual(lines.map((l) => l['msg']), ['incoming request', 'request completed']);
      assert.ok(!lfx.logs.join('\n').includes(token), 'the token never reaches the log');
    } finally {
      await lfx.close();
    }
  });

  it('at level warn, refusals write nothing and an unexpected error still carries the request id', async () => {
    const wfx = await createHttpFixture({ logLevel: 'warn' });
    try {
      expectError(await wfx.request('GET', '/student/course'), 401, 'UNAUTHENTICATED');
      assert.equal(wfx.logs.length, 0);
      wfx.engine.listSections = () => {
        throw new TypeError('exploded at warn');
      };
      const r = await wfx.request('GET', '/sections', { token: wfx.studentToken() });
      expectStatus(r, 500);
      const line = parsedLogs(wfx).find((l) => (l['err'] as { message?: string } | undefined)?.message === 'exploded at warn');
      assert.ok(line, 'the error is logged');
      assert.equal(line['reqId'], r.headers['x-request-id']);
    } finally {
      await wfx.close();
    }
  });
});

describe('a route that serves the method but finds nothing (probe O2, finding 4)', () => {
  it('a missing file under /docs/static is 404 NOT_FOUND, not 405 naming the method it says is allowed', async () => {
    for (const method of ['GET', 'HEAD'] as const) {
      const r = await fx.app.inject({ method, url: '/docs/static/xyz.js' });
      assert.equal(r.statusCode, 404, `${method}: ${r.statusCode} ${r.body}`);
      assert.equal(r.headers.allow, undefined);
      if (method === 'GET') assert.deepEqual(r.json(), { reason: 'nothing found at /docs/static/xyz.js', code: 'NOT_FOUND' });
    }
    // A method the static route does not serve is still 405 with Allow.
    const post = await fx.request('POST', '/docs/static/xyz.js');
    expectError(post, 405, 'METHOD_NOT_ALLOWED');
    assert.equal(post.headers.allow, 'GET, HEAD');
    // And a file that is there is served.
    assert.equal((await fx.app.inject({ method: 'GET', url: '/docs/static/swagger-ui.css' })).statusCode, 200);
  });
});
