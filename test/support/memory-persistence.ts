import { EngineError } from '../../src/errors.js';
import { EMPTY_STATE, foldEvents } from '../../src/persistence/fold.js';
import type {
  DomainEvent,
  FillPoint,
  LoadedState,
  Persistence,
  ReadinessReport,
  StudentTransitionRecord,
  TransitionRecord,
} from '../../src/persistence/types.js';

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

  async recentTransitions(courseId: number, groupId: number, limit: number, beforeSeq?: number): Promise<TransitionRecord[]> {
    return this.log
      .filter((e) => 'courseId' in e && e.courseId === courseId && e.groupId === groupId && (beforeSeq === undefined || e.seq < beforeSeq))
      .reverse()
      .slice(0, limit)
      .map((e) => ({
        seq: e.seq,
        type: e.type,
        studentId: 'studentId' in e ? e.studentId : null,
        requestId: e.cause.requestId,
        actor: e.cause.actor,
        at: new Date(e.cause.at).toISOString(),
        // The SQL stores keep the whole event as the payload.
        payload: JSON.parse(JSON.stringify(e)) as Record<string, unknown>,
      }));
  }

  async studentTransitions(studentId: number, limit: number): Promise<StudentTransitionRecord[]> {
    return this.log
      .filter((e) => 'studentId' in e && e.studentId === studentId)
      .reverse()
      .slice(0, limit)
      .map((e) => ({
        seq: e.seq,
        type: e.type,
        courseId: 'courseId' in e ? e.courseId : null,
        groupId: 'groupId' in e ? e.groupId : null,
        studentId,
        requestId: e.cause.requestId,
        actor: e.cause.actor,
        at: new Date(e.cause.at).toISOString(),
        payload: JSON.parse(JSON.stringify(e)) as Record<string, unknown>,
      }));
  }

  /** The same spans and sums as the SQL stores' readFillHistory, over the in-memory log. */
  async fillHistory(opts: { buckets: number; section?: { courseId: number; groupId: number } }): Promise<FillPoint[]> {
    const moves: { at: number; dr: number; dq: number }[] = [];
    for (const e of this.log) {
      if (!('courseId' in e)) continue;
      if (opts.section && (e.courseId !== opts.section.courseId || e.groupId !== opts.section.groupId)) continue;
      if (e.type === 'studentEnrolled') moves.push({ at: e.cause.at, dr: 1, dq: 0 });
      else if (e.type === 'studentQueued') moves.push({ at: e.cause.at, dr: 0, dq: 1 });
      else if (e.type === 'studentPromoted') moves.push({ at: e.cause.at, dr: 1, dq: -1 });
      else if (e.type === 'studentDropped') moves.push({ at: e.cause.at, dr: e.from === 'registered' ? -1 : 0, dq: e.from === 'queued' ? -1 : 0 });
    }
    if (moves.length === 0) return [];
    const lo = Math.min(...moves.map((m) => m.at)) / 1000;
    const hi = Math.max(...moves.map((m) => m.at)) / 1000 + 0.001;
    const spans = new Map<number, { at: number; dr: number; dq: number }>();
    for (const m of moves) {
      const k = Math.floor(((m.at / 1000 - lo) / (hi - lo)) * opts.buckets) + 1;
      const s = spans.get(k) ?? { at: m.at, dr: 0, dq: 0 };
      s.at = Math.max(s.at, m.at);
      s.dr += m.dr;
      s.dq += m.dq;
      spans.set(k, s);
    }
    let registered = 0;
    let queued = 0;
    return [...spans.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([, s]) => {
        registered += s.dr;
        queued += s.dq;
        return { at: new Date(s.at).toISOString(), registered, queued };
      });
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
