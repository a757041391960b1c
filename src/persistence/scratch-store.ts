import { EMPTY_STATE } from './fold.js';
import { createGroupCommitter } from './group-commit.js';
import type { FillPoint, LoadedState, Persistence, ReadinessReport, StudentTransitionRecord, TransitionRecord } from './types.js';

/**
 * A store that keeps nothing: every append is acknowledged at once and forgotten. Never a
 * deployment's store (an acknowledged change here is not durable); it backs the throw-away engine
 * of the start-up warm-up (src/main.ts, src/http/warm-up.ts), which runs the request path before
 * the real engine starts, and measurements of the engine's own cost (bench/engine-core.ts).
 *
 * `groupCommit`: appends go through a group commit with these settings (as the real stores'
 * do, so the warm-up runs that code too) whose write keeps nothing; without it they are
 * acknowledged on the next microtask.
 */
export function createScratchPersistence(opts: { groupCommit?: { maxEvents: number; lingerMs: number; quietMs: number } } = {}): Persistence {
  const gc = opts.groupCommit;
  const committer = gc
    ? createGroupCommitter(async () => {}, gc.maxEvents, { lingerMs: gc.lingerMs, quietMs: gc.quietMs })
    : null;
  return {
    mode: 'embedded',
    async migrate(): Promise<void> {},
    async load(): Promise<LoadedState> {
      return structuredClone(EMPTY_STATE);
    },
    async append(events): Promise<void> {
      if (committer) return committer.append(events);
    },
    async recentTransitions(): Promise<TransitionRecord[]> {
      return [];
    },
    async studentTransitions(): Promise<StudentTransitionRecord[]> {
      return [];
    },
    async fillHistory(): Promise<FillPoint[]> {
      return [];
    },
    async readiness(): Promise<ReadinessReport> {
      return { ready: true, checks: { scratch: { ok: true, detail: 'keeps nothing' } } };
    },
    async close(): Promise<void> {},
  };
}
