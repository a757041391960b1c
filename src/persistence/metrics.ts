import { Gauge, Histogram } from 'prom-client';
import { registry, sumWeak } from '../metrics/registry.js';

/**
 * Persistence metrics, in the process's one registry (src/metrics/registry.ts, scraped at
 * `/metrics`): a log reader stopped at a message, the group-commit queue, publish-confirm latency
 * and the batcher's lag. Queue depths and lag are read at scrape time from the live committers and
 * batchers; only the confirm latency is observed as it happens (once per published batch, not per
 * request).
 */
export const persistenceRegistry = registry;

/** Committers whose queues a gauge reads at scrape time; held weakly, so a dropped store is forgotten. */
const committers = new Set<WeakRef<{ readonly queuedEvents: number }>>();
/** Running batchers (removed when stopped). */
const batchers = new Set<BatcherLagSource>();

/** What the lag gauges read from a batcher. */
export interface BatcherLagSource {
  /** Messages received from the stream and not yet applied to the database. */
  readonly lagMessages: number;
  /** Events in those messages. */
  readonly lagEvents: number;
  /** Seconds since the oldest of them arrived (0 when none). */
  readonly lagSeconds: number;
  /**
   * Holds the stream's lead (its advisory lock) and applies the stream. The lag above counts only
   * what a batcher received, so it reads 0 on one that is not the leader, including while the
   * database is away; this is what says nobody writes the tables.
   */
  readonly leader: boolean;
}

function sum(read: (b: BatcherLagSource) => number): number {
  let total = 0;
  for (const b of batchers) total += read(b);
  return total;
}

/** Counts a group committer's waiting events in `enrollment_group_commit_queued_events`. */
export function watchGroupCommit(c: { readonly queuedEvents: number }): void {
  committers.add(new WeakRef(c));
}

/** Counts a batcher's lag in the `enrollment_batcher_lag_*` gauges. */
export function watchBatcher(b: BatcherLagSource): () => void {
  batchers.add(b);
  return () => void batchers.delete(b);
}

new Gauge({
  name: 'enrollment_group_commit_queued_events',
  help: 'Events waiting behind the group commit (or publish) in flight; appends past 50,000 get 503 OVERLOADED',
  registers: [registry],
  collect() {
    this.set(sumWeak(committers, (c) => c.queuedEvents));
  },
});

new Gauge({
  name: 'enrollment_batcher_lag_messages',
  help: 'Stream messages the batcher has received and not yet applied to PostgreSQL',
  registers: [registry],
  collect() {
    this.set(sum((b) => b.lagMessages));
  },
});

new Gauge({
  name: 'enrollment_batcher_lag_events',
  help: 'Events in the stream messages the batcher has received and not yet applied',
  registers: [registry],
  collect() {
    this.set(sum((b) => b.lagEvents));
  },
});

new Gauge({
  name: 'enrollment_batcher_lag_seconds',
  help: 'Age of the oldest stream message the batcher has received and not yet applied (0 when caught up)',
  registers: [registry],
  collect() {
    let worst = 0;
    for (const b of batchers) worst = Math.max(worst, b.lagSeconds);
    this.set(worst);
  },
});

new Gauge({
  name: 'enrollment_batcher_leader',
  help: 'Batchers in this process that hold the lead and apply the stream to PostgreSQL (a deployment has one; 0 across all processes means nothing writes the tables, e.g. while the database is away)',
  registers: [registry],
  collect() {
    this.set(sum((b) => (b.leader ? 1 : 0)));
  },
});

/**
 * Time from publishing a message to the broker's confirm (the durability wait of full mode). The
 * buckets go past the confirm timeout (BROKER_CONFIRM_TIMEOUT_MS, 5 s by default) up to 30 s, so
 * a broker that is slow to confirm shows how slow instead of "+Inf"; the boundaries up to 2.5 s are
 * unchanged.
 */
export const publishConfirmSeconds = new Histogram({
  name: 'enrollment_publish_confirm_seconds',
  help: 'Seconds from publishing a batch of events to RabbitMQ until its publisher confirm',
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

/** 1 while the reader (`batcher` or `replay`) of a stream is stopped at a message, 0 once it moves on. */
export const logStalled = new Gauge({
  name: 'enrollment_log_stalled',
  help: 'A log reader is stopped at a message it cannot read or apply (1) or not (0)',
  labelNames: ['stream', 'reader'] as const,
  registers: [registry],
});

/** The stream offset the reader is stopped at; -1 when it is not stopped. */
export const logStalledOffset = new Gauge({
  name: 'enrollment_log_stalled_offset',
  help: 'Stream offset of the message a log reader is stopped at (-1 when not stopped)',
  labelNames: ['stream', 'reader'] as const,
  registers: [registry],
});

/** Records (offset) or clears (null) a stall in both gauges. */
export function setLogStall(stream: string, reader: 'batcher' | 'replay' | 'read-copy', offset: number | null): void {
  logStalled.set({ stream, reader }, offset === null ? 0 : 1);
  logStalledOffset.set({ stream, reader }, offset ?? -1);
}
