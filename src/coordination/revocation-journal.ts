import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RevocationBackup, RevocationEntry } from './types.js';

/**
 * The revocation list of a single instance without Redis (embedded mode), kept in a file of its
 * data directory so a logout or a staff revocation outlives a restart: a revoked token must not
 * work again because the process was restarted (or killed) before the token expired.
 *
 * One JSON entry per line, appended and flushed to disk (`datasync`) before `append` resolves, so a
 * 204 means the revocation is on disk. Appends that arrive while a flush runs share the next one.
 * On open the file is read (a torn last line, left by a crash mid-write, was never acknowledged
 * and is skipped), entries already past `until` are dropped and the rest rewritten to a fresh file
 * that replaces the old one atomically, so the file holds at most one session length of entries.
 */
export interface RevocationJournal {
  /** The live entries found on open, oldest first. */
  readonly loaded: readonly RevocationEntry[];
  /** Resolves once the entries are on disk; rejects if the write or flush failed. */
  append(entries: readonly RevocationEntry[]): Promise<void>;
  close(): Promise<void>;
}

/** The journal's file name inside the data directory. */
export const REVOCATION_FILE = 'revocations.jsonl';

function parseLine(line: string): RevocationEntry | null {
  try {
    const v = JSON.parse(line) as Partial<RevocationEntry> | null;
    if (v === null || typeof v !== 'object' || typeof v.key !== 'string' || typeof v.until !== 'number') return null;
    if (v.at !== undefined && typeof v.at !== 'number') return null;
    return v.at === undefined ? { key: v.key, until: v.until } : { key: v.key, until: v.until, at: v.at };
  } catch {
    return null;
  }
}

/** Writes `text` to `file` so that the file either keeps its old content or holds all of `text`. */
function replaceDurably(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Opens (creating if needed) the journal in `dataDir`, compacting away expired entries. */
export async function openRevocationJournal(dataDir: string, nowMs: number = Date.now()): Promise<RevocationJournal> {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, REVOCATION_FILE);
  const nowSeconds = Math.floor(nowMs / 1000);
  const loaded: RevocationEntry[] = [];
  if (existsSync(file)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const e = line.length > 0 ? parseLine(line) : null;
      if (e !== null && e.until > nowSeconds) loaded.push(e);
    }
  }
  replaceDurably(file, loaded.map((e) => JSON.stringify(e) + '\n').join(''));
  const handle: FileHandle = await open(file, 'a', 0o600);

  let waiting: { lines: string; done: Array<(err: unknown) => void> } | null = null;
  let flushing: Promise<void> | null = null;
  let closed = false;

  const flush = async (): Promise<void> => {
    while (waiting !== null) {
      const batch = waiting;
      waiting = null;
      let failure: unknown = null;
      try {
        await handle.appendFile(batch.lines);
        await handle.datasync();
      } catch (err) {
        failure = err;
      }
      for (const done of batch.done) done(failure);
    }
    flushing = null;
  };

  return {
    loaded,
    append(entries) {
      if (closed) return Promise.reject(new Error('the revocation journal is closed'));
      if (entries.length === 0) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        waiting ??= { lines: '', done: [] };
        waiting.lines += entries.map((e) => JSON.stringify(e) + '\n').join('');
        waiting.done.push((err) => (err === null ? resolve() : reject(err)));
        flushing ??= flush();
      });
    },
    async close() {
      closed = true;
      if (flushing !== null) await flushing;
      await handle.close();
    },
  };
}

/**
 * The journal as the Redis store's {@link RevocationBackup} (embedded mode with `REDIS_URL`): a
 * revocation Redis could not take is flushed to the data directory before it is answered. Opened
 * by the first `load` (the store's start); later loads return what that one found.
 */
export function createJournalBackup(dataDir: string): RevocationBackup & { close(): Promise<void> } {
  let journal: RevocationJournal | null = null;
  return {
    name: 'the data directory',
    async load(nowMs) {
      journal ??= await openRevocationJournal(dataDir, nowMs);
      return [...journal.loaded];
    },
    async save(entries) {
      if (journal === null) throw new Error('the revocation journal is not open');
      await journal.append(entries);
    },
    async close() {
      const j = journal;
      journal = null;
      await j?.close();
    },
  };
}
