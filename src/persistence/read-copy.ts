import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { UnreadableMessageError, type AmqpLog, type FenceFilter } from './amqp-log.js';
import type { DomainEvent } from './types.js';

/**
 * The read copy (docs/scale-out.md, section 5): a consumer of the ordered log that hands every
 * admitted events message (fence rule applied) to the engine, which applies what it does not have
 * yet by sequence number. `sync()` is read-your-writes: it publishes a marker and resolves when
 * the copy has consumed it, so everything confirmed before the call has been applied; one marker
 * serves every caller waiting at that moment.
 */
export interface ReadCopy {
  start(offset: number, fences: FenceFilter): void;
  /**
   * Starts following from the log's end: only what is published after the returned promise
   * resolves (the consumer is registered with the broker) is delivered; rejects if it cannot
   * register (the copy keeps trying then, from the end as well). For an instance whose memory
   * already holds everything published so far (it owned every shard and publishes nothing more).
   */
  startAtEnd(fences: FenceFilter): Promise<void>;
  stop(): Promise<void>;
  readonly running: boolean;
  /**
   * The offset the copy goes on from: every message before it was handed over (or filtered out by
   * the fence rule); null while a copy started at the log's end has seen nothing yet. After
   * {@link stop} it stays where the copy stopped.
   */
  readonly position: number | null;
  sync(timeoutMs: number): Promise<boolean>;
}

export function createReadCopy(opts: {
  amqpLog: AmqpLog;
  logger: Logger;
  deliver: (events: DomainEvent[]) => void;
  /** The copy stopped at an unreadable message at `offset` (it delivers nothing past it until started again). */
  onStall?: (offset: number) => void;
}): ReadCopy {
  const log = opts.logger.child({ module: 'read-copy' });
  let generation = 0;
  let running = false;
  /** Where the copy goes on: the offset after the last message it saw, or the log's end before it saw one. */
  let next: number | 'next' = 0;
  /** Told when the consumer of a generation is registered (startAtEnd waits for it). */
  let onAttached: ((gen: number) => void) | null = null;
  let fences: FenceFilter | null = null;
  let cancel: (() => Promise<void>) | null = null;
  let retry: NodeJS.Timeout | null = null;
  const waiting = new Map<string, () => void>();
  /** Callers that want a marker published after they asked (coalesced into the next one). */
  let queued: { resolve: (ok: boolean) => void }[] = [];
  let publishing = false;

  async function run(gen: number): Promise<void> {
    while (running && gen === generation) {
      try {
        const c = await opts.amqpLog.consume(next, (m, at) => {
          if (gen !== generation) return;
          if (m instanceof UnreadableMessageError) {
            log.error({ offset: at }, 'the read copy stopped at an unreadable message (the batcher reports it too)');
            opts.onStall?.(at);
            return;
          }
          next = at + 1;
          if ('marker' in m) {
            waiting.get(m.marker)?.();
            return;
          }
          if ('fence' in m) {
            fences?.fence(m.fence);
            return;
          }
          if (fences && !fences.admits(m)) return;
          opts.deliver(m.events);
        });
        cancel = c.cancel;
        onAttached?.(gen);
        await c.closed;
      } catch (err) {
        log.warn({ err }, 'the read copy cannot follow the log; retrying');
      }
      cancel = null;
      if (!running || gen !== generation) return;
      await new Promise<void>((r) => {
        retry = setTimeout(r, 500);
        retry.unref();
      });
    }
  }

  async function publishMarker(): Promise<void> {
    if (publishing || queued.length === 0) return;
    publishing = true;
    const batch = queued;
    queued = [];
    const id = randomUUID();
    let seen = false;
    let giveUp: NodeJS.Timeout | null = null;
    const done = new Promise<void>((r) => {
      waiting.set(id, () => {
        seen = true;
        r();
      });
      giveUp = setTimeout(r, 5000);
      giveUp.unref();
    });
    try {
      await opts.amqpLog.publish({ marker: id });
      await done;
      if (giveUp) clearTimeout(giveUp);
      for (const b of batch) b.resolve(seen);
    } catch {
      for (const b of batch) b.resolve(false);
    } finally {
      waiting.delete(id);
      publishing = false;
      void publishMarker();
    }
  }

  return {
    get running() {
      return running;
    },
    get position() {
      return typeof next === 'number' ? next : null;
    },
    start(offset, filter) {
      generation += 1;
      void cancel?.();
      next = offset;
      fences = filter;
      running = true;
      void run(generation);
    },
    startAtEnd(filter) {
      generation += 1;
      const gen = generation;
      void cancel?.();
      next = 'next';
      fences = filter;
      running = true;
      const attached = new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('the read copy could not attach to the log in time')), 5000);
        t.unref();
        onAttached = (g) => {
          if (g !== gen) return;
          clearTimeout(t);
          onAttached = null;
          resolve();
        };
      });
      void run(gen);
      return attached;
    },
    async stop() {
      running = false;
      generation += 1;
      if (retry) clearTimeout(retry);
      await cancel?.();
      for (const w of waiting.values()) w();
    },
    sync(timeoutMs) {
      if (!running) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        let settled = false;
        const t = setTimeout(() => finish(false), timeoutMs);
        const finish = (ok: boolean) => {
          if (settled) return;
          settled = true;
          clearTimeout(t);
          resolve(ok);
        };
        queued.push({ resolve: finish });
        void publishMarker();
      });
    },
  };
}
