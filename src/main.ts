import { join, resolve } from 'node:path';
import { ConfigError, isLoopbackHost, loadConfig, type Config } from './config.js';
import { DEMO_STAFF_ID } from './demo/demo-data.js';
import { DEMO_PASSWORDS, demoCredentialsLive, demoExposure } from './demo/demo-exposure.js';
import { loadDemoData } from './demo/load-demo.js';
import { secureDataDir } from './data-dir.js';
import { createEngine } from './engine/engine.js';
import { buildApp } from './http/app.js';
import { listenOptions } from './http/server-options.js';
import { createNoticeHub } from './notices/notice-hub.js';
import { createWebhookService, type WebhookService } from './notices/webhooks.js';
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
    return createEmbeddedStore({
      dataDir: join(config.dataDir, 'pglite'),
      logger,
      batchMaxEvents: config.batchMaxEvents,
      groupCommitLingerMs: config.groupCommitLingerMs,
    });
  }
  const { createFullStore } = await import('./persistence/full-store.js');
  return createFullStore({
    databaseUrl: config.databaseUrl as string,
    rabbitmqUrl: config.rabbitmqUrl as string,
    prefix: config.amqpPrefix,
    logger,
    batchMaxEvents: config.batchMaxEvents,
    groupCommitLingerMs: config.groupCommitLingerMs,
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

  const dataDir = resolve(config.dataDir);
  if (config.mode === 'embedded') {
    // New directories (and files of anything honouring the umask) private from the start.
    process.umask(0o077);
    secureDataDir(dataDir, logger, 'start');
  }
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
  // PGlite creates its files 0666 whatever the umask: narrow what it made while opening (and loading).
  if (config.mode === 'embedded') secureDataDir(dataDir, logger, 'store opened');

  // Published passwords must never open accounts to the network unless asked for by name.
  const demoLive = await demoCredentialsLive(engine);
  const exposure = demoExposure({ live: demoLive, loopback: isLoopbackHost(config.host), explicit: config.demoDataExplicit });
  if (exposure === 'refuse') {
    log.fatal(
      { host: config.host, demoStaff: DEMO_STAFF_ID },
      `refusing to start: the store holds the published demo credentials and HOST=${config.host} is reachable from the network. ` +
        'Listen on 127.0.0.1, use a data set without the demo accounts, or set DEMO_DATA=true to serve the demo on purpose.',
    );
    engine.stop();
    await persistence.close();
    process.exit(3);
  }

  // Student notices and webhooks (issue 16): after the demo load, so its batches are not announced.
  // Full mode's batcher writes transitions after they are durable: a resume may wait for it; embedded mode's are written first.
  const hub = createNoticeHub({ engine, store: persistence.notices ?? null, logger, resumeWaitMs: config.mode === 'full' ? 5000 : 0 });
  await hub.start();
  let webhooks: WebhookService | null = null;
  if (persistence.notices) {
    const store = persistence.notices;
    const queue =
      config.mode === 'full'
        ? await (await import('./persistence/delivery-queue.js')).createAmqpDeliveryQueue({
            url: config.rabbitmqUrl as string,
            prefix: config.amqpPrefix,
            logger,
          })
        : (await import('./persistence/delivery-queue.js')).createDatabaseDeliveryQueue({ store, logger });
    webhooks = createWebhookService({ store, queue, logger });
    await webhooks.start();
    const w = webhooks;
    hub.onNotices((notices) => w.dispatch(notices));
  }

  const jwtSecret = config.jwtSecret ?? loadOrCreateSecret(dataDir, logger);
  const app = await buildApp({
    engine,
    logger,
    jwtSecret,
    tokenTtlSeconds: config.tokenTtlSeconds,
    sessionMaxSeconds: config.sessionMaxSeconds,
    maxConcurrentPasswordChecks: config.maxConcurrentPasswordChecks,
    // In demo mode the demo staff member is the admin, so the demo can show staff creation.
    adminStaffIds: demoLive ? [...config.adminStaffIds, DEMO_STAFF_ID] : config.adminStaffIds,
    refusedPasswords: demoLive ? [] : DEMO_PASSWORDS,
    logRequests: config.logRequests,
    readiness: () => persistence.readiness(),
    limits: config.http,
    notices: { hub, webhooks },
  });
  await app.listen(listenOptions({ host: config.host, port: config.port, backlog: config.listenBacklog }));
  if (exposure === 'warn') {
    log.warn(
      { host: config.host, demoStaff: DEMO_STAFF_ID, demoData: 'explicit' },
      `WARNING: DEMO CREDENTIALS ARE LIVE ON A NETWORK ADDRESS (HOST=${config.host}): anyone who can reach this port ` +
        'can log in as staff with the published demo password. Never do this outside a throw-away demo.',
    );
  }

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
      await webhooks?.close();
      hub.stop();
      engine.stop();
      await persistence.close();
      if (config.mode === 'embedded') secureDataDir(dataDir, logger, 'shutdown');
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
