import type { Logger } from 'pino';
import { evolveSection, initialSectionContext, sectionKey } from '../actors/section-logic.js';
import type { SectionContext, SectionEvent } from '../actors/types.js';
import type { OutboxDeriver, SectionStep } from './notice-types.js';
import type { SqlExecutor } from './sql-client.js';
import { insertOutboxDeliveries } from './notice-store.js';
import { applyEvents, loadSections } from './state-store.js';
import type { DomainEvent } from './types.js';

/**
 * The webhook outbox: webhook deliveries derived from the ordered log, recorded in the same
 * transaction as the events they come from.
 *
 * Whoever writes the log to the database (the batcher in full mode, the group commit in embedded
 * mode) calls {@link WebhookOutbox.stage} inside its transaction with the events new to the
 * database. The outbox folds them into its own copy of each section (the state *as the database
 * holds it*, loaded inside a transaction the first time it is needed), asks the notice rules for
 * the notices (`deriver`), and inserts one `webhook_deliveries` row per notice and matching active
 * webhook. So a delivery exists exactly when its change is in the database: a crash before COMMIT
 * loses both and the batch is applied again (with the same deliveries), a crash after it loses
 * neither. Nothing is recorded for a change that never reached the log, and only the one active
 * batcher records them (the `(webhook, notice)` key makes a repeat a no-op anyway).
 *
 * The copy changes only once the transaction committed ({@link StagedOutbox.commit}); a rolled
 * back batch leaves it as it was. While no webhook is active, batches that could mean a notice
 * drop the copy and nothing is derived; it is read again when one is.
 */
export interface WebhookOutbox {
  /** Inside the batch's transaction, after its transitions were inserted and before the tables are changed. */
  stage(tx: SqlExecutor, fresh: DomainEvent[]): Promise<StagedOutbox | null>;
  /** A webhook was registered or stopped (by this process): with `cacheWebhooks`, read them again. */
  webhooksChanged(): void;
}

export interface StagedOutbox {
  /** Deliveries recorded by the batch. */
  readonly deliveries: number;
  /** Call after COMMIT: the batch's sections become the outbox's copy. */
  commit(): void;
}

/**
 * {@link applyEvents} with the outbox's deliveries for the new events staged in the same
 * transaction (nothing staged without an outbox). The caller calls `staged.commit()` after COMMIT.
 */
export async function applyEventsWithOutbox(
  tx: SqlExecutor,
  events: DomainEvent[],
  outbox: WebhookOutbox | undefined,
  replaced?: string[],
): Promise<{ count: number; staged: StagedOutbox | null }> {
  let staged: StagedOutbox | null = null;
  const count = await applyEvents(
    tx,
    events,
    outbox
      ? async (fresh) => {
          staged = await outbox.stage(tx, fresh);
        }
      : undefined,
    replaced,
  );
  return { count, staged };
}

export function createWebhookOutbox(opts: {
  deriver: OutboxDeriver;
  /** Whether an event can mean a notice (default: every section event); batches without one derive nothing. */
  mayNotify?: (e: SectionEvent) => boolean;
  logger: Logger;
  onRecorded?: (deliveries: number) => void;
  /**
   * Keep the active webhooks between batches, read again only after {@link WebhookOutbox.webhooksChanged}:
   * right when this process is the only one that registers webhooks (embedded mode, where the
   * group commit is on the request's path). Otherwise they are read in every batch that may mean a notice.
   */
  cacheWebhooks?: boolean;
}): WebhookOutbox {
  const log = opts.logger.child({ module: 'webhook-outbox' });
  /** The sections as the database holds them (after the last committed batch), or null when not kept. */
  let copy: Map<string, SectionContext> | null = null;
  let cached: { kinds: string[] | null }[] | null = null;

  return {
    webhooksChanged() {
      cached = null;
    },
    async stage(tx, fresh) {
      const sectionEvents = fresh.filter((e) => 'courseId' in e);
      if (sectionEvents.length === 0) return null;
      const may = opts.mayNotify ?? (() => true);
      const mayNotify = sectionEvents.some((e) => 'courseId' in e && may(e));
      if (copy === null && !mayNotify) return null;
      let kinds: Set<string> | null = null;
      let active = false;
      if (mayNotify) {
        let hooks = opts.cacheWebhooks ? cached : null;
        if (hooks === null) {
          hooks = (await tx.query<{ kinds: string[] | null }>('SELECT kinds FROM webhooks WHERE active')).rows;
          if (opts.cacheWebhooks) cached = hooks;
        }
        active = hooks.length > 0;
        if (active && hooks.every((h) => h.kinds !== null)) kinds = new Set(hooks.flatMap((h) => h.kinds as string[]));
        if (!active) {
          copy = null;
          return null;
        }
        if (copy === null) {
          const t0 = performance.now();
          const loaded = await loadSections(tx);
          copy = new Map(loaded.map((c) => [sectionKey(c.info.courseId, c.info.groupId), c]));
          log.info({ sections: copy.size, ms: Math.round(performance.now() - t0) }, 'webhook outbox: section copy read from the database');
        }
      }
      let base = copy as Map<string, SectionContext>;
      let changed = new Map<string, SectionContext>();
      let steps: SectionStep[] = [];
      for (let pass = 0; pass < 2; pass++) {
        let consistent = true;
        for (const e of sectionEvents) {
          if (!('courseId' in e)) continue;
          const key = sectionKey(e.courseId, e.groupId);
          const before = changed.get(key) ?? base.get(key);
          if (e.type === 'sectionCreated') {
            if (!before) changed.set(key, evolveSection(initialSectionContext(e.info, e), e));
            continue;
          }
          if (!before) continue;
          if (e.seq !== before.seq + 1) consistent = false;
          const after = evolveSection(before, e);
          changed.set(key, after);
          if (active) steps.push({ before, event: e, after });
        }
        if (consistent || pass === 1) {
          if (!consistent) log.warn('webhook outbox: the section copy still disagrees with the batch after reading it again');
          break;
        }
        // Another writer wrote batches meanwhile (a batcher that led before): read the copy again,
        // inside this transaction, where the tables still hold the state before this batch.
        log.warn('webhook outbox: the section copy is behind the log; reading it again from the database');
        const loaded = await loadSections(tx);
        copy = base = new Map(loaded.map((c) => [sectionKey(c.info.courseId, c.info.groupId), c]));
        changed = new Map();
        steps = [];
      }
      let recorded = 0;
      const notices = steps.length > 0 ? opts.deriver(steps, kinds) : [];
      if (notices.length > 0) recorded = await insertOutboxDeliveries(tx, notices);
      return {
        deliveries: recorded,
        commit() {
          if (copy === base) for (const [k, ctx] of changed) base.set(k, ctx);
          if (recorded > 0) opts.onRecorded?.(recorded);
        },
      };
    },
  };
}
