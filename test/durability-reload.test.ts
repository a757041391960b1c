import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { DurabilityTracker } from '../src/engine/durability-tracker.js';
import { SectionHost } from '../src/engine/section-host.js';
import { StudentDirectory } from '../src/engine/student-directory.js';
import { EngineError } from '../src/errors.js';
import type { DomainEvent, LoadedState } from '../src/persistence/types.js';
import { MemoryPersistence } from './support/memory-persistence.js';

/**
 * A write decided while a reload became due is refused (its decision may rest on the memory the
 * reload replaces). After a change of shard ownership (a peer's SIGTERM hands a shard over, an
 * instance joins) storage is fine: the refusal says what happened, with a short Retry-After, and
 * comes once the reload is done. A black-box probe saw "storage is unavailable" there instead.
 * After a failed write the old words stay: storage is in question then.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

function department(id: number): DomainEvent {
  return { type: 'departmentCreated', seq: 1, department: { id, name: `D${id}` }, cause: { requestId: `r${id}`, actor: 'system', at: 0 } };
}

/** A store whose loads wait until the test lets them finish. */
class GatedLoads extends MemoryPersistence {
  private gate: (() => void) | null = null;
  loads = 0;
  override async load(): Promise<LoadedState> {
    this.loads += 1;
    await new Promise<void>((r) => (this.gate = r));
    return super.load();
  }
  open(): void {
    this.gate?.();
    this.gate = null;
  }
}

function trackerOver(persistence: MemoryPersistence): DurabilityTracker {
  return new DurabilityTracker(persistence, new SectionHost(logger, 60_000), new StudentDirectory(100), logger, {
    rebuild: () => undefined,
    durable: () => undefined,
    reloaded: () => undefined,
  });
}

test('a write refused during a reload after a change of shard ownership says so, with Retry-After 1, once the reload is done', async () => {
  const store = new GatedLoads();
  const tracker = trackerOver(store);
  try {
    // A shard was won (or handed over): the reload runs in the background.
    tracker.requestReload();
    assert.ok(tracker.reloadPending);
    let settled = false;
    const refused = tracker.persist([department(1)]).then(
      () => assert.fail('the write must not be made on the memory being replaced'),
      (err: unknown) => {
        settled = true;
        return err;
      },
    );
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(settled, false, 'not answered while the reload runs');
    store.open();
    const err = await refused;
    assert.ok(err instanceof EngineError);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /reloading its state after a change of shard ownership/);
    assert.doesNotMatch(err.message, /storage is unavailable/);
    assert.equal(err.retryAfterSeconds, 1);
    assert.equal(tracker.reloadPending, false, 'the reload finished before the answer');
    assert.equal(store.appendCount, 0, 'nothing was written');
    // Right after it, the same write goes through.
    await tracker.persist([department(1)]);
    assert.equal(store.appendCount, 1);
  } finally {
    tracker.stop();
  }
});

test('after a failed write, a write refused while the reload is due still says storage is unavailable', async () => {
  const store = new GatedLoads();
  const tracker = trackerOver(store);
  try {
    store.failNext = 1;
    await assert.rejects(tracker.persist([department(1)]), /injected storage failure/);
    assert.ok(tracker.reloadPending);
    const refused = tracker.persist([department(2)]).catch((err: unknown) => err);
    await new Promise((r) => setTimeout(r, 20));
    store.open();
    const err = await refused;
    assert.ok(err instanceof EngineError);
    assert.equal(err.message, 'storage is unavailable; try again shortly');
  } finally {
    tracker.stop();
  }
});
