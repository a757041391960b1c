import { join, resolve } from 'node:path';
import { ConfigError, loadConfig, type Config } from './config.js';
import { loadDemoData } from './demo/load-demo.js';
import { createEngine } from './engine/engine.js';
import { buildApp } from './http/app.js';
import { createLogger, type Logger } from './logger.js';
import type { Persistence } from './persistence/types.js';
import { loadOrCreateSecret } from './secret-file.js';

/**
 * The one module that knows every layer. It builds them in order — config, logger, persistence,
 * actors (engine), HTTP, listen — and shuts them down in reverse.
 */

/**
 * Each mode's store is imported only when that mode is chosen: full mode never touches PGlite,
 * whose JavaScript alone (loaded, not even started) keeps about 0.8 MB of heap live for the life
 * of the process, and embedded mode never needs pg or amqplib.
 */
async function createPersistence(config: Config, logger: Logger): Promise<Persistence> {
  if (config.mode === 'embedded') {
    const { createEmbeddedStore } = await import('./persistence/embedded-store.js');
    return createEmbeddedStore({ dataDir: join(config.dataDir, 'pglite'), logger, batchMaxEvents: config.batchMaxEvents });
  }
  const { createFullStore } = await import('./persistence/full-store.js');
  return createFullStore({
    databaseUrl: config.databaseUrl as string,
    rabbitmqUrl: config.rabbitmqUrl as string,
    prefix: config.amqpPrefix,
    logger,
    batchMaxEvents: config.batchMaxEvents,
    runBatcher: config.inProcessBatcher,
  });
}

async function main(): Promise<void> {
  const t0 = performance.now();
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const log = logger.child({ module: 'main' });
  log.info({ mode: config.mode }, 'starting');

  const persistence = await createPersistence(config, logger);
  const engine = createEngine({
    persistence,
    logger,
    enrollmentWindowMs: config.enrollmentWindowMinutes * 60_000,
    studentMailboxLimit: config.studentMailboxLimit,
  });
  // Storage may still be starting (compose, a broker restart): keep trying instead of exiting.
  for (let attempt = 1; ; attempt++) {
    try {
      await persistence.migrate();
      await engine.start();
      break;
    } catch (err) {
      const waitMs = Math.min(250 * 2 ** attempt, 5000);
      log.warn({ err, attempt, waitMs }, 'storage unavailable at start; retrying');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
  let demo: Awaited<ReturnType<typeof loadDemoData>> | null = null;
  if (config.demoData && engine.isEmpty()) demo = await loadDemoData(engine, logger);

  const jwtSecret = config.jwtSecret ?? loadOrCreateSecret(resolve(config.dataDir));
  const app = await buildApp({
    engine,
    logger,
    jwtSecret,
    tokenTtlSeconds: config.tokenTtlSeconds,
    logRequests: config.logRequests,
    readiness: () => persistence.readiness(),
  });
  await app.listen({ host: config.host, port: config.port });

  const shown = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const base = `http://${shown}:${config.port}`;
  log.info(
    {
      api: base,
      docs: `${base}/docs`,
      admin: `${base}/admin`,
      startupMs: Math.round(performance.now() - t0),
      rssMb: Math.round(process.memoryUsage().rss / 1e6),
      ...(demo ? { demoStudent: demo.student, demoStaff: demo.staff } : {}),
    },
    `enrollment engine ready: API ${base}  docs ${base}/docs  admin ${base}/admin`,
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    try {
      await app.close();
      engine.stop();
      await persistence.close();
      log.info('stopped');
      process.exit(0);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  createLogger('error').fatal({ err }, 'failed to start');
  process.exit(1);
});
