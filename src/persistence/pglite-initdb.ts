/**
 * Child-process entry: creates a new PGlite data directory (initdb) and exits, so that the
 * memory initdb needs is returned to the system with the process (see pglite-client.ts).
 * Argument: the data directory. Exit code 0 when the directory is ready.
 */
import { initDataDir } from './pglite-client.js';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: pglite-initdb <data directory>\n');
  process.exit(2);
}
await initDataDir(dir);
