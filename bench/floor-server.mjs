/**
 * The floor: the least any server must do per enroll under SPEC's durability rule, on bare
 * Fastify, so the engine's figures can be told apart from what the contract itself costs on this
 * machine. Per request: the bearer token checked (jsonwebtoken, HS256, remembered once verified,
 * as the engine remembers it), the JSON body parsed, the change appended to a RabbitMQ stream
 * through a group commit (the engine's full-mode policy: one batch in flight, 10 ms linger, 1 ms
 * quiet) and answered 204 only once the broker confirmed it; a consumer in the same process writes
 * the confirmed changes to PostgreSQL in batches (at most one transaction per 100 ms, one
 * set-based INSERT each), as the engine's in-process batcher does. No rules, no actors, no
 * transition log, no read model: what is left when those are taken away.
 *
 * Plain JavaScript, run with plain node whatever runs the engine (no TypeScript loader measured).
 *
 * Environment: PORT, HOST, LISTEN_BACKLOG, JWT_SECRET, FLOOR_AMQP_URL, FLOOR_QUEUE (created as a
 * stream, deleted on SIGTERM), FLOOR_DATABASE_URL (a database of its own; the table is made here);
 * to try other group-commit policies: FLOOR_LINGER_MS (10), FLOOR_QUIET_MS (1), FLOOR_IN_FLIGHT (1).
 */
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setImmediate, setTimeout } from 'node:timers';
import Fastify from 'fastify';
import amqp from 'amqplib';
import jwt from 'jsonwebtoken';
import pg from 'pg';

const env = process.env;
const queueName = env.FLOOR_QUEUE;
const secret = env.JWT_SECRET;
if (!queueName || !secret || !env.FLOOR_AMQP_URL || !env.FLOOR_DATABASE_URL) throw new Error('floor: FLOOR_QUEUE, JWT_SECRET, FLOOR_AMQP_URL and FLOOR_DATABASE_URL are needed');

const db = new pg.Client({ connectionString: env.FLOOR_DATABASE_URL });
await db.connect();
await db.query(`CREATE TABLE IF NOT EXISTS floor_enrollments (
  student_id bigint NOT NULL, course_id bigint NOT NULL, group_id bigint NOT NULL, at timestamptz NOT NULL,
  PRIMARY KEY (student_id, course_id))`);

const conn = await amqp.connect(env.FLOOR_AMQP_URL);
const publisher = await conn.createConfirmChannel();
await publisher.assertQueue(queueName, { durable: true, arguments: { 'x-queue-type': 'stream' } });

// Group commit, as src/persistence/group-commit.ts does it in full mode.
const LINGER_MS = Number(env.FLOOR_LINGER_MS ?? 10);
const QUIET_MS = Number(env.FLOOR_QUIET_MS ?? 1);
const IN_FLIGHT = Math.max(1, Number(env.FLOOR_IN_FLIGHT ?? 1));
const inFlight = new Set();
let queue = [];
let lastAppendAt = 0;
let running = false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const publish = (body) =>
  new Promise((resolve, reject) => publisher.publish('', queueName, body, { persistent: true }, (err) => (err ? reject(err) : resolve())));
async function run() {
  await new Promise((r) => setImmediate(r));
  while (queue.length > 0) {
    for (;;) {
      const now = performance.now();
      const wait = LINGER_MS <= 0 ? 0 : Math.min(queue[0].at + LINGER_MS - now, QUIET_MS > 0 ? lastAppendAt + QUIET_MS - now : Infinity);
      if (wait <= 0) break;
      await sleep(Math.max(1, Math.ceil(wait)));
    }
    const batch = queue;
    queue = [];
    const written = publish(Buffer.from(JSON.stringify(batch.map((p) => p.change)))).then(
      () => batch.forEach((p) => p.resolve()),
      (err) => batch.forEach((p) => p.reject(err)),
    );
    // The engine's policy waits for each batch's confirm before the next (IN_FLIGHT 1); more in
    // flight is what FLOOR_IN_FLIGHT tries.
    inFlight.add(written);
    void written.finally(() => inFlight.delete(written));
    while (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
  }
  running = false;
}
function append(change) {
  return new Promise((resolve, reject) => {
    const at = performance.now();
    lastAppendAt = at;
    queue.push({ change, at, resolve, reject });
    if (!running) {
      running = true;
      void run();
    }
  });
}

// The consumer: confirmed changes into PostgreSQL, at most one transaction per 100 ms.
const consumer = await conn.createChannel();
await consumer.prefetch(2000);
let received = [];
let writing = null;
async function write() {
  while (received.length > 0) {
    const msgs = received;
    received = [];
    const rows = msgs.flatMap((m) => JSON.parse(m.content.toString('utf8')));
    await db.query(
      `INSERT INTO floor_enrollments SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
       ON CONFLICT (student_id, course_id) DO NOTHING`,
      [rows.map((r) => r.s), rows.map((r) => r.c), rows.map((r) => r.g), rows.map((r) => new Date(r.at))],
    );
    consumer.ack(msgs[msgs.length - 1], true);
    await sleep(100);
  }
  writing = null;
}
await consumer.consume(
  queueName,
  (m) => {
    if (!m) return;
    received.push(m);
    writing ??= write();
  },
  { arguments: { 'x-stream-offset': 'first' } },
);

const verified = new Map();
function subject(request) {
  const h = request.headers.authorization;
  if (typeof h !== 'string' || !h.startsWith('Bearer ')) return null;
  const token = h.slice(7);
  let sub = verified.get(token);
  if (sub === undefined) {
    try {
      sub = Number(jwt.verify(token, secret, { algorithms: ['HS256'] }).sub);
    } catch {
      return null;
    }
    verified.set(token, sub);
  }
  return sub;
}

const app = Fastify({ logger: false });
app.get('/health', async () => ({ ok: true }));
app.put('/student/course', async (request, reply) => {
  const s = subject(request);
  if (s === null) return reply.code(401).send({ error: 'unauthenticated' });
  const b = request.body;
  if (!b || !Number.isSafeInteger(b.course_id) || !Number.isSafeInteger(b.group_id)) return reply.code(400).send({ error: 'bad request' });
  await append({ s, c: b.course_id, g: b.group_id, at: Date.now() });
  reply.code(204).send();
});
await app.listen({ host: env.HOST ?? '127.0.0.1', port: Number(env.PORT ?? 0), backlog: Number(env.LISTEN_BACKLOG ?? 511) });
const stop = async () => {
  await app.close();
  while (writing) await writing;
  await publisher.deleteQueue(queueName).catch(() => undefined);
  await conn.close().catch(() => undefined);
  await db.end();
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());
