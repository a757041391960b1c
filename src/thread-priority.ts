import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import type { Logger } from 'pino';

/**
 * Lowers the scheduling priority (raises the nice value) of this process's threads other than the
 * event loop's: V8's compiler and garbage-collector helpers, libuv's pool (password hashing), the
 * in-process batcher's worker thread. Every request waits on the event loop; none waits on these.
 * On a busy machine (a registration storm on two cores) they otherwise take the core from the
 * event loop as often as it takes it from them: measured with the harness's storm, the event loop
 * was runnable but not running for 1.3 s of a 3.4 s storm (bench/README.md, eleventh session). At
 * a lower priority they use the time the event loop leaves, and still all of it when it idles.
 *
 * Linux only (per-thread nice values through `/proc/self/task`); elsewhere, and with `nice` 0,
 * nothing is done. Lowering one's own priority needs no privilege. Threads that appear later (a
 * restarted batcher worker) are caught by {@link ThreadPriority.refresh}, run on a slow timer.
 */
export interface ThreadPriority {
  /** Lowers threads not seen before; returns how many were lowered this time. */
  refresh(): number;
  stop(): void;
}

export function createThreadPriority(opts: { nice: number; logger: Logger; everyMs?: number }): ThreadPriority {
  const log = opts.logger.child({ module: 'thread-priority' });
  const seen = new Set<number>([process.pid]);
  let warned = false;
  const refresh = (): number => {
    if (opts.nice <= 0) return 0;
    let tids: number[];
    try {
      tids = readdirSync('/proc/self/task').map(Number);
    } catch {
      return 0; // not Linux: no per-thread priorities to set
    }
    let lowered = 0;
    for (const tid of tids) {
      if (seen.has(tid)) continue;
      seen.add(tid);
      try {
        if (getPriority(tid) < opts.nice) setPriority(tid, opts.nice);
        lowered += 1;
      } catch (err) {
        // The thread ended meanwhile, or the system refuses: the engine works the same, only slower under load.
        if (!warned && (err as NodeJS.ErrnoException).code !== 'ESRCH') {
          warned = true;
          log.warn({ err, tid }, 'could not lower the priority of a background thread');
        }
      }
    }
    if (lowered > 0) log.debug({ lowered, nice: opts.nice }, 'background threads lowered');
    return lowered;
  };
  const timer = opts.nice > 0 ? setInterval(refresh, opts.everyMs ?? 5000) : null;
  timer?.unref();
  refresh();
  return {
    refresh,
    stop: () => {
      if (timer) clearInterval(timer);
    },
  };
}
