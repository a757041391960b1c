/**
 * `npx tsx bench/restart-backlog.ts [events]`: how long a full-mode restart takes when the batcher
 * has applied none of the log. Appends about N events (default 100,000) through the engine with no
 * batcher running, closes everything, then times a fresh store + engine start (database snapshot +
 * stream replay). Uses its own database and AMQP prefix and removes them afterwards.
 */
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import pg from 'pg';
import { pino } from 'pino';
import { createEngine } from '../src/engine/engine.js';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';

const target = Number(process.argv[2] ?? 100_000);
const ADMIN = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const AMQP = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const name = `bench_restart_${process.pid}_${randomBytes(3).toString('hex')}`;
const logger = pino({ level: 'warn' });

const admin = new pg.Client({ connectionString: ADMIN });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
const url = new URL(ADMIN);
url.pathname = `/${name}`;
const open = () => createFullStore({ databaseUrl: url.toString(), rabbitmqUrl: AMQP, prefix: name, logger, batchMaxEvents: 2000, runBatcher: false });
const meta = { requestId: 'bench', actor: 'system' };

try {
  const s1 = await open();
  await s1.migrate();
  const e1 = createEngine({ persistence: s1, logger, enrollmentWindowMs: 1e13 });
  await e1.start();
  const students = Array.from({ length: 2000 }, (_, i) => ({
    id: 1_000_000 + i, passwordHash: 'x', enrollmentStart: 0, maxUnits: 1000, remainingActions: 1e9, departmentId: null, entryYear: null, gender: 'female' as const,
  }));
  const sections = Array.from({ length: 200 }, (_, i) => ({
    info: { courseId: 10_000 + i, groupId: 1, forDepartment: null, name: `C${i}`, lecturer: '', units: 1, examTime: null, classTime: null, notes: '' },
    capacity: 100_000, reserveCapacity: 0, sexLock: null,
  }));
  await e1.importBatch({ departments: [], staff: [], students, sections }, meta);
  let events = students.length + sections.length;
  const t0 = performance.now();
  while (events < target) {
    const ops: Promise<number>[] = [];
    for (let k = 0; k < 500; k++) {
      const s = students[Math.floor(Math.random() * students.length)]!.id;
      const c = 10_000 + Math.floor(Math.random() * sections.length);
      ops.push(
        e1.studentSections(s).some((h) => h.section.info.courseId === c)
          ? e1.drop(s, c, meta).then(() => 3, () => 0)
          : e1.enroll(s, c, 1, meta).then(() => 1, () => 0),
      );
    }
    let added = 0;
    for (const n of await Promise.all(ops)) added += n;
    if (added === 0) throw new Error('no request succeeded in a round: check the data set');
    events += added;
  }
  const appendS = (performance.now() - t0) / 1000;
  const before = JSON.stringify(e1.dumpState().sections.map((x) => [x.registered, x.queue]));
  e1.stop();
  await s1.close();
  process.stdout.write(`appended ~${events} events in ${appendS.toFixed(1)} s with no batcher running\n`);

  (globalThis as { gc?: () => void }).gc?.();
  const rss0 = process.memoryUsage().rss;
  // Peak RSS while restarting, sampled (process maxRSS would include the append phase above).
  let peak = rss0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const t1 = performance.now();
  const s2 = await open();
  const e2 = createEngine({ persistence: s2, logger, enrollmentWindowMs: 1e13 });
  await e2.start();
  const restartMs = performance.now() - t1;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  const after = JSON.stringify(e2.dumpState().sections.map((x) => [x.registered, x.queue]));
  process.stdout.write(
    `restart (database snapshot + stream replay of every event): ${Math.round(restartMs)} ms; state identical: ${before === after}; ` +
      `RSS +${Math.round((process.memoryUsage().rss - rss0) / 1e6)} MB after, peak ${Math.round(peak / 1e6)} MB during the restart (from ${Math.round(rss0 / 1e6)} MB before it)\n`,
  );
  e2.stop();
  await s2.close();
} finally {
  const c = await amqp.connect(AMQP);
  const ch = await c.createChannel();
  const n = streamNames(name);
  await ch.deleteQueue(n.stream).catch(() => undefined);
  await ch.deleteQueue(n.dead).catch(() => undefined);
  await c.close();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
}
