import type { SectionContext, SectionEvent } from '../actors/types.js';

/**
 * What the student notices, seat watches and webhooks (src/notices) need from storage, with no
 * driver types in it. Both stores implement it on their own database (PGlite or PostgreSQL); the
 * notices are not stored themselves but derived from `transitions`, so their ids survive restarts.
 */

/** A seat watch; `firedSeq` is set once a seat or reserve place opened (the watch then ends). */
export interface WatchRow {
  id: number;
  studentId: number;
  courseId: number;
  groupId: number;
  createdAt: string;
  firedSeq: number | null;
}

/** A transition as the notices read it back: its global log position (`id`) and its event. */
export interface TransitionRow {
  /** Position in the `transitions` table: the log order of every section's events. */
  id: number;
  courseId: number;
  groupId: number;
  seq: number;
  type: string;
  studentId: number | null;
  at: number;
  payload: Record<string, unknown>;
}

export interface WebhookRow {
  id: number;
  url: string;
  secret: string;
  /** Notice kinds sent to this endpoint; null: every kind. */
  kinds: string[] | null;
  createdBy: number;
  createdAt: string;
  active: boolean;
}

/** `cancelled`: its webhook was deleted before it was delivered; it is not attempted again. */
export type DeliveryStatus = 'pending' | 'retrying' | 'delivered' | 'dead' | 'cancelled';

export interface DeliveryRow {
  id: number;
  webhookId: number;
  noticeKey: string;
  kind: string;
  studentId: number;
  body: string;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: string;
  createdAt: string;
  finishedAt: string | null;
}

export interface AttemptRow {
  attempt: number;
  at: string;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
}

export interface NewDelivery {
  webhookId: number;
  noticeKey: string;
  kind: string;
  studentId: number;
  body: string;
}

export interface AttemptResult {
  deliveryId: number;
  attempt: number;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  /** Where the delivery stands after this attempt. */
  status: Exclude<DeliveryStatus, 'pending' | 'cancelled'>;
  /** When to try next (unix ms), for `retrying`. */
  nextAttemptAt: number | null;
}

/**
 * What the notice hub decides about a section's active watches, in watch order, inside the store's
 * transaction (the rules stay in src/notices): watches to end (their student holds a place in the
 * section now), watches told about the opening, and the webhook notices of those told.
 */
export interface WatchChoice {
  end: number[];
  fire: number[];
  notices: OutboxNotice[];
}

/** The outcome of {@link NoticeStore.fireWatches}: who was told about the opening, and whether this call recorded it. */
export interface FiredWatches {
  /** Students told about this opening (section, seq), in watch order, by this call or an earlier one (another instance's). */
  told: number[];
  /** True when this call marked the watches (and recorded their deliveries); false when it had been done already. */
  recorded: boolean;
}

export interface NoticeStore {
  /** Every active watch, oldest first (watch order). */
  activeWatches(): Promise<WatchRow[]>;
  /**
   * The active watches of every section the student watches (theirs and the other watchers'), in
   * watch order: what the hub needs for the student's places among each section's watchers.
   */
  watchersOfStudentSections(studentId: number): Promise<WatchRow[]>;
  /**
   * Records a watch; resolves once durable. Serialised with every other watch change of the
   * section and of the student (cluster-wide), `check` sees the student's active watches and the
   * section's (watch order) and throws to refuse, or returns watches to end first (stale ones).
   * Rejects with ALREADY_WATCHING if one is active.
   */
  addWatch(
    studentId: number,
    courseId: number,
    groupId: number,
    check?: (mine: WatchRow[], section: WatchRow[]) => { end: number[] },
  ): Promise<WatchRow>;
  /** Ends an active watch; false if there was none. */
  removeWatch(studentId: number, courseId: number, groupId: number): Promise<boolean>;
  /** Ends active watches by id (their student holds a place in the section now). */
  endWatches(ids: number[]): Promise<void>;
  /**
   * Announces an opening of a section, once cluster-wide: under a per-section lock, if a watch of
   * the section was already marked with `seq` (another instance announced this opening), returns
   * those students; else `choose` picks among the active watches (watch order), and the chosen are
   * marked fired at `seq`, the ended deleted and the deliveries recorded, in one transaction.
   */
  fireWatches(courseId: number, groupId: number, seq: number, at: number, choose: (active: WatchRow[]) => WatchChoice): Promise<FiredWatches>;
  /** Per section with active watches (`<course>:<group>` keys): the highest sequence number a watch of it was fired at (0: none). */
  watchedSectionHeads(): Promise<Map<string, number>>;

  /** The log position of a section transition, or null if the database does not hold it (yet). */
  transitionId(courseId: number, groupId: number, seq: number): Promise<number | null>;
  /** Last sequence number the database holds per section stream (`<course>:<group>` keys); all sections without `keys`. */
  sectionHeads(keys?: string[]): Promise<Map<string, number>>;
  /** The student's own section transitions after log position `afterId`, in log order. */
  studentTransitionsAfter(studentId: number, afterId: number, limit: number): Promise<TransitionRow[]>;
  /**
   * Transitions of other students and of the section itself, in the given sections, after log
   * position `afterId` and after the student's own latest enroll or queue in each, in log order.
   */
  sectionTransitionsAfter(
    studentId: number,
    sections: { courseId: number; groupId: number }[],
    afterId: number,
    limit: number,
  ): Promise<TransitionRow[]>;
  /** The student's fired watches whose opening lies after log position `afterId`. */
  firedWatchesAfter(studentId: number, afterId: number): Promise<(WatchRow & { transitionId: number; at: number })[]>;

  /**
   * Registers a webhook. With `maxActive`, refuses (EngineError TOO_MANY_WEBHOOKS, nothing stored)
   * when that many are active already, counted and inserted under a lock so concurrent calls cannot
   * both pass the bound.
   */
  createWebhook(input: { url: string; secret: string; kinds: string[] | null; createdBy: number }, maxActive?: number): Promise<WebhookRow>;
  listWebhooks(): Promise<WebhookRow[]>;
  getWebhook(id: number): Promise<WebhookRow | null>;
  /** Stops deliveries to a webhook (its history is kept); false if unknown or already inactive. */
  deactivateWebhook(id: number): Promise<boolean>;
  /** Records deliveries (a repeated (webhook, notice) is ignored); returns the new rows' ids. */
  insertDeliveries(rows: NewDelivery[]): Promise<number[]>;
  getDelivery(id: number): Promise<(DeliveryRow & { url: string; secret: string; webhookActive: boolean }) | null>;
  /** Marks a delivery of a deleted webhook `cancelled` unless it is finished already. */
  cancelDelivery(id: number): Promise<void>;
  recordAttempt(result: AttemptResult): Promise<void>;
  /**
   * Full mode: marks up to `limit` new deliveries (recorded by the outbox, never handed to the
   * queue) as queued and returns them; concurrent callers (instances) get disjoint sets.
   */
  claimNewDeliveries(limit: number): Promise<number[]>;
  /** Deliveries waiting whose next attempt is due at `now` (unix ms), oldest first. */
  dueDeliveries(now: number, limit: number): Promise<number[]>;
  /**
   * Moves a waiting delivery's next attempt to `at` (unix ms) without counting an attempt: its
   * webhook has as many attempts in flight and waiting as it may (the worker's per-webhook bound),
   * so the job waits outside the worker. Keeps the sweep (and embedded mode's poller) from taking
   * it as overdue meanwhile. A finished or cancelled delivery is left as it is.
   */
  deferDelivery(id: number, at: number): Promise<void>;
  /** A webhook's latest deliveries, newest first, each with its attempts. */
  /**
   * A webhook's deliveries, newest first: `before` (a delivery id, exclusive) pages back through
   * them, `status` keeps one status only (the dead ones, to look into what a receiver missed).
   */
  listDeliveries(
    webhookId: number,
    limit: number,
    filter?: { status?: DeliveryStatus; before?: number },
  ): Promise<(DeliveryRow & { attemptLog: AttemptRow[] })[]>;
}

/**
 * Where webhook deliveries wait between attempts: RabbitMQ queues in full mode, the database's
 * `next_attempt_at` in embedded mode. The worker (src/notices) does the HTTP POST and decides.
 */
export interface DeliveryQueue {
  readonly kind: 'amqp' | 'database';
  /** Queues an attempt of a delivery after `delayMs`; resolves once the queue holds it durably. */
  schedule(job: DeliveryJob, delayMs: number): Promise<void>;
  /** Parks a delivery that used up its attempts (RabbitMQ: the dead-letter queue). */
  deadLetter(job: DeliveryJob): Promise<void>;
  /** Starts handing due jobs to `handle`; a job is removed only once `handle` resolved. */
  start(handle: (job: DeliveryJob) => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

export interface DeliveryJob {
  deliveryId: number;
  /** 1 for the first attempt. */
  attempt: number;
  /**
   * How often this job was set aside because its webhook was at its bound of attempts in flight
   * and waiting (absent: never); the next pause grows with it, so a dead receiver's backlog cycles
   * through the delay queues ever more slowly instead of spinning.
   */
  deferred?: number;
}

/** One section event with the section's context before and after it, as the outbox folds them. */
export interface SectionStep {
  before: SectionContext;
  event: SectionEvent;
  after: SectionContext;
}

/** A notice the webhook outbox records deliveries for (one per matching active webhook). */
export interface OutboxNotice {
  /** Unique per notice: `<notice id>:<kind>:<student>`; with the webhook, the delivery's key. */
  noticeKey: string;
  kind: string;
  studentId: number;
  /** The delivery body (JSON text), sent byte for byte and signed. */
  body: string;
}

/**
 * Turns the section steps of one durable batch, in log order, into webhook notices; only kinds in
 * `kinds` are needed (null: all). Supplied by src/notices (the notice rules), so persistence holds
 * no notice rules itself.
 */
export type OutboxDeriver = (steps: SectionStep[], kinds: ReadonlySet<string> | null) => OutboxNotice[];
