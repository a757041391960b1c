import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createGroupCommitter } from '../src/persistence/group-commit.js';
import type { DomainEvent } from '../src/persistence/types.js';

/** Group commit: batching by lingering, the quiet flush, order, and a full batch going out at once. */

const ev = (n: number) => ({ seq: n }) as unknown as DomainEvent;
const nextMacrotask = () => new Promise<void>((r) => setTimeout(r, 1));

function recorder() {
  const batches: number[][] = [];
  const write = async (events: DomainEvent[]) => {
    batches.push(events.map((e) => (e as unknown as { seq: number }).seq));
    await nextMacrotask();
  };
  return { batches, write };
}

describe('group commit', () => {
  it('without lingering, appends a few macrotasks apart are written one by one', async () => {
    const { batches, write } = recorder();
    const gc = createGroupCommitter(write, 100, { lingerMs: 0 });
    const done: Promise<void>[] = [];
    for (let i = 1; i <= 4; i++) {
      done.push(gc.append([ev(i)]));
      await nextMacrotask();
      await nextMacrotask();
    }
    await Promise.all(done);
    assert.ok(batches.length >= 3, `expected mostly single batches, got ${JSON.stringify(batches)}`);
    assert.deepEqual(batches.flat(), [1, 2, 3, 4]);
  });

  it('lingering lets appends that arrive over several turns of the event loop share one write, in order', async () => {
    const { batches, write } = recorder();
    const gc = createGroupCommitter(write, 100, { lingerMs: 200 });
    const done: Promise<void>[] = [];
    for (let i = 1; i <= 4; i++) {
      done.push(gc.append([ev(i), ev(i * 10)]));
      await nextMacrotask();
    }
    await Promise.all(done);
    assert.deepEqual(batches, [[1, 10, 2, 20, 3, 30, 4, 40]]);
  });

  it('a full batch is written without waiting for the linger', { timeout: 5_000 }, async () => {
    const { batches, write } = recorder();
    const gc = createGroupCommitter(write, 3, { lingerMs: 60_000 });
    const done = [gc.append([ev(1)]), gc.append([ev(2)]), gc.append([ev(3)])];
    await Promise.all(done);
    assert.deepEqual(batches, [[1, 2, 3]]);
  });

  it('a lingering batch goes out once appends stop coming (quiet), not at the end of the linger', { timeout: 10_000 }, async () => {
    const { batches, write } = recorder();
    const gc = createGroupCommitter(write, 100, { lingerMs: 60_000, quietMs: 200 });
    const done: Promise<void>[] = [];
    // A stream of appends, each well inside the quiet time of the one before: they share one batch.
    for (let i = 1; i <= 5; i++) {
      done.push(gc.append([ev(i)]));
      await nextMacrotask();
    }
    const stoppedAt = performance.now();
    await Promise.all(done);
    const waited = performance.now() - stoppedAt;
    // One batch (unless the machine stalled longer than the quiet time between two appends), in order.
    assert.deepEqual(batches.flat(), [1, 2, 3, 4, 5]);
    assert.ok(batches.length <= 2, `expected one batch, got ${JSON.stringify(batches)}`);
    // Written after the quiet time, not after the minute of lingering (the test's timeout).
    assert.ok(waited >= 150, `written ${Math.round(waited)} ms after the last append`);
  });

  it('with `settled`, a batch lingers while requests are on their way and goes out as soon as the last one has appended', { timeout: 10_000 }, async () => {
    const { batches, write } = recorder();
    // Three write requests "being handled"; each appends a few turns of the event loop apart.
    let handling = 3;
    const asked: number[] = [];
    const gc = createGroupCommitter(write, 100, {
      lingerMs: 60_000,
      settled: (waiting) => {
        asked.push(waiting);
        return handling <= waiting;
      },
    });
    const t0 = performance.now();
    const done: Promise<void>[] = [];
    for (let i = 1; i <= 3; i++) {
      await nextMacrotask();
      done.push(gc.append([ev(i)]));
    }
    await Promise.all(done);
    // One batch, written when the third append arrived: not at the end of the minute's linger.
    assert.deepEqual(batches, [[1, 2, 3]]);
    assert.ok(performance.now() - t0 < 5_000);
    assert.ok(asked.includes(3), `settled was asked with the number of appends waiting: ${JSON.stringify(asked)}`);

    // Nothing else on its way: a single append goes out at once.
    handling = 1;
    await gc.append([ev(4)]);
    assert.deepEqual(batches, [[1, 2, 3], [4]]);
  });

  it('with `settled` never true, the linger and quiet rules are as without it', { timeout: 10_000 }, async () => {
    const { batches, write } = recorder();
    const gc = createGroupCommitter(write, 100, { lingerMs: 300, settled: () => false });
    const t0 = performance.now();
    await Promise.all([gc.append([ev(1)]), gc.append([ev(2)])]);
    assert.deepEqual(batches, [[1, 2]]);
    assert.ok(performance.now() - t0 >= 250, 'it lingered');
  });

  it('after a failed write every pending append fails, and later ones until reset', async () => {
    let fail = true;
    const gc = createGroupCommitter(async () => {
      await nextMacrotask();
      if (fail) throw new Error('broker gone');
    }, 100, { lingerMs: 5 });
    const a = gc.append([ev(1)]);
    const b = gc.append([ev(2)]);
    await assert.rejects(a, { code: 'UNAVAILABLE' });
    await assert.rejects(b, { code: 'UNAVAILABLE' });
    await assert.rejects(gc.append([ev(3)]), { code: 'UNAVAILABLE' });
    fail = false;
    gc.reset();
    await gc.append([ev(4)]);
  });
});
