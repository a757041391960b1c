import { EngineError } from '../../src/errors.js';
import { EMPTY_STATE, foldEvents } from '../../src/persistence/fold.js';
import type { DomainEvent, LoadedState, Persistence, ReadinessReport, TransitionRecord } from '../../src/persistence/types.js';

/**
 * A Persistence that keeps the ordered log in memory: for tests of the engine and the HTTP layer
 * that are not about storage. It mocks the project's own interface, never a driver. `failNext`
 * makes the next append fail, as a lost broker or database would.
 */
export class MemoryPersistence implements Persistence {
  readonly mode = 'embedded' as const;
  readonly log: DomainEvent[] = [];
  failNext = 0;
  /** Appends that succeeded: a change meant to be durable as one must add exactly one. */
  appendCount = 0;
  private poisoned = false;

  async migrate(): Promise<void> {}

  async load(): Promise<LoadedState> {
    this.poisoned = false;
    return replayLog(this.log);
  }

  async append(events: DomainEvent[]): Promise<void> {
    await Promise.resolve();
    if (this.failNext > 0 || this.poisoned) {
      if (this.failNext > 0) this.failNext -= 1;
      this.poisoned = true;
      throw new EngineError('UNAVAILABLE', 'injected storage failure');
    }
    this.log.push(...structuredClone(events));
    this.appendCount += 1;
  }

  async recentTransitions(courseId: number, groupId: number, limit: number): Promise<TransitionRecord[]> {
    return this.log
      .filter((e) => 'courseId' in e && e.courseId === courseId && e.groupId === groupId)
      .reverse()
      .slice(0, limit)
      .map((e) => ({
        seq: e.seq,
        type: e.type,
        studentId: 'studentId' in e ? e.studentId : null,
        requestId: e.cause.requestId,
        actor: e.cause.actor,
        at: new Date(e.cause.at).toISOString(),
        payload: {},
      }));
  }

  async readiness(): Promise<ReadinessReport> {
    return { ready: true, checks: { memory: { ok: true } } };
  }

  async close(): Promise<void> {}
}

/** Folds an ordered log into the state the engine loads: the reference for every real store. */
export function replayLog(log: DomainEvent[]): LoadedState {
  return foldEvents(EMPTY_STATE, log);
}
