import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

/**
 * Embedded mode keeps password hashes, the whole database and the JWT secret under the data
 * directory, so only the user running the engine may read it: directories 0700, files 0600.
 * PGlite writes its files 0666 whatever the umask, so the tree is checked and fixed at start and
 * again after the store has opened (and at shutdown). The top directory being 0700 already keeps
 * other users out of any file PGlite creates in between.
 *
 * Only the engine's own entries are touched. A DATA_DIR that already holds other things (a typo
 * such as `/srv` or `.`) is refused when it holds nothing of the engine's, rather than having every
 * file in it made private (a probe saw a script lose its execute bit and a public page go private);
 * other entries beside the engine's own are left as they are.
 */

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

/** What the engine keeps in the data directory (and the temporary files it renames into place). */
export const ENGINE_ENTRIES: ReadonlySet<string> = new Set(['pglite', 'jwt-secret', 'revocations.jsonl', 'revocations.jsonl.tmp', '.engine.lock', '.engine.sock']);
/** The store's own tree: PGlite creates its files readable by others each time, so narrowing them is routine. */
const STORE_ENTRY = 'pglite';

/** What {@link secureDataDir} found: entries looked at, and those whose mode it had to narrow. */
export interface DataDirCheck {
  checked: number;
  fixed: number;
  /** Entries narrowed outside the store's tree (the directory itself, the secret, the journal). */
  fixedOutsideStore: number;
}

/** A data directory that is plainly not one: it holds other things and nothing of the engine's. */
export class ForeignDataDirError extends Error {}

/**
 * Throws {@link ForeignDataDirError} when `dir` exists, is not empty and holds none of the
 * engine's entries: the engine would otherwise create its files among someone else's.
 */
export function assertDataDirIsOurs(dir: string): void {
  if (!existsSync(dir)) return;
  const names = readdirSync(dir);
  if (names.length === 0 || names.some((n) => ENGINE_ENTRIES.has(n))) return;
  const shown = names.slice(0, 5).join(', ') + (names.length > 5 ? ', ...' : '');
  throw new ForeignDataDirError(
    `DATA_DIR ${dir} already holds other files (${shown}) and no engine data; point DATA_DIR at a new directory or at an engine's data directory`,
  );
}

/**
 * Creates `dir` (0700) if missing, then narrows it and the engine's entries in it (recursively) to
 * 0700 for directories and 0600 for files; anything else in it is left alone. Logs a warning naming
 * how many entries were too open (info when only the store's new files were: PGlite makes them so).
 * Throws (so the engine refuses to start) when a mode cannot be fixed, e.g. a file owned by another
 * user.
 */
export function secureDataDir(dir: string, logger: Logger, when: string): DataDirCheck {
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  const result: DataDirCheck = { checked: 0, fixed: 0, fixedOutsideStore: 0 };
  const visit = (path: string, inStore: boolean): void => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return;
    const want = st.isDirectory() ? DIR_MODE : FILE_MODE;
    result.checked += 1;
    if ((st.mode & 0o777) !== want) {
      try {
        chmodSync(path, want);
      } catch (err) {
        throw new Error(`cannot make ${path} private (mode ${want.toString(8)}): ${(err as Error).message}; fix its owner or mode and start again`);
      }
      result.fixed += 1;
      if (!inStore) result.fixedOutsideStore += 1;
    }
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name), inStore);
  };
  // The directory itself, then only the engine's own entries in it.
  const top = lstatSync(dir);
  if (!top.isSymbolicLink()) {
    result.checked += 1;
    if ((top.mode & 0o777) !== DIR_MODE) {
      try {
        chmodSync(dir, DIR_MODE);
      } catch (err) {
        throw new Error(`cannot make ${dir} private (mode 700): ${(err as Error).message}; fix its owner or mode and start again`);
      }
      result.fixed += 1;
      result.fixedOutsideStore += 1;
    }
  }
  for (const name of readdirSync(dir)) if (ENGINE_ENTRIES.has(name)) visit(join(dir, name), name === STORE_ENTRY);
  const log = logger.child({ module: 'data-dir' });
  if (result.fixedOutsideStore > 0) log.warn({ dir, when, ...result }, 'data directory entries were readable by others; narrowed to 0700/0600');
  else if (result.fixed > 0) log.info({ dir, when, ...result }, "the store's new files were narrowed to 0700/0600 (PGlite creates them readable by others)");
  else log.debug({ dir, when, ...result }, 'data directory permissions are private');
  return result;
}
