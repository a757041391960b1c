import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEngine, type Engine } from '../src/engine/engine.js';
import { createLogger } from '../src/logger.js';
import type { ClusterMembership, DomainEvent } from '../src/persistence/types.js';
import { S, seedData, STAFF, T0, WINDOW_MS } from './support/http-fixture.js';
import { MemoryPersistence } from './support/memory-persistence.js';

/**
 * The read copy (an instance that owns no shard follows the log): a registrar's correction of a
 * student and a staff member's new password reach it as the owner made them, once and in order;
 * an event type this version does not know is skipped without breaking the copy.
 */

const meta = (actor = 'staff:900') => ({ requestId: `r-${Math.random()}`, actor });
const now = T0 + 5 * 60_000;

/** A follower: owns nothing, and is handed the owner's events as the log would hand them. */
async function follower(from: MemoryPersistence): Promise<{ engine: Engine; deliver: (events: DomainEvent[]) => void; logs: string[] }> {
  const store = new MemoryPersistence();
  store.log.push(...structuredClone(from.log));
  let listener: ((events: DomainEvent[]) => void) | null = null;
  const cluster = {
    shards: 1,
    decides: () => false,
    follow: (l: (events: DomainEvent[]) => void) => void (listener = l),
    onGained: () => undefined,
  } as unknown as ClusterMembership;
  const logs: string[] = [];
  const engine = createEngine({ persistence: store, logger: createLogger('debug', { write: (l: string) => void logs.push(l) }), enrollmentWindowMs: WINDOW_MS, now: () => now, cluster });
  await engine.start();
  return { engine, deliver: (events) => listener?.(structuredClone(events)), logs };
}

describe('read copy', () => {
  it('folds studentUpdated and staffUpdated as the owner made them, once and in order, and skips an unknown event type', async () => {
    const ownerStore = new MemoryPersistence();
    const owner = createEngine({ persistence: ownerStore, logger: createLogger('silent'), enrollmentWindowMs: WINDOW_MS, now: () => now });
    await owner.start();
    await owner.importBatch(seedData(), { requestId: 'seed', actor: 'system' });
    const f = await follower(ownerStore);
    try {
      const from = ownerStore.log.length;
      await owner.updateStudent(S.alice, { remainingActions: 9, maxUnits: 12 }, meta());
      await owner.enroll(S.alice, 108, 1, meta('student:1'));
      await owner.drop(S.alice, 108, meta('student:1'));
      await owner.updateStudent(S.alice, { enrollmentStart: T0 - 60_000 }, meta());
      await owner.updateStaff(STAFF, { passwordHash: '$2b$04$new-staff-hash' }, meta());
      const events = ownerStore.log.slice(from);
      f.deliver(events);
      // Delivered again (a reconnect re-reads from an earlier offset): nothing changes twice.
      f.deliver(events);
      // An older step of the student delivered late changes nothing either.
      f.deliver(events.filter((e) => e.type === 'studentUpdated').slice(0, 1));
      assert.deepEqual(f.engine.getStudent(S.alice), owner.getStudent(S.alice));
      assert.equal(f.engine.getStudent(S.alice)?.remainingActions, 8, 'the correction, then one action used by the drop');
      assert.deepEqual(f.engine.getStaff(STAFF), owner.getStaff(STAFF));
      assert.deepEqual(f.engine.dumpState().staff, owner.dumpState().staff, 'the staff member\'s step number too');
      // A newer version's event: skipped with a warning; what follows it is still folded.
      const before = f.engine.dumpState();
      f.deliver([{ type: 'studentRenamed', seq: 99, studentId: S.alice, cause: { requestId: 'x', actor: 'staff:900', at: now } } as unknown as DomainEvent]);
      assert.deepEqual(f.engine.dumpState(), before);
      assert.ok(f.logs.some((l) => l.includes('does not know') && l.includes('studentRenamed')));
      const next = ownerStore.log.length;
      await owner.updateStudent(S.alice, { maxUnits: 15 }, meta());
      f.deliver(ownerStore.log.slice(next));
      assert.equal(f.engine.getStudent(S.alice)?.maxUnits, 15);
    } finally {
      f.engine.stop();
      owner.stop();
    }
  });
});
