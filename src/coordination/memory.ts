import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
import { openRevocationJournal, type RevocationJournal } from './revocation-journal.js';
import { RevocationMirror, revocationEntries } from './revocation-mirror.js';
import { SlidingWindows } from './sliding-window.js';
import type { Coordination } from './types.js';

/**
 * The in-process coordination store for one instance (no `REDIS_URL`): the same limits and
 * revocations as the Redis store, held in this process's memory. Given a data directory
 * (embedded mode), revocations are also journalled there and read back at start, so a logout or
 * a staff revocation outlives a restart; rate-limit windows are not (they are seconds long).
 * Several instances need Redis: this store is not shared.
 */
export function createMemoryCoordination(
  opts: {
    now?: () => number;
    dataDir?: string;
    logger?: Logger;
    /** How the journal is opened (tests give one whose disk fails). */
    openJournal?: typeof openRevocationJournal;
  } = {},
): Coordination {
  const now = opts.now ?? Date.now;
  const windows = new SlidingWindows(now);
  const mirror = new RevocationMirror(now);
  const log = opts.logger?.child({ module: 'coordination' });
  let journal: RevocationJournal | null = null;
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
      async revoke(e) {
        const entries = revocationEntries(e, now());
        for (const entry of entries) mirror.apply(entry);
        if (journal === null) return;
        try {
          await journal.append(entries);
        } catch (err) {
          log?.error({ err }, 'a revocation could not be written to the data directory; it holds until this process stops');
          throw new EngineError('UNAVAILABLE', 'the revocation holds now but could not be saved to disk; try again');
        }
      },
    },
    async start() {
      if (opts.dataDir === undefined || journal !== null) return;
      journal = await (opts.openJournal ?? openRevocationJournal)(opts.dataDir, now());
      for (const entry of journal.loaded) mirror.apply(entry);
      if (journal.loaded.length > 0) log?.info({ revocations: journal.loaded.length }, 'revocations read back from the data directory');
    },
    async close() {
      const j = journal;
      journal = null;
      await j?.close();
    },
  };
}
