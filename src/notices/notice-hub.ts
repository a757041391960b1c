import type { Logger } from 'pino';
import { evolveSection, sectionKey } from '../actors/section-logic.js';
import type { SectionContext, SectionEvent, Sex } from '../actors/types.js';
import type { Engine } from '../engine/engine.js';
import { EngineError } from '../errors.js';
import type { DomainEvent } from '../persistence/types.js';
import { createRepeatedFailureLog, type RepeatedFailureLog } from '../repeated-failure.js';
import type { NoticeStore, WatchChoice, WatchRow } from '../persistence/notice-types.js';
import {
  freePlaces,
  hasRoom,
  noticesForEvent,
  noticesFromRows,
  parseNoticeId,
  queueMovedFrom,
  queueMovedNotice,
  seatAvailableNotices,
  outboxNotice,
  type Notice,
} from './notices.js';

/**
 * The notice hub: turns the engine's durable transition batches into student notices, hands them
 * to each student's open event streams and to whoever else listens (webhooks), and keeps the seat
 * watches.
 *
 * It listens to `engine.onTransitions`, which fires only once a batch is durable, so nothing is
 * announced for a change that was not acknowledged. To know queue places and free seats *as of the
 * durable state* (the actors may already hold later, undurable changes), it keeps its own copy of
 * each section's context, folded from the durable events with the same `evolveSection` the actors
 * and the log fold use. Work per event is that fold plus a look-up of the affected students' streams;
 * nothing is written on this path, so an enroll is never slowed by a notice.
 *
 * Queue moves are the bulk of the notices under churn (every student behind someone who leaves a
 * long reserve queue moves), and only the latest place matters. So they are not built per event:
 * the hub records who moved in each section, and sends each of them at most one `queueMoved` per
 * section per window (`queueMoveWindowMs`), carrying the place they hold at that moment in the
 * durable state and the id of the latest transition that moved them. The first moves of a quiet
 * section go out at once; later ones wait for the end of the section's window. Notices are built
 * only for students with an open stream: webhooks get theirs from the log (the outbox, see
 * persistence/webhook-outbox.ts), except `seatAvailable`, which this hub records with the fired watches.
 *
 * Seat watches are rows of `seat_watches`, read from the database whenever they are needed (no
 * instance holds them in memory): every instance evaluates every opening and the store announces
 * each (section, seq) once cluster-wide, so the watches survive a change of owner and every
 * instance lists them and tells its own streams alike.
 */

/** One open event stream of a student. `write` returns false once the client is gone or too slow. */
export interface NoticeSink {
  write(n: Notice): boolean;
}

/** Default for {@link NoticeHubOptions.queueMoveWindowMs}. */
export const QUEUE_MOVE_WINDOW_MS = 1000;

export interface NoticeHubOptions {
  engine: Engine;
  store: NoticeStore | null;
  logger: Logger;
  /** Active watches one student may hold (default 10). */
  maxWatchesPerStudent?: number;
  /** Active watches one section may have (default 500). */
  maxWatchersPerSection?: number;
  /** Open event streams one student may hold (default 4). */
  maxStreamsPerStudent?: number;
  /** Open event streams in all (default 20,000). */
  maxStreams?: number;
  /** How long a resume waits for the database to hold the client's last transition (full mode's batcher lag; default 5 s). */
  resumeWaitMs?: number;
  /**
   * At most one `queueMoved` per student and section per this many ms, carrying the latest place
   * (default {@link QUEUE_MOVE_WINDOW_MS}; 0: coalesced within one event-loop turn only).
   */
  queueMoveWindowMs?: number;
  /**
   * How often the set of watched sections is read again from the database (ms; default 1000):
   * watches another instance took reach this instance's filter within it (see `watched`).
   */
  watchedRefreshMs?: number;
  /**
   * This process is the only one that takes watches on its store (embedded mode: the data
   * directory is locked to one process). Then an opening of a section no watch of its own names
   * needs no database read. Several instances (full mode) read at every opening instead: a watch
   * taken through another instance a moment before must still be told live on this one's streams.
   */
  singleInstance?: boolean;
}

/** Students who moved in one section's reserve queue since its last `queueMoved`s went out. */
interface PendingMoves {
  students: Set<number>;
  seq: number;
  at: number;
}

export type NoticeListener = (notices: Notice[]) => void;

/** What a resume yields: the missed notices, or `reset` when they cannot be listed (client reloads its state). */
export type ResumeResult = { notices: Notice[] } | { reset: string };

const RESUME_LIMIT = 1000;

export class NoticeHub {
  private readonly engine: Engine;
  private readonly store: NoticeStore | null;
  private readonly log: Logger;
  private readonly sections = new Map<string, SectionContext>();
  private readonly streams = new Map<number, Set<NoticeSink>>();
  private streamCount = 0;
  private readonly listeners = new Set<NoticeListener>();
  /** Openings being announced, one at a time and in log order (see fireWatches). */
  private fireChain: Promise<void> = Promise.resolve();
  /**
   * Sections with active watches, as this instance knows them: read from the database at start
   * and every `watchedRefreshMs`, and at once for a watch taken here. With `singleInstance`, an
   * opening of any other section (nearly every drop of a rush) costs no database read.
   */
  private watched = new Set<string>();
  /** Sections watched here while a refresh was reading (kept in the set it brings back). */
  private watchedDuringRefresh: Set<string> | null = null;
  private watchedTimer: NodeJS.Timeout | null = null;
  private readonly watchedRefreshMs: number;
  private readonly singleInstance: boolean;
  private readonly watchedRefreshFailures: RepeatedFailureLog;
  /**
   * Every seat opening is evaluated against the database: while it is away each one failed with an
   * error line and its stack (probe Q: 441 and 478 lines on two instances in a 5 s outage, up to 354 a
   * second, with no watch in the table). A few lines say the same.
   */
  private readonly fireFailures: RepeatedFailureLog;
  private unsubscribe: (() => void) | null = null;
  /** Durable batches not yet turned into notices, oldest first (see onDurable), and reloads' states (see resync). */
  private backlog: (DomainEvent[] | { reloaded: readonly SectionContext[] })[] = [];
  private unsubscribeReload: (() => void) | null = null;
  /**
   * Full mode: the database (written by the batcher) may lag behind what is durable. A resume reads
   * the database only once it holds `lastDurable` (the batcher writes in log order, so then it
   * holds everything before it too) and every section that was ahead of it at start (`lagging`).
   */
  private lastDurable: { courseId: number; groupId: number; seq: number } | null = null;
  private lagging = new Map<string, number>();
  private draining = false;
  readonly maxWatchesPerStudent: number;
  readonly maxWatchersPerSection: number;
  readonly maxStreamsPerStudent: number;
  readonly maxStreams: number;
  private readonly resumeWaitMs: number;
  readonly queueMoveWindowMs: number;
  private readonly moves = new Map<string, PendingMoves>();
  /** When each section last sent its queue moves (performance.now()), within the window. */
  private readonly movesSentAt = new Map<string, number>();
  private movesTimer: NodeJS.Timeout | null = null;
  /** Whether a notice for this student is of use now: the student has an open stream. */
  private readonly wants = (studentId: number): boolean => this.streams.has(studentId);

  constructor(opts: NoticeHubOptions) {
    this.engine = opts.engine;
    this.store = opts.store;
    this.log = opts.logger.child({ module: 'notices' });
    this.maxWatchesPerStudent = opts.maxWatchesPerStudent ?? 10;
    this.maxWatchersPerSection = opts.maxWatchersPerSection ?? 500;
    this.maxStreamsPerStudent = opts.maxStreamsPerStudent ?? 4;
    this.maxStreams = opts.maxStreams ?? 20_000;
    this.resumeWaitMs = opts.resumeWaitMs ?? 5000;
    this.queueMoveWindowMs = Math.max(0, opts.queueMoveWindowMs ?? QUEUE_MOVE_WINDOW_MS);
    this.watchedRefreshMs = Math.max(50, opts.watchedRefreshMs ?? 1000);
    this.singleInstance = opts.singleInstance ?? false;
    this.watchedRefreshFailures = createRepeatedFailureLog(this.log, {
      message: 'reading the watched sections failed; openings of sections watched through other instances are announced by those',
      recovered: 'reading the watched sections works again',
    });
    this.fireFailures = createRepeatedFailureLog(this.log, {
      message: 'announcing a seat-watch opening failed (database unreachable?); a section that still has room is announced at the next start',
      recovered: 'seat-watch openings are announced again',
    });
  }

  get hasStore(): boolean {
    return this.store !== null;
  }

  /** Open event streams now. */
  get openStreams(): number {
    return this.streamCount;
  }

  /**
   * Takes the engine's state (all durable right after its start), then listens. A watched section
   * that has room now and changed since its watches were last fired (an opening made durable just
   * before a crash, whose watches were never marked) is announced now; one whose latest state was
   * announced already is not (its watchers would be told again at every restart).
   */
  async start(): Promise<void> {
    for (const ctx of this.engine.dumpState().sections) this.sections.set(sectionKey(ctx.info.courseId, ctx.info.groupId), ctx);
    this.unsubscribe = this.engine.onTransitions((events) => this.enqueue(events));
    this.unsubscribeReload = this.engine.onReloaded((sections) => this.enqueue({ reloaded: sections }));
    if (this.store) {
      const heads = await this.store.sectionHeads();
      for (const [key, ctx] of this.sections) if (ctx.seq > (heads.get(key) ?? 0)) this.lagging.set(key, ctx.seq);
      const fired = await this.store.watchedSectionHeads();
      this.watched = new Set(fired.keys());
      // Only the single-instance filter reads the set: with several instances it is not kept up.
      if (this.singleInstance) {
        this.watchedTimer = setInterval(() => void this.refreshWatched(), this.watchedRefreshMs);
        this.watchedTimer.unref();
      }
      const now = Date.now();
      for (const [key, firedSeq] of fired) {
        const ctx = this.sections.get(key);
        if (ctx && hasRoom(ctx) && ctx.seq > firedSeq) this.fireWatches(ctx, freePlaces(ctx), now);
      }
      await this.fireChain;
    }
  }

  stop(): void {
    if (this.watchedTimer) clearInterval(this.watchedTimer);
    this.watchedTimer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.unsubscribeReload?.();
    this.unsubscribeReload = null;
    this.backlog = [];
    if (this.movesTimer) clearInterval(this.movesTimer);
    this.movesTimer = null;
    this.moves.clear();
    this.movesSentAt.clear();
    this.listeners.clear();
    this.streams.clear();
    this.streamCount = 0;
  }

  /**
   * The seat-watch notices (`seatAvailable`), once the fired watches and their webhook deliveries
   * are recorded (webhooks wake their sender). Watches live in this hub, so these are the notices
   * the webhook outbox cannot derive from the log. Listeners must not block.
   */
  onWatchNotices(listener: NoticeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Throws TOO_MANY_STREAMS / UNAVAILABLE when the student could not open a stream now; opens none.
   * A HEAD of the stream asks this, so it is refused as its GET would be without taking a slot.
   */
  assertStreamRoom(studentId: number): void {
    if ((this.streams.get(studentId)?.size ?? 0) >= this.maxStreamsPerStudent) {
      throw new EngineError('TOO_MANY_STREAMS', `at most ${this.maxStreamsPerStudent} open event streams per student; close one and try again`, undefined, {
        retryAfterSeconds: 10,
      });
    }
    if (this.streamCount >= this.maxStreams) {
      throw new EngineError('UNAVAILABLE', 'too many event streams are open; try again shortly', undefined, { retryAfterSeconds: 10 });
    }
  }

  /** Opens a stream for a student; throws TOO_MANY_STREAMS / UNAVAILABLE when over the caps. */
  openStream(studentId: number, sink: NoticeSink): () => void {
    this.assertStreamRoom(studentId);
    const mine = this.streams.get(studentId);
    const set = mine ?? new Set<NoticeSink>();
    if (!mine) this.streams.set(studentId, set);
    set.add(sink);
    this.streamCount++;
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      set.delete(sink);
      this.streamCount--;
      if (set.size === 0) this.streams.delete(studentId);
    };
  }

  /** The notices a student missed after `lastId` (a Last-Event-ID), from the database. */
  async resume(studentId: number, lastId: string): Promise<ResumeResult> {
    const at = parseNoticeId(lastId);
    if (at === null) throw new EngineError('BAD_REQUEST', 'Last-Event-ID is not a notice id (expected <course>-<group>-<seq>)');
    if (!this.store) return { reset: 'this engine keeps no notice history; reload your sections' };
    const store = this.store;
    const deadline = Date.now() + this.resumeWaitMs;
    const target = this.lastDurable;
    let pos: number | null = null;
    // Full mode: wait (up to resumeWaitMs) until the database holds the client's last id and
    // everything durable so far; otherwise missed notices could be left out.
    for (;;) {
      pos ??= await store.transitionId(at.courseId, at.groupId, at.seq);
      const caughtUp = pos !== null && (await this.databaseCaughtUp(target));
      if (caughtUp) break;
      if (Date.now() >= deadline) {
        if (pos === null) return { reset: 'the last event id is unknown; reload your sections' };
        return { reset: 'the notice history is still being written; reload your sections' };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (pos === null) return { reset: 'the last event id is unknown; reload your sections' };
    const held = this.engine.studentSections(studentId);
    const queuedNow = new Map<string, number>();
    for (const h of held) if (h.status === 'queued' && h.queuePosition !== undefined) queuedNow.set(sectionKey(h.section.info.courseId, h.section.info.groupId), h.queuePosition);
    const [own, sections, fired] = await Promise.all([
      this.store.studentTransitionsAfter(studentId, pos, RESUME_LIMIT),
      this.store.sectionTransitionsAfter(
        studentId,
        held.map((h) => ({ courseId: h.section.info.courseId, groupId: h.section.info.groupId })),
        pos,
        RESUME_LIMIT,
      ),
      this.store.firedWatchesAfter(studentId, pos),
    ]);
    if (own.length >= RESUME_LIMIT || sections.length >= RESUME_LIMIT) return { reset: 'too much happened since the last event id; reload your sections' };
    const names = new Map<string, string>();
    for (const [k, ctx] of this.sections) names.set(k, ctx.info.name);
    return { notices: noticesFromRows({ studentId, own, sections, fired, names, queuedNow }) };
  }

  private async databaseCaughtUp(target: { courseId: number; groupId: number; seq: number } | null): Promise<boolean> {
    const store = this.store as NoticeStore;
    if (this.lagging.size > 0) {
      const heads = await store.sectionHeads([...this.lagging.keys()]);
      for (const [key, seq] of [...this.lagging]) if ((heads.get(key) ?? 0) >= seq) this.lagging.delete(key);
      if (this.lagging.size > 0) return false;
    }
    return target === null || (await store.transitionId(target.courseId, target.groupId, target.seq)) !== null;
  }

  // -------------------------------------------------------------------------------------------
  // Seat watches

  /**
   * Where a watcher stands in a section: holding a place in it (the watch has no use any more and
   * ends), excluded by its sex lock (kept, but passed over while the lock excludes them), or able
   * to take a place.
   */
  private standing(section: { registered: readonly number[]; queue: readonly number[]; sexLock: Sex | null }, studentId: number): 'holds' | 'excluded' | 'eligible' {
    if (section.registered.includes(studentId) || section.queue.includes(studentId)) return 'holds';
    if (section.sexLock !== null) {
      const sex = this.engine.getStudent(studentId)?.gender;
      if (sex !== undefined && sex !== section.sexLock) return 'excluded';
    }
    return 'eligible';
  }

  /** A section's members and lock as this instance's engine holds them now (null: unknown section). */
  private liveSection(courseId: number, groupId: number): { registered: number[]; queue: number[]; sexLock: Sex | null } | null {
    try {
      const m = this.engine.sectionMembers(courseId, groupId);
      return { ...m, sexLock: this.engine.getSection(courseId, groupId).sexLock };
    } catch {
      return null;
    }
  }

  /**
   * The student's active watches, with their place among the section's watchers who could take a
   * place (watch order), read from the database: every instance answers the same, whichever took
   * the watch. A watch of a section the student holds a place in now ends here (it is not listed).
   */
  async listWatches(studentId: number): Promise<{ watch: WatchRow; position: number }[]> {
    const store = this.store;
    if (!store) return [];
    const rows = await store.watchersOfStudentSections(studentId);
    const bySection = new Map<string, WatchRow[]>();
    for (const w of rows) {
      const key = sectionKey(w.courseId, w.groupId);
      const list = bySection.get(key) ?? [];
      list.push(w);
      bySection.set(key, list);
    }
    const out: { watch: WatchRow; position: number }[] = [];
    const ended: number[] = [];
    for (const list of bySection.values()) {
      const first = list[0] as WatchRow;
      const live = this.liveSection(first.courseId, first.groupId);
      let ahead = 0;
      for (const w of list) {
        const standing = live ? this.standing(live, w.studentId) : 'eligible';
        if (w.studentId === studentId) {
          if (standing === 'holds') ended.push(w.id);
          else out.push({ watch: w, position: ahead + 1 });
          break;
        }
        if (standing === 'eligible') ahead++;
      }
    }
    if (ended.length > 0) await store.endWatches(ended);
    return out.sort((x, y) => x.watch.id - y.watch.id);
  }

  /**
   * Starts a watch on a full section; durable when it resolves. The bounds are counted in the
   * database under the section's and the student's locks, so they hold across instances.
   */
  async addWatch(studentId: number, courseId: number, groupId: number): Promise<{ watch: WatchRow; position: number }> {
    const store = this.requireStore();
    const view = this.engine.getSection(courseId, groupId);
    if (view.closed) throw new EngineError('SECTION_CLOSED', 'the section is closed; a watch is for a section that is full');
    const sex = this.engine.getStudent(studentId)?.gender;
    // The same refusal as the enroll's (SPEC section 4, rule 3): a place there could never be theirs.
    if (view.sexLock !== null && sex !== undefined && sex !== view.sexLock) {
      throw new EngineError('SEX_LOCK', `the section is only open to ${view.sexLock} students`);
    }
    if (this.engine.studentSections(studentId).some((h) => h.section.info.courseId === courseId && h.section.info.groupId === groupId)) {
      throw new EngineError('ALREADY_IN_SECTION', 'you already hold a place in this section');
    }
    if (view.registeredCount < view.capacity || view.queueLength < view.reserveCapacity) {
      throw new EngineError(
        'WATCH_NOT_NEEDED',
        view.registeredCount < view.capacity ? 'the section has a free seat: enroll instead' : 'the section has a free reserve-queue place: enroll instead',
      );
    }
    let ahead = 0;
    const row = await store.addWatch(studentId, courseId, groupId, (mine, section) => {
      const end: number[] = [];
      let active = 0;
      for (const w of mine) {
        const live = this.liveSection(w.courseId, w.groupId);
        if (live && this.standing(live, studentId) === 'holds') end.push(w.id);
        else if (w.courseId === courseId && w.groupId === groupId) throw new EngineError('ALREADY_WATCHING', 'you are already watching this section');
        else active++;
      }
      if (active >= this.maxWatchesPerStudent) {
        throw new EngineError('TOO_MANY_WATCHES', `you may watch at most ${this.maxWatchesPerStudent} sections at once; stop one first`);
      }
      const live = this.liveSection(courseId, groupId);
      let watchers = 0;
      ahead = 0;
      for (const w of section) {
        const standing = live ? this.standing(live, w.studentId) : 'eligible';
        if (standing === 'holds') end.push(w.id);
        else {
          watchers++;
          if (standing === 'eligible') ahead++;
        }
      }
      if (watchers >= this.maxWatchersPerSection) {
        throw new EngineError('TOO_MANY_WATCHES', `this section already has ${this.maxWatchersPerSection} watchers, the most it takes`);
      }
      return { end };
    });
    this.noteWatched(sectionKey(courseId, groupId));
    return { watch: row, position: ahead + 1 };
  }

  private noteWatched(key: string): void {
    if (!this.singleInstance) return;
    this.watched.add(key);
    this.watchedDuringRefresh?.add(key);
  }

  /** Reads the watched sections again (one refresh at a time; a failure keeps the set it had). */
  private async refreshWatched(): Promise<void> {
    if (!this.store || this.watchedDuringRefresh !== null) return;
    const during = new Set<string>();
    this.watchedDuringRefresh = during;
    try {
      const heads = await this.store.watchedSectionHeads();
      const next = new Set(heads.keys());
      for (const k of during) next.add(k);
      this.watched = next;
      this.watchedRefreshFailures.succeeded();
    } catch (err) {
      this.watchedRefreshFailures.failed(err);
    } finally {
      this.watchedDuringRefresh = null;
    }
  }

  async removeWatch(studentId: number, courseId: number, groupId: number): Promise<void> {
    const store = this.requireStore();
    if (!(await store.removeWatch(studentId, courseId, groupId))) throw new EngineError('NOT_WATCHING', 'you are not watching this section');
  }

  private requireStore(): NoticeStore {
    if (!this.store) throw new EngineError('NOTICES_UNAVAILABLE', 'seat watches need a database; this engine runs without one');
    return this.store;
  }

  /**
   * Announces an opening of `n` places in the section, as of its durable state `ctx`: the oldest
   * `n` watchers able to take a place are told, and their watches end; watchers holding a place in
   * the section now are ended without a notice; those the sex lock excludes keep their place.
   *
   * Every instance evaluates every opening (each follows the log); the store decides once per
   * (section, seq) for the whole cluster, and answers every instance with the students told, so
   * each pushes the notices to its own streams, and only the one that recorded them wakes the
   * webhooks (their deliveries were recorded in the same transaction). Openings are announced one
   * at a time, in the order they became durable, off the engine's path.
   */
  private fireWatches(ctx: SectionContext, n: number, at: number): void {
    const store = this.store;
    if (!store || n <= 0) return;
    const { courseId, groupId } = ctx.info;
    if (this.singleInstance && !this.watched.has(sectionKey(courseId, groupId))) return;
    const seq = ctx.seq;
    const choose = (active: WatchRow[]): WatchChoice => {
      const end: number[] = [];
      const fire: WatchRow[] = [];
      for (const w of active) {
        const standing = this.standing(ctx, w.studentId);
        if (standing === 'holds') end.push(w.id);
        else if (standing === 'eligible' && fire.length < n) fire.push(w);
      }
      const notices = seatAvailableNotices(ctx, seq, at, fire.map((w) => w.studentId)).map(outboxNotice);
      return { end, fire: fire.map((w) => w.id), notices };
    };
    const run = async (): Promise<void> => {
      // Stopped meanwhile: the store may be closing; the next start announces what is left.
      if (this.unsubscribe === null) return;
      const res = await store.fireWatches(courseId, groupId, seq, at, choose);
      this.fireFailures.succeeded();
      if (res.told.length === 0) return;
      const notices = seatAvailableNotices(ctx, seq, at, res.told);
      this.dispatch(notices);
      if (res.recorded) this.tellWatchListeners(notices);
    };
    this.fireChain = this.fireChain.then(run).catch((err: unknown) => {
      this.fireFailures.failed(err, { key: sectionKey(courseId, groupId), seq });
    });
  }

  private tellWatchListeners(notices: Notice[]): void {
    for (const l of this.listeners) {
      try {
        l(notices);
      } catch (err) {
        this.log.error({ err }, 'notice listener failed');
      }
    }
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Called by the engine on the request's own path, right after its batch became durable: only
   * queues the batch, so the reply is not held up; the batches are turned into notices in order
   * on the next turn of the event loop.
   */
  private enqueue(events: DomainEvent[] | { reloaded: readonly SectionContext[] }): void {
    this.backlog.push(events);
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => {
      const batches = this.backlog;
      this.backlog = [];
      this.draining = false;
      const out: Notice[] = [];
      for (const b of batches) {
        try {
          if (Array.isArray(b)) this.onDurable(b, out);
          else this.resync(b.reloaded);
        } catch (err) {
          this.log.error({ err }, 'deriving notices failed');
        }
      }
      if (this.moves.size > 0) this.flushMoves(out, performance.now());
      if (out.length > 0) this.dispatch(out);
    });
  }

  private onDurable(events: DomainEvent[], out: Notice[]): void {
    /** Sections changed in this batch: key -> free places before the batch, and when its last event was decided. */
    let touched: Map<string, { free: number; at: number }> | null = null;
    const interested = this.streamCount > 0;
    for (const ev of events) {
      if (!('courseId' in ev)) continue;
      const e = ev;
      this.lastDurable = { courseId: e.courseId, groupId: e.groupId, seq: e.seq };
      const key = sectionKey(e.courseId, e.groupId);
      const before = this.sections.get(key);
      if (e.type === 'sectionCreated' || !before) {
        if (e.type === 'sectionCreated' && !before) this.sections.set(key, evolveSection({} as SectionContext, e));
        continue;
      }
      // Already folded (the same rule as the replay and the read copy). Deriving from it again
      // would compare a state with itself: the student just promoted still queued, told
      // `promoted` and `queueMoved` under one id.
      if (e.seq <= before.seq) {
        this.log.warn({ key, seq: e.seq, mirror: before.seq }, 'notice mirror was given an event it holds already; ignored');
        continue;
      }
      // Every durable event reaches the hub once and in order (a reload reports what it folded in):
      // a gap means notices derived from a state that misses changes.
      if (e.seq !== before.seq + 1) this.log.warn({ key, seq: e.seq, mirror: before.seq }, 'notice mirror skipped a sequence number');
      const after = evolveSection(before, e);
      this.sections.set(key, after);
      if (interested) {
        const derived = noticesForEvent(before, e, after, { queueMoves: false, wants: this.wants });
        // A student told something else of this section while a queue move of theirs is held for
        // the window gets that move first: notices leave in log order, and a client resuming from
        // the later notice's id would never be told the place it holds (probe N).
        const held = derived.length > 0 ? this.moves.get(key) : undefined;
        if (held) {
          for (const n of derived) {
            if (!held.students.delete(n.studentId)) continue;
            const place = before.queue.indexOf(n.studentId);
            if (place >= 0) out.push(queueMovedNotice(before, n.studentId, place + 1, held.seq, held.at));
          }
          if (held.students.size === 0) this.moves.delete(key);
        }
        for (const n of derived) out.push(n);
        const from = queueMovedFrom(before, e, after);
        if (from >= 0) this.recordMoves(key, after, from, e);
      }
      if (this.store) {
        touched ??= new Map();
        const t = touched.get(key);
        if (t) t.at = e.cause.at;
        else touched.set(key, { free: freePlaces(before), at: e.cause.at });
      }
    }
    // Each place the batch added is announced to one watcher (a second seat freed while the first
    // is still free is a second opening), whether or not the section had room before.
    if (touched) {
      for (const [key, t] of touched) {
        const ctx = this.sections.get(key) as SectionContext;
        const added = freePlaces(ctx) - t.free;
        if (added > 0) this.fireWatches(ctx, added, t.at);
      }
    }
  }

  /**
   * After a reload (its new events already folded, they come first in the backlog): a section the
   * reloaded state has further than this copy changed in a way never reported (a write answered 503
   * whose events reached the log, in a store that cannot tell which). Its notices are not derived,
   * but the copy is taken from the reloaded state, so later notices are not derived from a stale
   * queue (a student promoted without this copy knowing would stay queued in it, and be told
   * `queueMoved` alongside a later `promoted`).
   */
  private resync(sections: readonly SectionContext[]): void {
    const stale: string[] = [];
    for (const ctx of sections) {
      const key = sectionKey(ctx.info.courseId, ctx.info.groupId);
      const mine = this.sections.get(key);
      if (mine && mine.seq >= ctx.seq) continue;
      this.sections.set(key, ctx);
      if (mine) stale.push(`${key}@${mine.seq}->${ctx.seq}`);
    }
    if (stale.length > 0) {
      this.log.warn({ sections: stale.slice(0, 20), count: stale.length }, 'a reload brought in changes this hub was not told of; their notices were not sent here');
    }
  }

  /** Notes the students from `from` on in the section's queue as moved (no notice built yet). */
  private recordMoves(key: string, after: SectionContext, from: number, e: SectionEvent): void {
    let m = this.moves.get(key);
    for (let i = from; i < after.queue.length; i++) {
      const s = after.queue[i] as number;
      if (!this.wants(s)) continue;
      if (!m) this.moves.set(key, (m = { students: new Set(), seq: e.seq, at: e.cause.at }));
      m.students.add(s);
    }
    if (m) {
      m.seq = e.seq;
      m.at = e.cause.at;
    }
  }

  /**
   * Sends the recorded queue moves of every section whose window has passed: one `queueMoved` per
   * student still queued, with the place held now (durable state) and the latest move's id.
   */
  private flushMoves(out: Notice[], now: number): void {
    const w = this.queueMoveWindowMs;
    for (const [key, m] of this.moves) {
      const sentAt = this.movesSentAt.get(key);
      if (w > 0 && sentAt !== undefined && now - sentAt < w) continue;
      this.moves.delete(key);
      if (w > 0) this.movesSentAt.set(key, now);
      const ctx = this.sections.get(key);
      if (!ctx) continue;
      const q = ctx.queue;
      for (let i = 0; i < q.length; i++) {
        const s = q[i] as number;
        if (m.students.has(s) && this.wants(s)) out.push(queueMovedNotice(ctx, s, i + 1, m.seq, m.at));
      }
    }
    if (w > 0 && this.movesTimer === null && (this.moves.size > 0 || this.movesSentAt.size > 0)) {
      this.movesTimer = setInterval(() => this.onMovesTimer(), Math.max(10, Math.floor(w / 4)));
      this.movesTimer.unref();
    }
  }

  /**
   * Sends every recorded queue move now, whatever its section's window (the timer sends them when
   * the window has passed; tests call this instead of waiting for it).
   */
  flushQueueMoves(): void {
    const out: Notice[] = [];
    this.movesSentAt.clear();
    this.flushMoves(out, performance.now());
    if (out.length > 0) this.dispatch(out);
  }

  private onMovesTimer(): void {
    const now = performance.now();
    const out: Notice[] = [];
    try {
      this.flushMoves(out, now);
    } catch (err) {
      this.log.error({ err }, 'sending queue moves failed');
    }
    for (const [key, t] of this.movesSentAt) if (now - t >= this.queueMoveWindowMs && !this.moves.has(key)) this.movesSentAt.delete(key);
    if (this.moves.size === 0 && this.movesSentAt.size === 0 && this.movesTimer) {
      clearInterval(this.movesTimer);
      this.movesTimer = null;
    }
    if (out.length > 0) this.dispatch(out);
  }

  private dispatch(notices: Notice[]): void {
    if (this.streamCount > 0) {
      for (const n of notices) {
        const set = this.streams.get(n.studentId);
        if (!set) continue;
        // A sink that closes itself while written to leaves the set; a Set's iteration allows that.
        for (const sink of set) {
          try {
            sink.write(n);
          } catch (err) {
            this.log.warn({ err }, 'writing a notice failed');
          }
        }
      }
    }
  }
}

export function createNoticeHub(opts: NoticeHubOptions): NoticeHub {
  return new NoticeHub(opts);
}
