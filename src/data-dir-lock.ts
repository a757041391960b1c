import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { assertDataDirIsOurs, ForeignDataDirError } from './data-dir.js';

/**
 * One process at a time on an embedded data directory. PGlite has no lock of its own: two engines
 * started on one DATA_DIR (a second `npm start`, a second terminal) both opened it, both answered
 * writes from their own memory (so a section could be overbooked), and after a restart one of them
 * had lost writes it had acknowledged (a black-box probe). The migrate and create-staff commands
 * open the same store, so they take the lock too.
 *
 * The lock is a listening socket, which the kernel releases when the process ends however it ends
 * (kill -9 included), so there is never a stale lock to clear: on Linux an abstract socket named by
 * a hash of the directory's real path (no file at all); elsewhere a socket file in the directory,
 * reachable only while its owner lives. `.engine.lock` beside it says which process holds it, for
 * the refusal's message only. Two hosts (or two containers without a shared network namespace)
 * sharing one directory are not detected: embedded mode is one process on one machine.
 */
export interface DataDirLock {
  release(): Promise<void>;
}

/** DATA_DIR is held by another live process. */
export class DataDirBusyError extends Error {}

const INFO_FILE = '.engine.lock';

function lockAddress(dir: string): { path: string; probe: boolean } {
  const key = createHash('sha256').update(realpathSync(dir)).digest('hex').slice(0, 32);
  if (process.platform === 'linux') return { path: `\0course-enrollment-engine/${key}`, probe: false };
  if (process.platform === 'win32') return { path: `\\\\.\\pipe\\course-enrollment-engine-${key}`, probe: false };
  return { path: join(dir, '.engine.sock'), probe: true };
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path, exclusive: true }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

/** Whether something answers on a socket file (a live owner), so a left-over file can be replaced. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection({ path });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function holder(dir: string): string {
  try {
    const info = JSON.parse(readFileSync(join(dir, INFO_FILE), 'utf8')) as { pid?: number; what?: string; since?: string };
    return ` by ${info.what ?? 'a process'} (pid ${info.pid ?? '?'}, since ${info.since ?? '?'})`;
  } catch {
    return ' by another process';
  }
}

/**
 * Takes the data directory (which must exist) for this process, or throws {@link DataDirBusyError}
 * naming who holds it. `what` says what this process is, for that message in others.
 */
export async function lockDataDir(dir: string, what: string): Promise<DataDirLock> {
  const { path, probe } = lockAddress(dir);
  const server = createServer((socket) => socket.destroy());
  try {
    if (probe && (await answers(path))) throw Object.assign(new Error('in use'), { code: 'EADDRINUSE' });
    if (probe) rmSync(path, { force: true });
    await listen(server, path);
  } catch (err) {
    server.close();
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new DataDirBusyError(`DATA_DIR ${dir} is in use${holder(dir)}: only one engine (or migrate, create-staff) may open it at a time; stop it first (npm stop)`);
    }
    throw err;
  }
  server.unref();
  writeFileSync(join(dir, INFO_FILE), `${JSON.stringify({ pid: process.pid, what, since: new Date().toISOString() })}\n`, { mode: 0o600 });
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      rmSync(join(dir, INFO_FILE), { force: true });
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (probe) rmSync(path, { force: true });
    },
  };
}

/**
 * What every process that opens the embedded store does first: refuses a directory that is plainly
 * someone else's ({@link ForeignDataDirError}), creates it (0700) if missing, and takes its lock
 * ({@link DataDirBusyError} when another process holds it). Both errors carry the message to show.
 */
export async function takeDataDir(dir: string, what: string): Promise<DataDirLock> {
  assertDataDirIsOurs(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return lockDataDir(dir, what);
}

/** Whether `err` is one of {@link takeDataDir}'s refusals (shown to the person, not a crash). */
export function isDataDirRefusal(err: unknown): err is Error {
  return err instanceof ForeignDataDirError || err instanceof DataDirBusyError;
}
