import type { Logger } from 'pino';
import { sectionKey } from '../actors/section-logic.js';
import type { StaffRecord, StudentRecord } from '../actors/student-rules.js';
import { EngineError, isEngineError } from '../errors.js';
import type { DomainEvent, LoadedState, Persistence } from '../persistence/types.js';
import type { AnySectionSnapshot as SectionSnapshot, SectionHost } from './section-host.js';
import type { StudentDirectory } from './student-directory.js';

/**
 * The durability tracker: writes each request's events, answers only once they are durable, and
 * knows for every section and student what is durable and what is still on its way. For a section
 * that is the actor's own snapshot after each write (XState snapshots are immutable, so keeping one
 * is keeping a reference, not a copy). When a write fails, every section goes back to its last
 * durable snapshot and every student, staff member and department to their last durable record, at
 * once and without storage, so reads never show a refused change; writes then wait for a reload
 * from storage, which also brings in anything whose outcome was in doubt.
 */

/** First and longest wait before a failed reload is tried again (ms). */
const RELOAD_RETRY_MIN_MS = 250;
const RELOAD_RETRY_MAX_MS = 2_000;

interface SectionLedger {
  /** Last durable snapshot; null while the section's creation is not durable. */
  durable: SectionSnapshot | null;
  /** Snapshots after each change not yet durable, oldest first. */
  pending: { seq: number; snapshot: SectionSnapshot }[];
}

export interface DurabilityHooks {
  /** Replaces the whole in-memory state with one loaded from storage. */
  rebuild(state: LoadedState): void;
  /** Called with each batch of events once it is durable. */
  durable(events: DomainEvent[]): void;
  /** After a reload's rebuild (and the report of what it brought in): memory is the durable state now. */
  reloaded(): void;
}

export class DurabilityTracker {
  private sections = new Map<string, SectionLedger>();
  private students = new Map<number, { record: StudentRecord; seq: number } | null>();
  /** Staff members with a change on its way: their last durable record and sequence number. */
  private durableStaff = new Map<number, { record: StaffRecord; seq: number }>();
  private readonly undurableStaff = new Set<number>();
  private readonly undurableDepartments = new Set<number>();
  /** Set when an append failed: memory may hold undurable changes until reloaded. */
  private needsReload = false;
  private reloading: Promise<void> | null = null;
  /** A reload was asked for while one was running (ownership changed again): run another after it. */
  private reloadAgain = false;
  /** Appends not yet settled; a reload waits for them so it never reads the log while one races in. */
  private readonly inflight = new Set<Promise<void>>();
  /** The next try of a reload that failed (storage away): it must not wait for a write to ask. */
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = RELOAD_RETRY_MIN_MS;
  private stopped = false;

  constructor(
    private readonly persistence: Persistence,
    private readonly host: SectionHost,
    private readonly directory: StudentDirectory,
    private readonly log: Logger,
    private readonly hooks: DurabilityHooks,
  ) {}

  /** True while a reload is due or running: the hot path skips `ready()` otherwise. */
  /** Why the pending reload is needed: said in its log line (a takeover is routine, a failed write is not). */
  private reloadReason: 'failed write' | 'ownership' = 'failed write';

  get reloadPending(): boolean {
    return this.needsReload || this.reloading !== null;
  }

  /** Forgets everything: all that is in memory now is durable (right after a load). */
  reset(): void {
    this.sections = new Map();
    this.students = new Map();
    this.undurableStaff.clear();
    this.undurableDepartments.clear();
    this.durableStaff.clear();
    for (const [id, st] of this.directory.students) this.students.set(id, { record: st.record, seq: st.seq });
  }

  /** A section whose creation (leaving it at `snapshot`) is on its way to storage. */
  sectionCreated(key: string, snapshot: SectionSnapshot): void {
    this.sections.set(key, { durable: null, pending: [{ seq: snapshot.context.seq, snapshot }] });
  }

  /** A section's snapshot after a change whose events end at `seq` (not durable yet). */
  sectionChanged(key: string, seq: number, snapshot: SectionSnapshot, before: SectionSnapshot): void {
    let ledger = this.sections.get(key);
    if (!ledger) {
      // First change since the section was loaded: what it was before is durable.
      ledger = { durable: before, pending: [] };
      this.sections.set(key, ledger);
    }
    ledger.pending.push({ seq, snapshot });
  }

  studentCreated(id: number): void {
    this.students.set(id, null);
  }

  /**
   * A staff member's record is about to change (not durable yet): `before` is what it was. Only the
   * first change since the last durable one is kept, so a rollback goes back to the durable record.
   */
  staffChanging(id: number, before: StaffRecord): void {
    if (!this.durableStaff.has(id)) this.durableStaff.set(id, { record: before, seq: this.directory.staffSeq.get(id) ?? 1 });
  }

  staffCreated(id: number): void {
    this.undurableStaff.add(id);
  }

  departmentCreated(id: number): void {
    this.undurableDepartments.add(id);
  }

  /** Waits for (or starts) a reload after a failed append, so no decision is made on undurable state. */
  async ready(): Promise<void> {
    if (!this.reloadPending) return;
    if (!this.reloading) {
      this.reloading = (async () => {
        try {
          // Appends already on their way settle first (behind a failed one they fail too), so the
          // state loaded is final and no in-flight decision on the old memory is acknowledged.
          await Promise.allSettled([...this.inflight]);
          // The load replaces the whole state. What it brings in that memory lacks (with several
          // instances: what other owners published while the read copy was stopped for it, or
          // before the copy had caught up with the database) is durable and was never reported:
          // it is reported now, right after the rebuild and before any later event, so listeners
          // (student notices, the admin feed) see every durable change once and in log order.
          const state = await this.persistence.load({ isNew: (e) => this.isNew(e) });
          this.hooks.rebuild(state);
          this.reset();
          this.needsReload = false;
          this.retryDelayMs = RELOAD_RETRY_MIN_MS;
          if (state.newEvents && state.newEvents.length > 0) this.hooks.durable(state.newEvents);
          this.hooks.reloaded();
          if (this.reloadReason === 'failed write') this.log.warn('state reloaded from storage after a failed write');
          else this.log.info('state reloaded from storage after a change of shard ownership');
        } finally {
          this.reloading = null;
          if (this.reloadAgain) {
            this.reloadAgain = false;
            this.requestReload();
          } else if (this.needsReload) {
            this.retryLater();
          }
        }
      })();
    }
    try {
      await this.reloading;
    } catch (err) {
      // Say which part of storage is away (the broker, the database) when the store said so: an
      // operator reading a client's 503 during an outage should not have to guess.
      const which = isEngineError(err) && err.code === 'UNAVAILABLE' ? err.message.replace(/[;,] (reconnecting|nothing was changed).*$/, '').replace(/ \(reconnecting\)$/, '') : 'storage is unavailable';
      throw new EngineError('UNAVAILABLE', `${which}; nothing was changed, try again shortly`, {
        cause: err instanceof Error ? err.message : String(err),
      });
    }
  }

  /**
   * Whether the durable state in memory lacks an event a reload folds in (by the same rules as the
   * read copy and the replay: a section's or student's sequence number, a registry entry's id).
   * A section with changes on their way counts from its last durable snapshot.
   */
  private isNew(e: DomainEvent): boolean {
    switch (e.type) {
      case 'departmentCreated':
        return !this.directory.departments.has(e.department.id);
      case 'staffCreated':
        return !this.directory.staff.has(e.staff.id);
      case 'staffUpdated':
        return this.directory.staff.has(e.staffId) && e.seq > (this.directory.staffSeq.get(e.staffId) ?? 1);
      case 'studentCreated':
        return this.directory.get(e.student.id) === undefined;
      case 'actionUsed':
      case 'studentUpdated': {
        const st = this.directory.get(e.studentId);
        return st === undefined || e.seq > st.seq;
      }
      default: {
        const key = sectionKey(e.courseId, e.groupId);
        const ledger = this.sections.get(key);
        const known = ledger ? (ledger.durable?.context.seq ?? null) : this.host.has(key) ? this.host.context(key).seq : null;
        return e.type === 'sectionCreated' ? known === null : known === null || e.seq > known;
      }
    }
  }

  /**
   * Reloads from storage now, in the background (this instance won or lost a shard's lease): the
   * load replays the log up to the new owner's fence, so writes are decided on everything the
   * previous owner acknowledged.
   */
  requestReload(): void {
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    // A failed write still waiting for its reload stays the reason given.
    if (!this.needsReload) this.reloadReason = 'ownership';
    this.needsReload = true;
    this.ready().catch((err: unknown) => this.log.warn({ err }, 'reload after a change of ownership failed; trying again shortly'));
  }

  /**
   * Tries a failed reload again by itself, backing off to every 2 s. Writes wait for the
   * reload, and with several instances a shard whose reload failed is not served at all: no write
   * reaches this instance to ask again, so without this an outage of the database longer than a
   * lease round left the instance refusing every write until it was restarted.
   */
  private retryLater(): void {
    if (this.stopped || this.retryTimer !== null) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(RELOAD_RETRY_MAX_MS, delay * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.stopped || !this.needsReload) return;
      this.ready().catch((err: unknown) => this.log.warn({ err, nextTryInMs: this.retryDelayMs }, 'reload from storage failed; trying again'));
    }, delay);
    this.retryTimer.unref();
  }

  /** No more reloads (the engine is stopping). */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Marks memory suspect (e.g. a step half done) and rolls back to durable state before answering. */
  async discardUndurable(): Promise<void> {
    this.rollback();
    await this.ready().catch(() => undefined);
  }

  /** Writes the events; resolves once they are durable, or rolls memory back and throws. */
  async persist(events: DomainEvent[]): Promise<void> {
    if (events.length === 0) {
      // Nothing to write, but "already so" rests on memory that may hold changes still on their way
      // to storage (a concurrent request's): the answer stands only once those are durable.
      const earlier = this.inflight.size > 0 ? await Promise.allSettled([...this.inflight]) : [];
      if (earlier.some((r) => r.status === 'rejected') || this.reloadPending) {
        const reason = this.refusalWhileReloading(earlier.some((r) => r.status === 'rejected'));
        await this.ready().catch(() => undefined);
        throw reason;
      }
      return;
    }
    if (this.reloadPending) {
      // A write failed after this request passed ready(): its decision may rest on that undurable
      // change, so it is not written; the reload discards it with the rest.
      const reason = this.refusalWhileReloading(false);
      await this.ready().catch(() => undefined);
      throw reason;
    }
    const appended = this.persistence.append(events);
    this.inflight.add(appended);
    try {
      await appended;
    } catch (err) {
      if (!isEngineError(err)) this.log.error({ err }, 'append failed');
      this.rollback();
      if (isEngineError(err)) throw err;
      throw new EngineError('UNAVAILABLE', 'the change could not be made durable; nothing was changed');
    } finally {
      this.inflight.delete(appended);
    }
    this.markDurable(events);
    this.hooks.durable(events);
  }

  /**
   * The refusal of a write decided while a reload became due. After a failed write storage (or the
   * lease) is in question, and the old words stay. After a change of shard ownership (a takeover at
   * a peer's SIGTERM, a join) storage is fine: the reload takes a moment, the write was not made,
   * and a retry a second later is decided on the reloaded state (this refusal is answered only
   * once the reload has finished). Read before waiting: the wait ends the reload and its reason.
   */
  private refusalWhileReloading(writeFailed: boolean): EngineError {
    if (!writeFailed && this.reloadReason === 'ownership') {
      return new EngineError(
        'UNAVAILABLE',
        "this instance was reloading its state after a change of shard ownership while deciding this change; nothing was changed, try again",
        undefined,
        { retryAfterSeconds: 1 },
      );
    }
    return new EngineError('UNAVAILABLE', 'storage is unavailable; try again shortly');
  }

  /** Records which states are now durable (appends resolve in log order). */
  private markDurable(events: DomainEvent[]): void {
    const last = new Map<string, number>();
    for (const e of events) {
      switch (e.type) {
        case 'studentCreated':
        case 'actionUsed':
        case 'studentUpdated': {
          const id = e.type === 'studentCreated' ? e.student.id : e.studentId;
          const st = this.directory.get(id);
          const was = this.students.get(id);
          if (st && (was === undefined || was === null || e.seq > was.seq)) {
            // Only the fields these events carry are made durable: the record as of this event.
            const base = e.type === 'studentCreated' ? e.student : (was?.record ?? st.record);
            const record =
              e.type === 'studentCreated'
                ? { ...base }
                : e.type === 'actionUsed'
                  ? { ...base, remainingActions: e.remainingActions }
                  : { ...base, ...e.changes };
            this.students.set(id, { record, seq: e.seq });
          }
          break;
        }
        case 'staffCreated':
          this.undurableStaff.delete(e.staff.id);
          break;
        case 'staffUpdated': {
          const was = this.durableStaff.get(e.staffId);
          if (was && e.seq > was.seq) this.durableStaff.set(e.staffId, { record: { ...was.record, ...e.changes }, seq: e.seq });
          break;
        }
        case 'departmentCreated':
          this.undurableDepartments.delete(e.department.id);
          break;
        default: {
          const key = sectionKey(e.courseId, e.groupId);
          last.set(key, Math.max(last.get(key) ?? 0, e.seq));
        }
      }
    }
    for (const [key, seq] of last) {
      const ledger = this.sections.get(key);
      if (!ledger) continue;
      const i = ledger.pending.findIndex((p) => p.seq === seq);
      if (i < 0) continue;
      ledger.durable = (ledger.pending[i] as { snapshot: SectionSnapshot }).snapshot;
      ledger.pending.splice(0, i + 1);
      // Nothing on its way: the actor's state is the durable one, nothing more to remember.
      if (ledger.pending.length === 0) this.sections.delete(key);
    }
  }

  /**
   * After a failed append (which fails every later one too, until a reload), memory goes back to
   * the last durable state: sections, students, staff and departments alike. Writes stay refused
   * until a reload from storage succeeds; reads go on.
   */
  private rollback(): void {
    this.needsReload = true;
    this.reloadReason = 'failed write';
    let touched = false;
    for (const [key, ledger] of this.sections) {
      if (ledger.pending.length === 0) continue;
      touched = true;
      this.host.restore(key, ledger.durable);
    }
    this.sections = new Map();
    for (const [id, durable] of this.students) {
      if (durable === null) {
        this.directory.students.delete(id);
        continue;
      }
      const st = this.directory.get(id);
      if (st && st.seq !== durable.seq) {
        st.record = durable.record;
        st.seq = durable.seq;
      }
    }
    for (const [id, durable] of this.durableStaff) {
      if (!this.directory.staff.has(id)) continue;
      this.directory.staff.set(id, durable.record);
      this.directory.staffSeq.set(id, durable.seq);
    }
    this.durableStaff.clear();
    for (const id of this.undurableStaff) this.directory.staff.delete(id);
    for (const id of this.undurableDepartments) this.directory.departments.delete(id);
    this.undurableStaff.clear();
    this.undurableDepartments.clear();
    if (touched) {
      this.directory.clearHoldings();
      for (const key of this.host.keys()) this.directory.indexMembers(this.host.context(key));
    }
    this.log.warn('a write failed: memory rolled back to the last durable state');
  }
}
