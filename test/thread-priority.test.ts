import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { createThreadPriority } from '../src/thread-priority.js';

/** The nice value of one of this process's threads, from /proc (field 19 of stat). */
function niceOf(tid: number): number {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}
const threads = (): number[] => readdirSync('/proc/self/task').map(Number);

describe('background thread priority', { skip: existsSync('/proc/self/task') ? false : 'per-thread priorities are read from Linux /proc' }, () => {
  it("lowers every thread but the event loop's, including one started later, and leaves the event loop as it was", async () => {
    const before = niceOf(process.pid);
    const p = createThreadPriority({ nice: 7, logger: pino({ level: 'silent' }), everyMs: 60_000 });
    try {
      const others = threads().filter((t) => t !== process.pid);
      assert.ok(others.length > 0, 'a Node process has helper threads');
      for (const t of others) assert.equal(niceOf(t), 7, `thread ${t}`);
      assert.equal(niceOf(process.pid), before, 'the event loop keeps its priority');

      const known = new Set(threads());
      const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
      await new Promise((resolve) => worker.once('online', resolve));
      const fresh = threads().filter((t) => !known.has(t));
      assert.ok(fresh.length > 0, 'the worker added threads');
      assert.ok(fresh.some((t) => niceOf(t) === before), 'a new thread starts at the event loop priority');
      assert.ok(p.refresh() >= 1);
      for (const t of fresh) if (existsSync(`/proc/self/task/${t}`)) assert.equal(niceOf(t), 7, `new thread ${t}`);
      await worker.terminate();
    } finally {
      p.stop();
    }
  });

  it('with nice 0 changes nothing', () => {
    const snapshot = new Map(threads().map((t) => [t, niceOf(t)]));
    const p = createThreadPriority({ nice: 0, logger: pino({ level: 'silent' }) });
    assert.equal(p.refresh(), 0);
    for (const [t, n] of snapshot) if (existsSync(`/proc/self/task/${t}`)) assert.equal(niceOf(t), n);
    p.stop();
  });
});
