import PQueue from 'p-queue';
import { EngineError } from '../errors.js';

/**
 * Each active student's requests go through their own mailbox, a p-queue with concurrency 1: one
 * request at a time, in arrival order, while different students' requests run side by side. A
 * mailbox is created on a student's first request and released as soon as it is idle, so memory
 * follows the students with requests in flight, not the number of students. A mailbox holds at most
 * `limit` requests (the running one included): one more is refused at once with 503 OVERLOADED and
 * a Retry-After, before it changes anything, so one client cannot queue unbounded work.
 */
export interface StudentMailboxes {
  run<T>(studentId: number, task: () => Promise<T>): Promise<T>;
  /** Students with a mailbox right now (requests queued or running). */
  readonly active: number;
}

/** Seconds a refused client is told to wait: the queue ahead of it drains in milliseconds. */
export const OVERLOADED_RETRY_AFTER_S = 1;

export function createStudentMailboxes(limit: number): StudentMailboxes {
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`mailbox limit must be a whole number >= 1 (got ${limit})`);
  const mailboxes = new Map<number, PQueue>();
  return {
    run<T>(studentId: number, task: () => Promise<T>): Promise<T> {
      let queue = mailboxes.get(studentId);
      if (queue === undefined) {
        queue = new PQueue({ concurrency: 1 });
        mailboxes.set(studentId, queue);
      } else if (queue.size + queue.pending >= limit) {
        const err = new EngineError('OVERLOADED', `too many requests of yours are waiting (at most ${limit}); try again shortly`);
        err.retryAfterSeconds = OVERLOADED_RETRY_AFTER_S;
        return Promise.reject(err);
      }
      const q = queue;
      const done = q.add(task, { throwOnTimeout: true }) as Promise<T>;
      const release = (): void => {
        if (q.size === 0 && q.pending === 0 && mailboxes.get(studentId) === q) mailboxes.delete(studentId);
      };
      done.then(release, release);
      return done;
    },
    get active() {
      return mailboxes.size;
    },
  };
}
