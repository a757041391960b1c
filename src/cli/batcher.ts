/**
 * `npm run batcher`: the standalone batcher process of full mode. Several may run; one is active
 * (PostgreSQL advisory lock) and the others stand by to take over.
 *
 * `npm run batcher -- --skip <offset> [--by <who>] [--reason <text>]`: the operator's way past a
 * message the batcher is stopped at (see src/persistence/log-skip.ts); records who skipped what,
 * copies the message to the dead-letter queue, and exits.
 */
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { metricsAddressRefusal, metricsListenRefusal, startMetricsServer } from '../metrics/server.js';
import { createLogger } from '../logger.js';
import { deriveWebhookNotices, eventMayNotify } from '../notices/notices.js';
import { createBatcher } from '../persistence/batcher.js';
import { createWebhookOutbox } from '../persistence/webhook-outbox.js';
import { streamNames } from '../persistence/full-store.js';
import { skipLogMessage } from '../persistence/log-skip.js';
import { migrate } from '../persistence/migrations.js';
import { createPgClient } from '../persistence/pg-client.js';
import { storageSettingHint } from '../persistence/setting-hints.js';
import { retryStorageAtStart } from '../persistence/start-retry.js';

const { values: args } = parseArgs({
  options: { skip: { type: 'string' }, by: { type: 'string' }, reason: { type: 'string' } },
  strict: true,
});
// The batcher's own settings only: it signs no token (JWT_SECRET is the server's). A setting that
// is wrong is said as the server says it (the problems, exit 2), not as a stack trace.
const config = ((): Config => {
  try {
    return loadConfig(undefined, { role: 'batcher' });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
})();
const logger = createLogger(config.logLevel);
if (!config.databaseUrl || !config.rabbitmqUrl) {
  logger.fatal('the batcher needs DATABASE_URL and RABBITMQ_URL');
  process.exit(2);
}
// Every statement bounded (a database that stops answering without closing the connection must
// not hold a batch for ever); migrations, which may take long, on a connection of their own without.
const db = createPgClient(config.databaseUrl, { queryTimeoutMillis: config.databaseQueryTimeoutMs });
const databaseUrl = config.databaseUrl;
const migrateOnce = async () => {
  const unbounded = createPgClient(databaseUrl, { max: 1 });
  try {
    await migrate(unbounded, { log: logger.child({ module: 'migrate' }) });
  } finally {
    await unbounded.close();
  }
};
const names = streamNames(config.amqpPrefix);

if (args.skip !== undefined) {
  const offset = Number(args.skip);
  if (!Number.isSafeInteger(offset) || offset < 0) {
    logger.fatal({ skip: args.skip }, '--skip needs the stream offset the batcher is stopped at (a whole number)');
    process.exit(2);
  }
  // A one-off operator command: a database that is away is said once (JSON), not waited for.
  try {
    await migrateOnce();
  } catch (err) {
    const hint = storageSettingHint(err);
    logger.fatal({ err, ...(hint ? { hint } : {}) }, hint ? `nothing was skipped: ${hint}` : 'nothing was skipped: the database is unreachable');
    logger.flush();
    process.exit(1);
  }
  let code = 0;
  try {
    await skipLogMessage({
      db,
      amqpUrl: config.rabbitmqUrl,
      stream: names.stream,
      deadLetterQueue: names.dead,
      offset,
      by: args.by ?? userInfo().username,
      reason: args.reason ?? 'skipped by an operator',
      logger,
    });
  } catch (err) {
    logger.error({ err, offset }, 'nothing was skipped');
    code = 1;
  }
  await db.close();
  process.exit(code);
}

// The Prometheus listener's address, before the database is waited for: a METRICS_PORT in use or a
// METRICS_HOST that does not resolve is said in one line (exit 3), as the server says it, not as a
// stack trace once the batcher runs.
if (config.metrics.port > 0) {
  const taken = await metricsAddressRefusal(config.metrics.host, config.metrics.port);
  if (taken !== null) {
    logger.fatal({ host: config.metrics.host, port: config.metrics.port }, `refusing to start: ${taken}`);
    logger.flush();
    process.exit(3);
  }
}

// Installed before the start's wait: a signal then has nothing to drain (nothing is consumed yet),
// and without a listener Node would die of it. Replaced by the graceful stop once the batcher runs.
let onStopSignal = (signal: string): void => {
  logger.info({ signal }, 'batcher stopping before it started');
  logger.flush();
  process.exit(0);
};
process.once('SIGINT', () => onStopSignal('SIGINT'));
process.once('SIGTERM', () => onStopSignal('SIGTERM'));
// PostgreSQL may still be starting (a compose stack, a database restart): waited for, as the
// server does, instead of dying of a stack trace and staying down under a plain process manager.
await retryStorageAtStart(logger.child({ module: 'batcher-cli' }), migrateOnce);

const batcher = createBatcher({
  db,
  databaseUrl: config.databaseUrl,
  amqpUrl: config.rabbitmqUrl,
  stream: names.stream,
  deadLetterQueue: names.dead,
  logger,
  maxEvents: config.batchMaxEvents,
  maxDelayMs: config.batchLingerMs,
  queryTimeoutMs: config.databaseQueryTimeoutMs,
  // Webhook deliveries are recorded with each batch (issue 16); the engines queue and send them.
  outbox: createWebhookOutbox({ deriver: deriveWebhookNotices, mayNotify: eventMayNotify, logger }),
});
let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | null = null;
const stop = async (signal: string) => {
  logger.info({ signal }, 'batcher stopping');
  metricsServer?.close();
  await batcher.stop();
  await db.close();
  process.exit(0);
};
batcher.start();
onStopSignal = (signal) => void stop(signal);
logger.info({ stream: names.stream }, 'batcher started');
// Its lag gauges live in this process: Prometheus scrapes it on its own METRICS_PORT.
if (config.metrics.port > 0) {
  try {
    metricsServer = await startMetricsServer({ ...config.metrics, logger, limits: config.http });
  } catch (err) {
    // Taken since the check at the start.
    const reason = metricsListenRefusal(err, config.metrics.host, config.metrics.port);
    if (reason === null) throw err;
    logger.fatal({ host: config.metrics.host, port: config.metrics.port }, `refusing to start: ${reason}`);
    await batcher.stop();
    await db.close();
    logger.flush();
    process.exit(3);
  }
}
