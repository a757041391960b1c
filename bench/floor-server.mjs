/**
 * The floor: the least any server must do per enroll under SPEC's durability rule, on bare
 * Fastify, so the engine's figures can be told apart from what the contract itself costs on this
 * machine. Per request: the bearer token checked (jsonwebtoken, HS256, remembered once verified,
 * as the engine remembers it), the JSON body parsed, the change appended to a RabbitMQ stream
 * through a group commit (the engine's full-mode policy: one batch in flight, 10 ms linger, 1 ms
 * quiet) and answered 204 only once the broker confirmed it; a consumer in the same process writes
 * the confirmed changes to PostgreSQL in batches (at most one transaction per 100 ms, one
 * set-based statement each), as the engine's in-process batcher does. No rules, no actors, no
 * transition log: what is left when those are taken away. For `seed` and `steady` it also serves
 * a drop (`DELETE /student/course?course_id=`, the same durable path; 404 when the student does not
 * hold the course) and a student's list (`GET /student/course`, from memory, as the engine's read
 * model answers it). One rule is kept, one group per course (409), so that a client's record of
 * its 204s can be checked against the table.
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

// noDelay, as the engine connects: without it Nagle holds a publish's last frame until the
// broker's delayed ACK, about 40 ms per group commit.
const conn = await amqp.connect(env.FLOOR_AMQP_URL, { noDelay: true });
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
    // In log order, the last change of each (student, course) wins: one statement, its enrolls
    // upserted and its drops deleted (no pair is in both).
    const last = new Map();
    for (const m of msgs) for (const r of JSON.parse(m.content.toString('utf8'))) last.set(`${r.s}:${r.c}`, r);
    const rows = [...last.values()];
    const put = rows.filter((r) => r.g !== null);
    const gone = rows.filter((r) => r.g === null);
    await db.query(
      `WITH gone AS (
         DELETE FROM floor_enrollments f USING unnest($5::bigint[], $6::bigint[]) AS d(s, c)
         WHERE f.student_id = d.s AND f.course_id = d.c)
       INSERT INTO floor_enrollments SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
       ON CONFLICT (student_id, course_id) DO UPDATE SET group_id = EXCLUDED.group_id, at = EXCLUDED.at`,
      [put.map((r) => r.s), put.map((r) => r.c), put.map((r) => r.g), put.map((r) => new Date(r.at)), gone.map((r) => r.s), gone.map((r) => r.c)],
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

/** Each student's confirmed holdings, course -> group (what a list answers and a drop checks). */
const held = new Map();
const holdingsOf = (s) => held.get(s) ?? held.set(s, new Map()).get(s);

const app = Fastify({ logger: false });
app.get('/health', async () => ({ ok: true }));
app.put('/student/course', async (request, reply) => {
  const s = subject(request);
  if (s === null) return reply.code(401).send({ error: 'unauthenticated' });
  const b = request.body;
  if (!b || !Number.isSafeInteger(b.course_id) || !Number.isSafeInteger(b.group_id)) return reply.code(400).send({ error: 'bad request' });
  // One group per course, the one rule kept: without it a client's own record of its holdings
  // (and the harness's check of the rows) could not match the table's one row per course.
  const mine = holdingsOf(s);
  if (mine.has(b.course_id)) return reply.code(409).send({ code: 'SAME_COURSE', reason: 'already holds a group of this course' });
  mine.set(b.course_id, b.group_id);
  try {
    await append({ s, c: b.course_id, g: b.group_id, at: Date.now() });
  } catch (err) {
    mine.delete(b.course_id);
    throw err;
  }
  reply.code(204).send();
});
app.delete('/student/course', async (request, reply) => {
  const s = subject(request);
  if (s === null) return reply.code(401).send({ error: 'unauthenticated' });
  const c = Number(request.query.course_id);
  if (!Number.isSafeInteger(c)) return reply.code(400).send({ error: 'bad request' });
  const mine = holdingsOf(s);
  const g = mine.get(c);
  if (g === undefined) return reply.code(404).send({ code: 'NOT_ENROLLED', reason: 'does not hold this course' });
  mine.delete(c);
  try {
    await append({ s, c, g: null, at: Date.now() });
  } catch (err) {
    mine.set(c, g);
    throw err;
  }
  reply.code(204).send();
});
app.get('/student/course', async (request, reply) => {
  const s = subject(request);
  if (s === null) return reply.code(401).send({ error: 'unauthenticated' });
  return reply.send([...holdingsOf(s)].map(([course_id, group_id]) => ({ course_id, group_id })));
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
