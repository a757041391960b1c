import { RevocationMirror, revocationEntries } from './revocation-mirror.js';
import { SlidingWindows } from './sliding-window.js';
import type { Coordination } from './types.js';

/**
 * The in-process coordination store for one instance (embedded mode, no `REDIS_URL`): the same
 * limits and revocations as the Redis store, held in this process's memory and lost on restart
 * (a restart forgets revocations, which is why several instances need Redis).
 */
export function createMemoryCoordination(opts: { now?: () => number } = {}): Coordination {
  const now = opts.now ?? Date.now;
  const windows = new SlidingWindows(now);
  const mirror = new RevocationMirror(now);
  return {
    kind: 'memory',
    connected: true,
    limits: {
      check: async (limits) => windows.check(limits),
      record: async (limits) => windows.record(limits),
      take: async (limit) => windows.take(limit),
      clear: async (keys) => windows.clear(keys),
    },
    revocations: {
      isRevoked: (t) => mirror.isRevoked(t),
      revoke: (e) => {
        for (const entry of revocationEntries(e, now())) mirror.apply(entry);
      },
    },
    start: async () => undefined,
    close: async () => undefined,
  };
}
