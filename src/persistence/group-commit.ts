import { EngineError } from '../errors.js';
import type { DomainEvent } from './types.js';

interface Pending {
  events: DomainEvent[];
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Group commit: appends made while one batch is being written wait and go out together in the
 * next, so durability costs one write per batch, not per request, and callers never wait on each
 * other's round trips. Order is kept: batches are written one after another, in call order.
 *
 * After a failed write, every pending and later append fails until `reset()` — decisions made on
 * top of an undurable change must never become durable themselves. The owner resets once it has
 * reloaded its state from storage.
 */
export interface GroupCommitter {
  append(events: DomainEvent[]): Promise<void>;
  reset(): void;
  /** Resolves when everything appended so far has been written (or failed). */
  drain(): Promise<void>;
  readonly failed: boolean;
}

export function createGroupCommitter(write: (events: DomainEvent[]) => Promise<void>, maxEvents: number): GroupCommitter {
  let queue: Pending[] = [];
  let running: Promise<void> | null = null;
  let failure: Error | null = null;

  const unavailable = (cause: Error) =>
    new EngineError('UNAVAILABLE', 'the change could not be made durable; nothing was changed', { cause: cause.message });

  async function run(): Promise<void> {
    // Let every append of the current tick join the first batch.
    await new Promise<void>((r) => setImmediate(r));
    while (queue.length > 0) {
      const batch: Pending[] = [];
      let n = 0;
      while (queue.length > 0 && (batch.length === 0 || n + (queue[0] as Pending).events.length <= maxEvents)) {
        const p = queue.shift() as Pending;
        batch.push(p);
        n += p.events.length;
      }
      try {
        await write(batch.flatMap((p) => p.events));
        for (const p of batch) p.resolve();
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
        const all = batch.concat(queue);
        queue = [];
        const e = failure instanceof EngineError ? failure : unavailable(failure);
        for (const p of all) p.reject(e);
      }
    }
    running = null;
  }

  return {
    append(events) {
      if (failure) return Promise.reject(unavailable(failure));
      return new Promise<void>((resolve, reject) => {
        queue.push({ events, resolve, reject });
        if (!running) running = run();
      });
    },
    reset() {
      failure = null;
    },
    async drain() {
      while (running) await running;
    },
    get failed() {
      return failure !== null;
    },
  };
}
