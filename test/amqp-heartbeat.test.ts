import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_HEARTBEAT_S, withHeartbeat } from '../src/persistence/amqp-log.js';

/**
 * Every long-lived broker connection (the event log, the batcher, the webhook queue) asks for a
 * heartbeat, so a link that stalls without closing is found out in seconds, not RabbitMQ's two
 * minutes; an operator's own `?heartbeat=` in RABBITMQ_URL is kept as it is.
 */
test('a broker URL gets the default heartbeat unless it names one; credentials, vhost and other options are kept', () => {
  const u = new URL(withHeartbeat('amqp://guest:s3cret@broker.example:5672/%2Fprod?frame_max=8192'));
  assert.equal(u.searchParams.get('heartbeat'), String(DEFAULT_HEARTBEAT_S));
  assert.equal(u.searchParams.get('frame_max'), '8192');
  assert.equal(u.username, 'guest');
  assert.equal(u.password, 's3cret');
  assert.equal(u.pathname, '/%2Fprod');
  assert.equal(new URL(withHeartbeat('amqps://h/?heartbeat=0')).searchParams.get('heartbeat'), '0');
  assert.equal(new URL(withHeartbeat('amqp://h')).searchParams.get('heartbeat'), String(DEFAULT_HEARTBEAT_S));
});
