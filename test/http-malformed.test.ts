import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ClusterMembership } from '../src/persistence/types.js';
import { createHttpFixture, expectError, GUARDED, PASSWORD, S, type HttpFixture, type Reply } from './support/http-fixture.js';

/**
 * Malformed requests: every mutating route must answer each of them with 400 and a reason, before
 * anything reaches the engine; and no request at all, however odd, may produce a 5xx.
 */

let fx: HttpFixture;
before(async () => {
  fx = await createHttpFixture();
});
after(async () => {
  await fx.close();
});

type Role = 'student' | 'staff' | 'none';

interface BodyRoute {
  method: string;
  url: string;
  role: Role;
  /** A body the route accepts. */
  valid: Record<string, unknown>;
  /** Fields that must be present. */
  required: string[];
  /** Integer fields that may not be null. */
  ints: string[];
  /** A Go service route: a member it does not know is ignored, as its decoder did (test/http-go-status.test.ts). */
  go?: boolean;
}

const BODY_ROUTES: BodyRoute[] = [
  {
    method: 'PUT', url: '/student/course', role: 'student', go: true,
    valid: { course_id: 101, group_id: 1 }, required: ['course_id', 'group_id'], ints: ['course_id', 'group_id'],
  },
  {
    method: 'PATCH', url: '/student/course', role: 'student', go: true,
    valid: { course_id: 101, group_id: 2 }, required: ['course_id', 'group_id'], ints: ['course_id', 'group_id'],
  },
  {
    method: 'PUT', url: '/staff/force-std', role: 'staff', go: true,
    valid: { std_id: 2, course_id: 108, group_id: 1 }, required: ['std_id', 'course_id', 'group_id'], ints: ['std_id', 'course_id', 'group_id'],
  },
  {
    method: 'PATCH', url: '/staff/capacity', role: 'staff', go: true,
    valid: { course_id: 108, group_id: 1, capacity: 40 }, required: ['course_id', 'group_id', 'capacity'], ints: ['course_id', 'group_id', 'capacity'],
  },
  {
    method: 'POST', url: '/sections', role: 'staff',
    valid: { course_id: 301, group_id: 1, name: 'New', units: 3, capacity: 10, reserve_capacity: 2, exam_time: 1_800_000_000, class_time: 4194784 + 1440 * 600 },
    required: ['course_id', 'group_id', 'name', 'units', 'capacity', 'reserve_capacity'],
    ints: ['course_id', 'group_id', 'units', 'capacity', 'reserve_capacity'],
  },
  {
    method: 'PATCH', url: '/sections/108/1', role: 'staff',
    valid: { capacity: 35, reserve_capacity: 6, units: 3, name: 'Physics' }, required: [], ints: ['capacity', 'reserve_capacity', 'units'],
  },
  {
    method: 'POST', url: '/students', role: 'staff',
    valid: { id: 600, password: 'pw-long-enough', enrollment_start_time: 1_756_713_600, max_units: 20, remaining_actions: 3, gender: 'male' },
    required: ['id', 'password', 'enrollment_start_time', 'max_units', 'remaining_actions', 'gender'],
    ints: ['id', 'max_units', 'remaining_actions'],
  },
  {
    method: 'POST', url: '/staff', role: 'staff',
    valid: { id: 960, password: 'pw-long-enough' }, required: ['id', 'password'], ints: ['id'],
  },
  {
    method: 'POST', url: '/login', role: 'none', go: true,
    valid: { user: S.alice, password: PASSWORD }, required: ['user', 'password'], ints: [],
  },
];

function tokenFor(role: Role): string | null {
  if (role === 'none') return null;
  return role === 'staff' ? fx.staffToken() : fx.studentToken(S.alice);
}

/** The malformed variants of one route's body, each named for the failure message. */
function malformedBodies(r: BodyRoute): { name: string; rawBody?: string; body?: unknown; headers?: Record<string, string> }[] {
  const out: { name: string; rawBody?: string; body?: unknown; headers?: Record<string, string> }[] = [
    { name: 'no body at all' },
    { name: 'empty JSON body', rawBody: '', headers: { 'content-type': 'application/json' } },
    { name: 'invalid JSON', rawBody: '{"course_id": 1,' },
    { name: 'not JSON at all', rawBody: 'hello' },
    { name: 'JSON null', rawBody: 'null' },
    { name: 'JSON array', body: [r.valid] },
    { name: 'JSON string', body: 'course' },
    { name: 'JSON number', body: 42 },
    ...(r.go ? [] : [{ name: 'extra junk member', body: { ...r.valid, junk: 'x' } }]),
    { name: 'prototype pollution', rawBody: `{"__proto__": {"admin": true}, ${JSON.stringify(r.valid).slice(1)}` },
    { name: 'a form body', rawBody: 'course_id=1', headers: { 'content-type': 'text/plain' } },
  ];
  for (const f of r.required) {
    const body: Record<string, unknown> = { ...r.valid };
    delete body[f];
    out.push({ name: `missing ${f}`, body });
  }
  for (const f of r.ints) {
    for (const [label, v] of [
      ['as a numeric string', '12'],
      ['negative', -1],
      ['fractional', 1.5],
      ['too large', 1e20],
      ['boolean', true],
      ['null', null],
      ['object', { n: 1 }],
      ['array', [1]],
    ] as const) {
      out.push({ name: `${f} ${label}`, body: { ...r.valid, [f]: v } });
    }
  }
  return out;
}

function assertBadRequest(res: Reply, what: string): void {
  assert.equal(res.status, 400, `${what}: expected 400, got ${res.status} ${res.raw}`);
  assert.equal(res.body?.code, 'BAD_REQUEST', `${what}: ${res.raw}`);
  assert.ok(typeof res.body?.reason === 'string' && res.body.reason.length > 0, `${what}: no reason`);
}

describe('malformed bodies on every mutating route', () => {
  for (const r of BODY_ROUTES) {
    it(`${r.method} ${r.url} answers 400 with a reason to each malformed body, and changes nothing`, async () => {
      const logLength = fx.persistence.log.length;
      for (const m of malformedBodies(r)) {
        const res = await fx.request(r.method, r.url, { token: tokenFor(r.role), body: m.body, rawBody: m.rawBody, headers: m.headers });
        assertBadRequest(res, `${r.method} ${r.url} with ${m.name}`);
      }
      assert.equal(fx.persistence.log.length, logLength, 'a refused request wrote something');
    });
  }

  it('the valid bodies used above are accepted (so the 400s are about the malformations)', async () => {
    for (const r of BODY_ROUTES) {
      const res = await fx.request(r.method, r.url, { token: tokenFor(r.role), body: r.valid });
      assert.ok(res.status >= 200 && res.status < 300, `${r.method} ${r.url}: ${res.status} ${res.raw}`);
    }
  });

  it('domain-level body checks give 400 with a reason too', async () => {
    const staff = fx.staffToken();
    expectError(await fx.request('PATCH', '/sections/108/1', { token: staff, body: {} }), 400, 'BAD_REQUEST');
    expectError(await fx.request('PATCH', '/sections/108/1', { token: staff, body: { sex_lock: 'other' } }), 400, 'BAD_REQUEST');
    expectError(await fx.request('PATCH', '/sections/108/1', { token: staff, body: { name: '' } }), 400, 'BAD_REQUEST');
    expectError(await fx.request('POST', '/students', { token: staff, body: { ...BODY_ROUTES[6]!.valid, id: 601, enrollment_start_time: 'soon' } }), 400, 'BAD_REQUEST');
    expectError(await fx.request('POST', '/staff', { token: staff, body: { id: 961, password: '' } }), 400, 'BAD_REQUEST');
  });
});

describe('malformed query strings and path params', () => {
  const cases: [string, Role][] = [
    ['/student/course', 'student'], // DELETE below
    ['/staff/force-std', 'staff'], // DELETE below
  ];

  it('DELETE routes answer 400 to missing, non-numeric, negative, fractional and repeated ids', async () => {
    const bad = ['', '?course_id=', '?course_id=abc', '?course_id=-1', '?course_id=1.5', '?course_id=1&course_id=2', '?course_id=0x10', '?course_id=1e3', '?course_id=true', '?course_id=99999999999'];
    for (const q of bad) assertBadRequest(await fx.request('DELETE', `/student/course${q}`, { token: tokenFor('student') }), `student drop ${q}`);
    const badStaff = ['?course_id=1&group_id=1', '?std_id=x&course_id=1&group_id=1', '?std_id=1&course_id=1&group_id=-2', '?std_id=1&course_id=%20&group_id=1'];
    for (const q of badStaff) assertBadRequest(await fx.request('DELETE', `/staff/force-std${q}`, { token: tokenFor('staff') }), `force drop ${q}`);
    assert.equal(cases.length, 2);
  });

  it('GET routes answer 400 to bad ids and limits', async () => {
    const staff = tokenFor('staff');
    const student = tokenFor('student');
    for (const [url, token] of [
      ['/student/courses?department=cs', student],
      ['/student/courses?department=-3', student],
      ['/staff/student-courses', staff],
      ['/staff/student-courses?std_id=alice', staff],
      ['/staff/course-students?course_id=101', staff],
      ['/staff/course-students?course_id=101&group_id=one', staff],
      ['/sections?department=x', staff],
      ['/sections/abc/1', staff],
      ['/sections/1.5/1', staff],
      ['/sections/99999999999/1', staff],
      ['/sections/101/1/students?', staff],
      ['/sections/101/x/students', staff],
      ['/sections/101/1/transitions?limit=-1', staff],
      ['/sections/101/1/transitions?limit=100000', staff],
    ] as const) {
      const res = await fx.request('GET', url, { token });
      if (url === '/sections/101/1/students?') {
        assert.equal(res.status, 200);
        continue;
      }
      assertBadRequest(res, `GET ${url}`);
    }
  });
});

describe('deeply nested bodies', () => {
  it('are refused 400 with a reason before anything is checked, on the login too; a few levels are fine', async () => {
    const nested = (depth: number) => `{"user":${S.alice},"password":"wrong","a":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    for (const depth of [33, 200, 10_000]) {
      const r = await fx.request('POST', '/login', { rawBody: nested(depth) });
      assertBadRequest(r, `login nested ${depth} deep`);
      assert.match(r.body.reason, /nested more than 32 levels deep/);
    }
    expectError(await fx.request('POST', '/login', { rawBody: nested(30) }), 401, 'BAD_CREDENTIALS');
    const put = await fx.request('PUT', '/student/course', { token: tokenFor('student'), rawBody: `{"course_id":101,"group_id":1,"x":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}` });
    assertBadRequest(put, 'PUT /student/course nested 5,000 deep');
    assert.ok(!fx.logs.some((l) => l.includes('Maximum call stack')), 'no stack overflow logged');
  });
});

describe('deeply nested bodies on an instance that forwards writes', () => {
  it("are refused 400 there too, not serialised for the shard's owner first (probe O: a 500 from every instance but the owner)", async () => {
    // An instance that owns no shard (the project's ClusterMembership interface): every write is
    // forwarded to the owner the routes name, here an address where nothing listens.
    const membership: ClusterMembership = {
      shards: 1,
      instanceId: 'not-the-owner',
      peers: 1,
      storageUnreachable: false,
      routeWrite: () => ({ self: false, address: 'http://127.0.0.1:9' }),
      admitWrite: () => null,
      decides: () => false,
      refreshRoutes: () => Promise.resolve(),
      syncReads: () => Promise.resolve(true),
      follow: () => undefined,
      onGained: () => undefined,
      handOver: () => Promise.resolve(),
      join: () => undefined,
    };
    const far = await createHttpFixture({ app: { cluster: membership, forwardRetryMs: 200 } });
    try {
      const token = far.studentToken();
      const deep = (depth: number) => `{"course_id":101,"group_id":1,"x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
      for (const depth of [33, 5_000]) {
        const r = await far.request('PUT', '/student/course', { token, rawBody: deep(depth) });
        assertBadRequest(r, `forwarded PUT /student/course nested ${depth} deep`);
        assert.match(r.body.reason, /nested more than 32 levels deep/);
      }
      const staff = await far.request('PATCH', '/staff/capacity', { token: far.staffToken(), rawBody: `{"course_id":101,"group_id":1,"capacity":5,"x":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}` });
      assertBadRequest(staff, 'forwarded PATCH /staff/capacity nested 5,000 deep');
      // A body of ordinary depth is forwarded as before (the owner is unreachable here: 503, nothing changed).
      const plain = await far.request('PUT', '/student/course', { token, rawBody: deep(3) });
      assert.equal(plain.status, 503, plain.raw);
      assert.ok(!far.logs.some((l) => l.includes('Maximum call stack')), 'no stack overflow logged');
    } finally {
      await far.close();
    }
  });
});

describe('no request produces a 5xx', () => {
  const ROUTES: { method: string; url: string }[] = [
    { method: 'GET', url: '/health' },
    { method: 'GET', url: '/ready' },
    { method: 'POST', url: '/login' },
    ...GUARDED.map((g) => ({ method: g.method, url: g.url.split('?')[0]! })),
  ];
  const QUERIES = ['', '?course_id=abc&group_id=-1&std_id=1.5', '?course_id=1&course_id=2', '?std_id=99999999999999999999&course_id=0&group_id=0', '?department=%00&q=%ff', `?q=${'x'.repeat(300)}`, '?limit=0', '?__proto__=1'];
  const BODIES: { rawBody?: string; body?: unknown; headers?: Record<string, string> }[] = [
    {},
    { rawBody: '' },
    { rawBody: '{' },
    { rawBody: '[]' },
    { rawBody: '"str"' },
    { rawBody: 'null' },
    { rawBody: '{"__proto__":{"x":1}}' },
    { rawBody: '{"constructor":{"prototype":{"x":1}}}' },
    { body: { course_id: 'a', group_id: {}, std_id: [], capacity: -5, user: null, password: 1, id: 1e300 } },
    { body: { course_id: 0, group_id: 0, std_id: 0, capacity: 0, id: 0, password: 'p', name: 'n', units: 0, reserve_capacity: 0, enrollment_start_time: 0, max_units: 0, remaining_actions: 0, gender: 'male', user: 0 } },
    { body: { course_id: 2147483647, group_id: 2147483647, std_id: 2147483647, capacity: 1000000, class_time: 2 ** 53, exam_time: 253402300799 } },
    { body: { class_slot: { days: [0, 0], start_minute: 5, end_minute: 1 }, sex_lock: 'x' } },
    { rawBody: '\u0000\u0001binary', headers: { 'content-type': 'application/octet-stream' } },
    { rawBody: '<xml/>', headers: { 'content-type': 'application/xml' } },
    { rawBody: '{"course_id":1}', headers: { 'content-type': 'application/json; charset=latin1' } },
    { rawBody: '{"course_id":1}', headers: { 'content-type': 'application/json;;;' } },
    { body: { course_id: 101, group_id: 1 }, headers: { 'x-request-id': '\u00e9'.repeat(200) } },
    // 20 KB nested 10,000 deep (a probe's 500 on POST /login: the stack of the body's text check).
    { rawBody: `{"user":1,"password":"x","course_id":1,"a":${'['.repeat(10_000)}${']'.repeat(10_000)}}` },
    { rawBody: `{"user":1,"password":"x","course_id":1,"a":${'{"a":'.repeat(8_000)}1${'}'.repeat(8_000)}}` },
  ];
  const TOKENS: (() => string | null)[] = [() => null, () => tokenFor('student'), () => tokenFor('staff'), () => 'garbage', () => fx.staffToken(4242), () => fx.studentToken(4242)];

  it('sends a battery of odd requests to every route and never gets a 5xx or a non-JSON error', async () => {
    let sent = 0;
    for (const route of ROUTES) {
      // Query strings matter to GET and DELETE routes; the others get one stray query.
      const queries = route.method === 'GET' || route.method === 'DELETE' ? QUERIES : ['', '?course_id=x'];
      for (const query of queries) {
        for (const b of route.method === 'GET' ? [{}] : BODIES) {
          for (const tok of TOKENS) {
            const body: (typeof BODIES)[number] = b;
            const token = tok();
            const headers = { ...body.headers, ...(token ? { authorization: `Bearer ${token}` } : {}) };
            const res = await fx.request(route.method, `${route.url}${query}`, { ...body, headers });
            sent += 1;
            assert.ok(res.status < 500, `${route.method} ${route.url}${query} ${JSON.stringify(b)} -> ${res.status} ${res.raw}`);
            if (res.status >= 400) {
              assert.equal(typeof res.body?.reason, 'string', `${route.method} ${route.url}: ${res.raw}`);
              assert.equal(typeof res.body?.code, 'string', `${route.method} ${route.url}: ${res.raw}`);
            }
          }
        }
      }
    }
    assert.ok(sent > 1000, `only ${sent} requests sent`);
  });

  it('odd paths and methods are 404 or 400, never 5xx', async () => {
    for (const [method, url] of [
      ['GET', '/sections/%E0%A4%A/1'],
      ['GET', '/sections/' + '9'.repeat(200) + '/1'],
      ['GET', '//student//course'],
      ['DELETE', '/sections/101/1'],
      ['OPTIONS', '/student/course'],
      ['GET', '/student/course/../../etc/passwd'],
      ['GET', '/docs/static/../../package.json'],
    ] as const) {
      const res = await fx.request(method, url, { token: tokenFor('staff') });
      assert.ok(res.status >= 400 && res.status < 500, `${method} ${url} -> ${res.status} ${res.raw}`);
    }
  });
});
