import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ConfigError, isLoopbackHost, loadConfig } from '../src/config.js';

test('defaults: embedded mode on 127.0.0.1:8080 with a 60-minute window and demo data', () => {
  const c = loadConfig({});
  assert.equal(c.mode, 'embedded');
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, 8080);
  assert.equal(c.enrollmentWindowMinutes, 60);
  assert.equal(c.demoData, true);
  assert.equal(c.jwtSecret, null);
});

test('full mode needs both URLs and a shared secret', () => {
  const c = loadConfig({ DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h', JWT_SECRET: 'k3J9-q7Wz2xV8mN4pR6tY1uB5cD0eF-g' });
  assert.equal(c.mode, 'full');
  assert.equal(c.demoData, false);
});

test('every problem is reported at once', () => {
  let err: unknown;
  try {
    loadConfig({ PORT: 'eighty', DATABASE_URL: 'mysql://h/db', JWT_SECRET: 'short', LOG_LEVEL: 'loud', DEMO_DATA: 'maybe', ENROLLMENT_WINDOW_MINUTES: '0' });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  const text = err.problems.join('\n');
  for (const name of ['PORT', 'DATABASE_URL must use', 'both DATABASE_URL and RABBITMQ_URL', 'JWT_SECRET', 'LOG_LEVEL', 'DEMO_DATA', 'ENROLLMENT_WINDOW_MINUTES']) {
    assert.ok(text.includes(name), `missing a problem about ${name}:\n${text}`);
  }
  assert.equal(err.problems.length, 7);
});

test('demo data is on by default only on a loopback address; DEMO_DATA=true is the explicit opt-in', () => {
  assert.equal(loadConfig({ HOST: 'localhost' }).demoData, true);
  assert.equal(loadConfig({ HOST: '::1' }).demoData, true);
  for (const host of ['0.0.0.0', '::', '10.1.2.3', 'example.org']) {
    const c = loadConfig({ HOST: host });
    assert.equal(c.demoData, false, host);
    assert.equal(c.demoDataExplicit, false, host);
  }
  const explicit = loadConfig({ HOST: '0.0.0.0', DEMO_DATA: 'true' });
  assert.equal(explicit.demoData, true);
  assert.equal(explicit.demoDataExplicit, true);
  assert.equal(loadConfig({}).demoDataExplicit, false);
  assert.equal(loadConfig({ DEMO_DATA: 'false' }).demoData, false);
});

test('HOST and METRICS_HOST: [::1] (the URL way to write an IPv6 address) is ::1; a port, a scheme or other brackets are refused at once', () => {
  // Probe F7: `[::1]` reached listen() as a name and failed after the demo was loaded.
  const c = loadConfig({ HOST: '[::1]', PORT: '8081', METRICS_HOST: '[::1]' });
  assert.equal(c.host, '::1');
  assert.equal(c.metrics.host, '::1');
  assert.equal(c.demoData, true, 'still the loopback demo');
  assert.equal(c.cluster.advertiseUrl, 'http://[::1]:8081');
  assert.equal(loadConfig({ HOST: '[fe80::1]' }).host, 'fe80::1');
  for (const host of ['localhost', '127.0.0.1', '::1', '0.0.0.0', '::', 'enroll-1.example.edu', 'my_service']) assert.equal(loadConfig({ HOST: host }).host, host, host);
  for (const host of ['127.0.0.1:8080', 'localhost:8080', '[::1]:8080', '[localhost]', '[127.0.0.1]', 'http://localhost', 'a b', '::1]']) {
    assert.throws(
      () => loadConfig({ HOST: host }),
      (err: unknown) => err instanceof ConfigError && err.problems.some((p) => p.startsWith('HOST must be an IP address or a host name') && p.includes(`"${host}"`)),
      host,
    );
  }
  assert.throws(() => loadConfig({ METRICS_HOST: '0.0.0.0:9100' }), (err: unknown) => err instanceof ConfigError && /METRICS_HOST must .*METRICS_PORT/.test(err.problems.join('\n')));
});

test('loopback addresses are told from network ones', () => {
  for (const h of ['127.0.0.1', '127.8.9.10', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '192.168.1.2', '128.0.0.1', 'localhost.example.org', '']) assert.equal(isLoopbackHost(h), false, h);
});

test('sessions: token lifetime at most 24 h, session maximum age 12 h by default, both bounded', () => {
  const c = loadConfig({});
  assert.equal(c.sessionMaxSeconds, 12 * 3600);
  assert.equal(loadConfig({ TOKEN_TTL_MINUTES: '1440' }).tokenTtlSeconds, 86_400);
  assert.equal(loadConfig({ SESSION_MAX_HOURS: '2' }).sessionMaxSeconds, 7200);
  assert.throws(() => loadConfig({ TOKEN_TTL_MINUTES: String(60 * 24 * 30) }), /TOKEN_TTL_MINUTES/);
  assert.throws(() => loadConfig({ TOKEN_TTL_MINUTES: '1441' }), /TOKEN_TTL_MINUTES/);
  assert.throws(() => loadConfig({ SESSION_MAX_HOURS: '0' }), /SESSION_MAX_HOURS/);
});

test('password-check cap and admin staff ids are read and validated', () => {
  assert.equal(loadConfig({}).maxConcurrentPasswordChecks, 3);
  assert.equal(loadConfig({ MAX_CONCURRENT_PASSWORD_CHECKS: '2' }).maxConcurrentPasswordChecks, 2);
  assert.throws(() => loadConfig({ MAX_CONCURRENT_PASSWORD_CHECKS: '0' }), /MAX_CONCURRENT_PASSWORD_CHECKS/);
  assert.equal(loadConfig({}).loginQueueMs, 5000);
  assert.equal(loadConfig({ LOGIN_QUEUE_MS: '0' }).loginQueueMs, 0);
  assert.throws(() => loadConfig({ LOGIN_QUEUE_MS: '-1' }), /LOGIN_QUEUE_MS/);
  assert.throws(() => loadConfig({ LOGIN_QUEUE_MS: '60001' }), /LOGIN_QUEUE_MS/);
  assert.deepEqual(loadConfig({}).adminStaffIds, []);
  assert.deepEqual(loadConfig({ ADMIN_STAFF_IDS: '1, 42' }).adminStaffIds, [1, 42]);
  assert.throws(() => loadConfig({ ADMIN_STAFF_IDS: '1,bob' }), /ADMIN_STAFF_IDS/);
});

test('write batching: group commit and batcher lingers have per-mode defaults and are validated', () => {
  const full = { DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h', JWT_SECRET: 'k3J9-q7Wz2xV8mN4pR6tY1uB5cD0eF-g' };
  assert.equal(loadConfig({}).groupCommitLingerMs, 5);
  assert.equal(loadConfig(full).groupCommitLingerMs, 10);
  assert.equal(loadConfig(full).batchLingerMs, 100);
  // The quiet flush: on in full mode; off in embedded mode, whose writes block the event loop.
  assert.equal(loadConfig(full).groupCommitQuietMs, 1);
  assert.equal(loadConfig({}).groupCommitQuietMs, 0);
  assert.equal(loadConfig({ ...full, GROUP_COMMIT_QUIET_MS: '3' }).groupCommitQuietMs, 3);
  assert.throws(() => loadConfig({ ...full, GROUP_COMMIT_QUIET_MS: '-1' }), (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('GROUP_COMMIT_QUIET_MS')));
  assert.equal(loadConfig({ ...full, BATCH_LINGER_MS: '0', GROUP_COMMIT_LINGER_MS: '0' }).batchLingerMs, 0);
  assert.throws(() => loadConfig({ ...full, BATCH_LINGER_MS: 'soon' }), (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('BATCH_LINGER_MS')));
});

test('WARMUP_REQUESTS: 3,000 in full mode, none in embedded mode unless set; 0 turns it off; out of range is refused', () => {
  const full = { DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h', JWT_SECRET: 'k3J9-q7Wz2xV8mN4pR6tY1uB5cD0eF-g' };
  assert.equal(loadConfig(full).warmUpRequests, 3000);
  assert.equal(loadConfig({}).warmUpRequests, 0);
  assert.equal(loadConfig({ WARMUP_REQUESTS: '500' }).warmUpRequests, 500);
  assert.equal(loadConfig({ ...full, WARMUP_REQUESTS: '0' }).warmUpRequests, 0);
  assert.throws(() => loadConfig({ WARMUP_REQUESTS: '-1' }), (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('WARMUP_REQUESTS')));
});

test('SHUTDOWN_DRAIN_MS: 5 s unless set; 0 closes at once; out of range is refused', () => {
  assert.equal(loadConfig({}).shutdownDrainMs, 5000);
  assert.equal(loadConfig({ SHUTDOWN_DRAIN_MS: '0' }).shutdownDrainMs, 0);
  assert.throws(() => loadConfig({ SHUTDOWN_DRAIN_MS: '60000' }), (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('SHUTDOWN_DRAIN_MS')));
});

test('DATABASE_QUERY_TIMEOUT_MS: 30 s unless set; below 1 s or not a whole number is refused', () => {
  assert.equal(loadConfig({}).databaseQueryTimeoutMs, 30_000);
  assert.equal(loadConfig({ DATABASE_QUERY_TIMEOUT_MS: '5000' }).databaseQueryTimeoutMs, 5000);
  for (const bad of ['0', '999', '3600001', '2.5', 'soon']) assert.throws(() => loadConfig({ DATABASE_QUERY_TIMEOUT_MS: bad }), /DATABASE_QUERY_TIMEOUT_MS/, bad);
});

test('BATCHER_THREAD: the in-process batcher on a worker thread unless the main thread is asked for; anything else is refused', () => {
  assert.equal(loadConfig({}).batcherThread, 'worker');
  assert.equal(loadConfig({ BATCHER_THREAD: 'main' }).batcherThread, 'main');
  assert.throws(
    () => loadConfig({ BATCHER_THREAD: 'process' }),
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('BATCHER_THREAD must be one of main, worker')),
  );
});

test('PGLITE_THREAD: PGlite on the engine thread unless a worker thread is asked for; anything else is refused', () => {
  assert.equal(loadConfig({}).pgliteThread, 'main');
  assert.equal(loadConfig({ PGLITE_THREAD: 'worker' }).pgliteThread, 'worker');
  assert.equal(loadConfig({ PGLITE_THREAD: 'Main' }).pgliteThread, 'main');
  assert.throws(
    () => loadConfig({ PGLITE_THREAD: 'threads' }),
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.includes('PGLITE_THREAD must be one of main, worker')),
  );
});

test('TRUST_PROXY: unset or empty trusts no proxy; a list of addresses and CIDR ranges is read; true, hop counts and anything else are refused', () => {
  assert.deepEqual(loadConfig({}).trustProxy, []);
  assert.deepEqual(loadConfig({ TRUST_PROXY: '  ' }).trustProxy, []);
  assert.deepEqual(loadConfig({ TRUST_PROXY: '10.0.0.5, 192.168.0.0/16,fd00::/8 , ::1' }).trustProxy, ['10.0.0.5', '192.168.0.0/16', 'fd00::/8', '::1']);
  for (const bad of ['true', '*', '1', '2', '10.0.0.0/33', 'fd00::/129', '0.0.0.0/0', '::/0', '10.0.0.0/x', 'proxy.example.org', '10.0.0.1,nope']) {
    assert.throws(() => loadConfig({ TRUST_PROXY: bad }), /TRUST_PROXY must be empty or a comma-separated list/, bad);
  }
});

test('login throttling: per id and address, per id from all addresses (100, never below the first by default), per address', () => {
  const c = loadConfig({});
  assert.equal(c.throttle.loginFailuresPerUser, 10);
  assert.equal(c.throttle.loginFailuresPerUserAllAddresses, 100);
  assert.equal(c.throttle.loginFailuresPerAddress, 50);
  assert.equal(loadConfig({ LOGIN_FAILURES_PER_USER_ALL_ADDRESSES: '500' }).throttle.loginFailuresPerUserAllAddresses, 500);
  assert.equal(loadConfig({ LOGIN_FAILURES_PER_USER: '200' }).throttle.loginFailuresPerUserAllAddresses, 200);
  assert.throws(() => loadConfig({ LOGIN_FAILURES_PER_USER: '20', LOGIN_FAILURES_PER_USER_ALL_ADDRESSES: '19' }), /LOGIN_FAILURES_PER_USER_ALL_ADDRESSES must not be smaller/);
  assert.throws(() => loadConfig({ LOGIN_FAILURES_PER_USER_ALL_ADDRESSES: '0' }), /LOGIN_FAILURES_PER_USER_ALL_ADDRESSES/);
});

test('every variable src/config.ts reads is documented in README.md and .env.example (SPEC section 8)', () => {
  const src = readFileSync(new URL('../src/config.ts', import.meta.url), 'utf8');
  // Every variable is read through a helper taking its name as a literal (str('X'), int('X', ...)) or env['X'].
  const names = new Set([...src.matchAll(/\b(?:str|int|bool)\('([A-Z][A-Z0-9_]+)'|env\['([A-Z][A-Z0-9_]+)'\]/g)].map((m) => m[1] ?? m[2]));
  assert.ok(names.size > 40, `found ${names.size} variables`);
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const example = readFileSync(new URL('../.env.example', import.meta.url), 'utf8');
  const missing = [...names].flatMap((n) => {
    const word = new RegExp(`\\b${n}\\b`);
    return [...(word.test(readme) ? [] : [`${n} (README.md)`]), ...(word.test(example) ? [] : [`${n} (.env.example)`])];
  });
  assert.deepEqual(missing, []);
});

test('JWT_SECRET: the published placeholder and low-variety values are refused', () => {
  const full = { DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h' };
  for (const secret of ['change-me-to-at-least-32-random-characters', 'a'.repeat(40), 'abababababababababababababababab', 'please-change-me-0123456789-abcdefgh']) {
    assert.throws(() => loadConfig({ ...full, JWT_SECRET: secret }), (err: unknown) => err instanceof ConfigError && /JWT_SECRET/.test(err.problems.join('\n')), secret);
  }
  // Random values pass: hex (16 symbols), base64.
  for (const secret of ['9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'q8ZrL1xP3vT0mB6nW4kY2hJ9cF5sD7gA+e/R']) {
    assert.equal(loadConfig({ ...full, JWT_SECRET: secret }).jwtSecret, secret);
  }
});

test('PORT=0 is refused in full mode without ADVERTISE_URL (peers forward to the advertised address); fine in embedded mode', () => {
  const full = { DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h', JWT_SECRET: 'k3J9-q7Wz2xV8mN4pR6tY1uB5cD0eF-g', PORT: '0' };
  assert.throws(() => loadConfig(full), (err: unknown) => err instanceof ConfigError && /PORT=0 .* needs ADVERTISE_URL/.test(err.problems.join('\n')));
  assert.equal(loadConfig({ ...full, ADVERTISE_URL: 'http://10.0.0.7:8080' }).cluster.advertiseUrl, 'http://10.0.0.7:8080');
  assert.equal(loadConfig({ PORT: '0' }).port, 0);
});

test('PGLITE_SHARED_BUFFERS_MB: 1 to 1024 (PGlite is 32-bit WebAssembly: 2048 failed to start)', () => {
  assert.equal(loadConfig({}).pgliteSharedBuffersMb, 16);
  assert.equal(loadConfig({ PGLITE_SHARED_BUFFERS_MB: '1024' }).pgliteSharedBuffersMb, 1024);
  for (const bad of ['2048', '4096', '0']) {
    assert.throws(() => loadConfig({ PGLITE_SHARED_BUFFERS_MB: bad }), (e: unknown) => e instanceof ConfigError && /PGLITE_SHARED_BUFFERS_MB/.test(e.problems.join('\n')), bad);
  }
});
