import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { readThreadTimes, threadTimesDelta } from '../bench/lib/procs.js';

/** The storm report's "engine threads" line: the event loop's time apart from the other threads'. */
describe('bench: per-thread times', { skip: existsSync('/proc/self/task') ? false : 'Linux /proc only' }, () => {
  it("counts the event loop's busy time as the main thread's, not the others'", () => {
    const a = readThreadTimes(process.pid);
    assert.ok(a !== null);
    const until = performance.now() + 200;
    let x = 0;
    while (performance.now() < until) x += Math.sqrt(x + 1);
    const d = threadTimesDelta(a, readThreadTimes(process.pid));
    assert.ok(d !== null && x > 0);
    assert.ok(d.mainRunS >= 0.03, `main thread ran ${d.mainRunS} s of a 200 ms busy loop`);
    assert.ok(d.mainWaitS >= 0 && d.othersRunS >= 0);
  });

  it('is null for a process that does not exist', () => {
    assert.equal(readThreadTimes(2 ** 22 + 12345), null);
  });
});
