/**
 * Runs tasks one at a time per key (a student's mailbox), in arrival order, while tasks of
 * different keys run freely. A key with nothing queued starts its task at once, so the common
 * case costs no extra tick. Keys are forgotten when their queue empties: memory stays bounded
 * by the number of students with requests in flight, not by the number of students.
 */
export interface KeyedMailbox<K> {
  run<T>(key: K, task: () => Promise<T>): Promise<T>;
}

export function createKeyedMailbox<K>(): KeyedMailbox<K> {
  const tails = new Map<K, Promise<unknown>>();
  return {
    run<T>(key: K, task: () => Promise<T>): Promise<T> {
      const prev = tails.get(key);
      const result = prev === undefined ? task() : prev.then(task, task);
      const tail = result.then(
        () => undefined,
        () => undefined,
      );
      tails.set(key, tail);
      void tail.then(() => {
        if (tails.get(key) === tail) tails.delete(key);
      });
      return result;
    },
  };
}
