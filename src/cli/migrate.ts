/**
 * `npm run migrate`: creates or upgrades the schema of the configured store (DATABASE_URL in full
 * mode, the PGlite files under DATA_DIR otherwise) and exits. The server also migrates on start.
 */
import { join } from 'node:path';
import { lockEmbeddedStore } from './embedded-lock.js';
import { ConfigError, loadMigrateConfig, type MigrateConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { migrate } from '../persistence/migrations.js';
import { createPgClient } from '../persistence/pg-client.js';
import { createPgliteClient } from '../persistence/pglite-client.js';
import { storageSettingHint } from '../persistence/setting-hints.js';

let config: MigrateConfig;
try {
  config = loadMigrateConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}
const logger = createLogger(config.logLevel).child({ module: 'migrate' });
const dataDirLock = await lockEmbeddedStore(config.databaseUrl, config.dataDir, 'npm run migrate');
const db = config.databaseUrl ? createPgClient(config.databaseUrl) : await createPgliteClient(join(config.dataDir, 'pglite'));
try {
  const applied = await migrate(db, { log: logger });
  logger.info({ applied, target: config.databaseUrl ? 'postgres' : 'embedded' }, applied.length ? 'migrations applied' : 'schema up to date');
} catch (err) {
  // An operator's command: one line saying why (a refused user, a missing database, a host that is
  // down), not the driver's stack; a non-zero exit. Never the URL (it may hold a password).
  const hint = storageSettingHint(err);
  const reason = err instanceof Error ? err.message : String(err);
  process.exitCode = 1;
  process.stderr.write(`npm run migrate: ${hint ? `${hint} (${reason})` : `the migration failed: ${reason}`}\n`);
} finally {
  await db.close().catch(() => undefined);
  await dataDirLock?.release();
}
