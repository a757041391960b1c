import { chmodSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

/**
 * Embedded mode keeps password hashes, the whole database and the JWT secret under the data
 * directory, so only the user running the engine may read it: directories 0700, files 0600.
 * PGlite writes its files 0666 whatever the umask, so the tree is checked and fixed at start and
 * again after the store has opened (and at shutdown). The top directory being 0700 already keeps
 * other users out of any file PGlite creates in between.
 */

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

/** What {@link secureDataDir} found: entries looked at, and those whose mode it had to narrow. */
export interface DataDirCheck {
  checked: number;
  fixed: number;
}

/**
 * Creates `dir` (0700) if missing, then narrows every directory to 0700 and every file to 0600.
 * Logs a warning naming how many entries were too open. Throws (so the engine refuses to start)
 * when a mode cannot be fixed, e.g. a file owned by another user.
 */
export function secureDataDir(dir: string, logger: Logger, when: string): DataDirCheck {
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  const result: DataDirCheck = { checked: 0, fixed: 0 };
  const visit = (path: string): void => {
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
    }
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(dir);
  const log = logger.child({ module: 'data-dir' });
  if (result.fixed > 0) log.warn({ dir, when, ...result }, 'data directory entries were readable by others; narrowed to 0700/0600');
  else log.debug({ dir, when, ...result }, 'data directory permissions are private');
  return result;
}
