import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TokenService } from '../src/http/auth.js';
import { createEngine } from '../src/engine/engine.js';
import { isEngineError } from '../src/errors.js';
import { buildApp } from '../src/http/app.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { createGroupCommitter } from '../src/persistence/group-commit.js';
import type { DomainEvent } from '../src/persistence/types.js';
import { SECRET, TTL_SECONDS } from './support/http-fixture.js';
import { NOW, scenario } from './support/scenario.js';
import { inject, silentLogger } from './support/store-harness.js';

/**
 * Issue 13, item 5: the group-commit queue is bounded. An append that would overfill it is refused
 * at once (503 OVERLOADED with Retry-After over HTTP), nothing of it is written, and the committer
 * keeps working for everything else.
 */
const ev = (seq: number): DomainEvent =>
  ({ type: 'sectionClosed', courseId: 1, groupId: 1, seq, cause: { requestId: `r${seq}`, actor: 't', at: 0 } }) as unknown as DomainEvent;

describe('bounded group commit', () => {
  test('beyond the bound an append is refused at once, is never written, and does not poison the committer', async () => {
    const written: number[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const c = createGroupCommitter(
      async (events) => {
        await gate;
        written.push(...events.map((e) => e.seq));
      },
      2,
      { maxQueuedEvents: 3 },
    );
    const first = c.append([ev(1)]); // taken into the first batch once the tick ends
    await new Promise((r) => setImmediate(r));
    const queued = [c.append([ev(2)]), c.append([ev(3)]), c.append([ev(4)])]; // 3 events wait: the bound
    assert.equal(c.queuedEvents, 3);
    const shed = c.append([ev(5)]);
    await assert.rejects(shed, (err: unknown) => isEngineError(err) && err.code === 'OVERLOADED' && err.statusCode === 503 && err.retryAfterSeconds === 1);
    assert.equal(c.failed, false, 'shedding is not a storage failure');
    release();
    await Promise.all([first, ...queued]);
    await c.append([ev(6)]);
    assert.deepEqual(written, [1, 2, 3, 4, 6], 'the shed append was never written; the rest in order');
    assert.equal(c.queuedEvents, 0);
  });

  test('an append larger than the bound still goes through when nothing waits (an import is never refused forever)', async () => {
    const c = createGroupCommitter(async () => undefined, 10, { maxQueuedEvents: 3 });
    await c.append([ev(1), ev(2), ev(3), ev(4), ev(5)]);
  });

  test('over HTTP on the embedded store: 503 OVERLOADED with Retry-After, and a shed request changed nothing', async () => {
    const store = await createEmbeddedStore({ dataDir: null, logger: silentLogger, batchMaxEvents: 4, maxQueuedEvents: 4 });
    await store.migrate();
    const engine = createEngine({ persistence: store, logger: silentLogger, enrollmentWindowMs: 3_600_000, now: () => NOW });
    await engine.start();
    await scenario(engine); // students 100..129, sections 10/1, 10/2, 20/1, 30/1
    await engine.changeCapacity(20, 1, 100, { requestId: 'cap', actor: 'staff:1' });
    await engine.setClosed(20, 1, false, { requestId: 'open', actor: 'staff:1' });
    const app = await buildApp({ engine, logger: silentLogger, jwtSecret: SECRET, tokenTtlSeconds: TTL_SECONDS, readiness: () => store.readiness(), now: () => NOW });
    const signer = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => NOW });
    const token = (id: number) => signer.issue({ id, role: 'student' });
    const holdsBefore = new Map<number, boolean>();
    for (let id = 100; id < 130; id++) holdsBefore.set(id, engine.studentSections(id).some((h) => h.section.info.courseId === 20));
    try {
      const ids = [...holdsBefore.keys()].filter((id) => !holdsBefore.get(id));
      const replies = await Promise.all(ids.map((id) => inject(app, 'PUT', '/student/course', { token: token(id), body: { course_id: 20, group_id: 1 } })));
      const shed = replies.filter((r) => r.status === 503 && r.body?.code === 'OVERLOADED');
      assert.ok(shed.length > 0, `some requests were shed (statuses ${replies.map((r) => r.status).join(',')})`);
      for (const r of shed) assert.equal(r.headers['retry-after'], '1');
      // A restart from storage: exactly the acknowledged enrollments, none of the refused ones.
      const restarted = createEngine({ persistence: store, logger: silentLogger, enrollmentWindowMs: 3_600_000, now: () => NOW });
      await restarted.start();
      ids.forEach((id, i) => {
        const holds = restarted.studentSections(id).some((h) => h.section.info.courseId === 20);
        const status = (replies[i] as { status: number }).status;
        if (status === 204) assert.ok(holds, `student ${id} got 204 and holds the section`);
        else assert.ok(!holds, `student ${id} got ${status} and holds nothing`);
      });
      restarted.stop();
    } finally {
      await app.close();
      engine.stop();
      await store.close();
    }
  });
});
