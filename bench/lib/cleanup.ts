/**
 * Everything a benchmark run creates (child processes, databases, queues, temporary directories)
 * registers its undo here. Each scope releases its own resources in `finally`; whatever is still
 * registered when the process is interrupted (Ctrl-C, SIGTERM) or crashes is released by
 * `runAllCleanups`, newest first.
 */

interface Entry {
  name: string;
  fn: () => Promise<void>;
  done: boolean;
}

const entries: Entry[] = [];

export interface Resource {
  /** Runs the undo once (later calls are no-ops) and forgets it. */
  release(): Promise<void>;
}

export function track(name: string, fn: () => Promise<void>): Resource {
  const entry: Entry = { name, fn, done: false };
  entries.push(entry);
  return {
    async release() {
      if (entry.done) return;
      entry.done = true;
      const i = entries.indexOf(entry);
      if (i >= 0) entries.splice(i, 1);
      await fn();
    },
  };
}

export async function runAllCleanups(log: (msg: string) => void): Promise<void> {
  while (entries.length > 0) {
    const e = entries.pop() as Entry;
    if (e.done) continue;
    e.done = true;
    try {
      await e.fn();
      log(`cleaned up: ${e.name}`);
    } catch (err) {
      log(`cleanup of ${e.name} failed: ${(err as Error).message}`);
    }
  }
}

let interrupted = false;
let interruptedAt = 0;

/** True once SIGINT/SIGTERM arrived: loops stop early, cleanup runs, the process exits 130. */
export function isInterrupted(): boolean {
  return interrupted;
}

export function installSignalHandlers(onSignal: () => void): void {
  const handler = (signal: NodeJS.Signals) => {
    if (interrupted) {
      // One Ctrl-C can arrive twice: from the terminal to the process group, and relayed by the
      // tsx (or npm) wrapper. Only a second press, later, abandons the cleanup.
      if (performance.now() - interruptedAt < 2000) return;
      process.stderr.write(`\n${signal} again: exiting without finishing the cleanup\n`);
      process.exit(130);
    }
    interrupted = true;
    interruptedAt = performance.now();
    onSignal();
    process.stderr.write(`\n${signal}: stopping and cleaning up (Ctrl-C again, 2 s later, abandons the cleanup)\n`);
    void runAllCleanups((m) => process.stderr.write(`${m}\n`)).finally(() => process.exit(130));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
