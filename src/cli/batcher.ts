/**
 * `npm run batcher`: the standalone batcher process of full mode. Several may run; one is active
 * (PostgreSQL advisory lock) and the others stand by to take over.
 */
import { loadConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { createBatcher } from '../persistence/batcher.js';
import { streamNames } from '../persistence/full-store.js';
import { migrate } from '../persistence/migrations.js';
import { createPgClient } from '../persistence/pg-client.js';

const config = loadConfig();
const logger = createLogger(config.logLevel);
if (!config.databaseUrl || !config.rabbitmqUrl) {
  logger.fatal('the batcher needs DATABASE_URL and RABBITMQ_URL');
  process.exit(2);
}
const db = createPgClient(config.databaseUrl);
await migrate(db);
const names = streamNames(config.amqpPrefix);
const batcher = createBatcher({
  db,
  databaseUrl: config.databaseUrl,
  amqpUrl: config.rabbitmqUrl,
  stream: names.stream,
  deadLetterQueue: names.dead,
  logger,
  maxEvents: config.batchMaxEvents,
});
batcher.start();
logger.info({ stream: names.stream }, 'batcher started');
const stop = async (signal: string) => {
  logger.info({ signal }, 'batcher stopping');
  await batcher.stop();
  await db.close();
  process.exit(0);
};
process.once('SIGINT', () => void stop('SIGINT'));
process.once('SIGTERM', () => void stop('SIGTERM'));
