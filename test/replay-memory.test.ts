import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createFullStore, streamNames } from '../src/persistence/full-store.js';
import { createStateFolder, foldEvents, EMPTY_STATE } from '../src/persistence/fold.js';
import type { DomainEvent } from '../src/persistence/types.js';
import { deleteQueues } from './support/amqp.js';
import { createTestDatabase } from './support/pg.js';
import { NOW } from './support/scenario.js';
import { AMQP_URL, PG_ADMIN_URL, requireService, uniqueName } from './support/services.js';

/**
 * Issue 13, item 2: start-up replays the stream's tail in bounded memory, folding each event as it
 * arrives instead of collecting the tail first. Checked with a tail whose events are large (notes
 * of 64 KB, rewritten 1,500 times: ~96 MB of text) while the state keeps only the last: the heap
 * must never hold a large part of the tail at once.
 */
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const NOTE_BYTES = 64 * 1024;
const UPDATES = 1500;
const cause = (n: number) => ({ requestId: `r${n}`, actor: 'test', at: NOW });

function sectionEvents(): DomainEvent[] {
  const info = { courseId: 7, groupId: 1, forDepartment: null, name: 'Big notes', lecturer: '', units: 1, examTime: null, classTime: null, notes: '' };
  const out: DomainEvent[] = [{ type: 'sectionCreated', courseId: 7, groupId: 1, seq: 1, info, capacity: 5, reserveCapacity: 0, sexLock: null, closed: false, cause: cause(1) } as DomainEvent];
  for (let i = 0; i < UPDATES; i++) {
    const notes = String(i % 10).repeat(NOTE_BYTES);
    out.push({ type: 'infoUpdated', courseId: 7, groupId: 1, seq: i + 2, info: { notes }, cause: cause(i + 2) } as DomainEvent);
  }
  return out;
}

describe('replay in bounded memory', async () => {
  const skip = (await requireService('PostgreSQL', PG_ADMIN_URL)) || (await requireService('RabbitMQ', AMQP_URL));
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  const prefix = uniqueName('enroll_replay');
  before(async () => {
    if (!skip) tdb = await createTestDatabase();
  });
  after(async () => {
    if (skip) return;
    const n = streamNames(prefix);
    await deleteQueues([n.stream, n.dead]);
    await tdb.drop();
  });

  test('the incremental folder equals the whole-list fold', () => {
    const events = sectionEvents().slice(0, 20);
    const f = createStateFolder(EMPTY_STATE);
    for (const e of events) f.add(e);
    assert.deepEqual(f.result(), foldEvents(EMPTY_STATE, events));
  });

  test(`a ${Math.round((NOTE_BYTES * UPDATES) / 1e6)} MB tail is replayed without holding it: heap growth stays far below its size`, { skip, timeout: 120_000 }, async () => {
    const s1 = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger, batchMaxEvents: 50, runBatcher: false });
    await s1.migrate();
    await s1.load();
    const events = sectionEvents();
    for (let i = 0; i < events.length; i += 50) await s1.append(events.slice(i, i + 50));
    await s1.close();

    const s2 = await createFullStore({ databaseUrl: tdb.url, rabbitmqUrl: AMQP_URL, prefix, logger, batchMaxEvents: 50, runBatcher: false });
    try {
      const base = process.memoryUsage().heapUsed;
      let peak = base;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().heapUsed)), 2);
      const state = await s2.load();
      clearInterval(sampler);
      peak = Math.max(peak, process.memoryUsage().heapUsed);
      const tailBytes = NOTE_BYTES * UPDATES;
      assert.equal(state.sections[0]?.info.notes, String((UPDATES - 1) % 10).repeat(NOTE_BYTES), 'the last update wins');
      process.stderr.write(`[replay-memory] heap grew ${Math.round((peak - base) / 1e6)} MB for a ${Math.round(tailBytes / 1e6)} MB tail\n`);
      assert.ok(peak - base < tailBytes / 3, `heap grew ${Math.round((peak - base) / 1e6)} MB while replaying a ${Math.round(tailBytes / 1e6)} MB tail`);
    } finally {
      await s2.close();
    }
  });
});
