import { resolve } from 'node:path';
import { isDataDirRefusal, takeDataDir, type DataDirLock } from '../data-dir-lock.js';

/**
 * The commands that open the store (migrate, create-staff): in embedded mode (no database URL) they
 * take the data directory's lock first, as the engine does (src/data-dir-lock.ts), and a refusal
 * (another process holds it, or it is not the engine's directory) ends the command with exit code 3
 * and the reason on stderr. Full mode needs no lock: PostgreSQL serves many clients.
 */
export async function lockEmbeddedStore(databaseUrl: string | null | undefined, dataDir: string, what: string): Promise<DataDirLock | null> {
  if (databaseUrl) return null;
  try {
    return await takeDataDir(resolve(dataDir), what);
  } catch (err) {
    if (!isDataDirRefusal(err)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(3);
  }
}
