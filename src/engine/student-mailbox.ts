import PQueue from 'p-queue';
import { EngineError } from '../errors.js';

/**
 * Each active student's requests go through their own mailbox: one request at a time, in arrival
 * order, while different students' requests run side by side. A mailbox is created on a student's
 * first request and released as soon as it is empty, so memory follows the students with requests
 * in flight, not the number of students. A mailbox holds at most `limit` requests (the running one
 * included): one more is refused at once with 503 OVERLOADED and a Retry-After, before it changes
 * anything, so one client cannot queue unbounded work.
 *
 * The waiting line is a p-queue (concurrency 1), created when a request first has to wait behind
 * another; a request that finds the mailbox empty runs at once. Most students have one request in
 * flight at a time, and a p-queue per request cost about 8 µs of CPU more than running it directly
 * (see README.md), a fifth of an enroll's whole cost in the engine.
 */
export interface StudentMailboxes {
  run<T>(studentId: number, task: () => Promise<T>): Promise<T>;
  /** Students with a mailbox right now (requests queued or running). */
  readonly active: number;
  /** Requests in every mailbox together, waiting or running (summed when read: for metrics). */
  readonly queued: number;
}

/** Seconds a refused client is told to wait: the queue ahead of it drains in milliseconds. */
export const OVERLOADED_RETRY_AFTER_S = 1;

/** A student's mailbox: how many requests are in it, and the p-queue once one had to wait. */
interface Mailbox {
  count: number;
  /** The request that ran at once because the mailbox was empty, while it runs. */
  direct: Promise<unknown> | null;
  queue: PQueue | null;
}

export function createStudentMailboxes(limit: number): StudentMailboxes {
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`mailbox limit must be a whole number >= 1 (got ${limit})`);
  const mailboxes = new Map<number, Mailbox>();
  return {
    run<T>(studentId: number, task: () => Promise<T>): Promise<T> {
      let box = mailboxes.get(studentId);
      if (box === undefined) {
        box = { count: 0, direct: null, queue: null };
        mailboxes.set(studentId, box);
      } else if (box.count >= limit) {
        return Promise.reject(
          new EngineError('OVERLOADED', `too many requests of yours are waiting (at most ${limit}); try again shortly`, undefined, {
            retryAfterSeconds: OVERLOADED_RETRY_AFTER_S,
          }),
        );
      }
      const b = box;
      b.count += 1;
      let done: Promise<T>;
      if (b.count === 1) {
        // Nothing in the mailbox: the request runs at once, without a queue (the common case).
        done = task();
        b.direct = done;
      } else {
        if (b.queue === null) {
          // The first request that has to wait: the p-queue starts behind the one running.
          b.queue = new PQueue({ concurrency: 1 });
          const running = b.direct;
          if (running) void b.queue.add(() => running.then(noop, noop));
        }
        done = b.queue.add(task, { throwOnTimeout: true }) as Promise<T>;
      }
      const release = (): void => {
        b.count -= 1;
        if (b.direct === done) b.direct = null;
        if (b.count === 0 && mailboxes.get(studentId) === b) mailboxes.delete(studentId);
      };
      done.then(release, release);
      return done;
    },
    get active() {
      return mailboxes.size;
    },
    get queued() {
      let n = 0;
      for (const b of mailboxes.values()) n += b.count;
      return n;
    },
  };
}

const noop = (): void => undefined;
