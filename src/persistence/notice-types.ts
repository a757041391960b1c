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

export interface NoticeStore {
  /** Every active watch, oldest first (watch order). */
  activeWatches(): Promise<WatchRow[]>;
  /** Records a watch; resolves once durable. Rejects with ALREADY_WATCHING if one is active. */
  addWatch(studentId: number, courseId: number, groupId: number): Promise<WatchRow>;
  /** Ends an active watch; false if there was none. */
  removeWatch(studentId: number, courseId: number, groupId: number): Promise<boolean>;
  /**
   * Marks watches as told about the opening at section sequence `seq`, and records the webhook
   * deliveries of their notices in the same transaction; resolves with the deliveries recorded.
   */
  markWatchesFired(ids: number[], seq: number, at: number, notices?: OutboxNotice[]): Promise<number>;

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
  listDeliveries(webhookId: number, limit: number): Promise<(DeliveryRow & { attemptLog: AttemptRow[] })[]>;
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
