import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

test('defaults: embedded mode on port 8080 with a 60-minute window and demo data', () => {
  const c = loadConfig({});
  assert.equal(c.mode, 'embedded');
  assert.equal(c.port, 8080);
  assert.equal(c.enrollmentWindowMinutes, 60);
  assert.equal(c.demoData, true);
  assert.equal(c.jwtSecret, null);
});

test('full mode needs both URLs and a shared secret', () => {
  const c = loadConfig({ DATABASE_URL: 'postgres://x@h/db', RABBITMQ_URL: 'amqp://h', JWT_SECRET: 's'.repeat(32) });
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
