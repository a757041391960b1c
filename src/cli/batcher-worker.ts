/**
 * The batcher's worker thread (`BATCHER_THREAD=worker`, src/persistence/batcher-thread.ts): the
 * same wiring as `npm run batcher` (its own PostgreSQL pool, broker connection and webhook outbox),
 * driven by the server's thread instead of signals, and reporting what the server shows of it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { boundedStep } from '../bounded-step.js';
import { createLogger } from '../logger.js';
import { deriveWebhookNotices, eventMayNotify } from '../notices/notices.js';
import { createBatcher } from '../persistence/batcher.js';
import type { BatcherWorkerCommand, BatcherWorkerData, BatcherWorkerReport } from '../persistence/batcher-thread.js';
import { createPgClient } from '../persistence/pg-client.js';
import { createWebhookOutbox } from '../persistence/webhook-outbox.js';

if (!parentPort) throw new Error('batcher-worker runs as a worker thread (see src/persistence/batcher-thread.ts)');
const port = parentPort;
const data = workerData as BatcherWorkerData;
const logger = createLogger(data.logLevel).child({ thread: 'batcher' });
const post = (r: BatcherWorkerReport): void => port.postMessage(r);

const db = createPgClient(data.databaseUrl, data.queryTimeoutMs !== undefined ? { queryTimeoutMillis: data.queryTimeoutMs } : {});
const batcher = createBatcher({
  db,
  databaseUrl: data.databaseUrl,
  amqpUrl: data.amqpUrl,
  stream: data.stream,
  deadLetterQueue: data.deadLetterQueue,
  logger,
  maxEvents: data.maxEvents,
  ...(data.maxDelayMs !== undefined ? { maxDelayMs: data.maxDelayMs } : {}),
  ...(data.stallRetryMs !== undefined ? { stallRetryMs: data.stallRetryMs } : {}),
  ...(data.queryTimeoutMs !== undefined ? { queryTimeoutMs: data.queryTimeoutMs } : {}),
  outbox: createWebhookOutbox({ deriver: deriveWebhookNotices, mayNotify: eventMayNotify, logger, onRecorded: () => post({ type: 'recorded' }) }),
});

/** What the server reads of the batcher, sent when it changed (checked every 50 ms: a few numbers). */
let last = '';
function report(): void {
  const lagSeconds = batcher.lag.lagSeconds;
  const state: BatcherWorkerReport = {
    type: 'state',
    isLeader: batcher.isLeader,
    isConsuming: batcher.isConsuming,
    appliedOffset: batcher.appliedOffset,
    appliedEvents: batcher.appliedEvents,
    stall: batcher.stall,
    lagMessages: batcher.lag.lagMessages,
    lagEvents: batcher.lag.lagEvents,
    oldestAt: lagSeconds > 0 ? Math.round(Date.now() - lagSeconds * 1000) : null,
  };
  const key = JSON.stringify(state);
  if (key === last) return;
  last = key;
  post(state);
}
const ticker = setInterval(report, 50);

port.on('message', (c: BatcherWorkerCommand) => {
  if (c.type === 'start') {
    batcher.start();
    return;
  }
  clearInterval(ticker);
  void (async () => {
    try {
      await batcher.stop();
      // A database that stopped answering holds pool.end() for ever; the stream keeps what is unapplied.
      await boundedStep(logger, 'closing the batcher thread\'s database pool', 1000, () => db.close());
    } catch (err) {
      logger.warn({ err }, 'batcher thread: stopping failed');
    }
    report();
    post({ type: 'stopped' });
    port.close();
    // Ends the thread (only the thread) should a handle the batcher left open still keep it alive.
    setTimeout(() => process.exit(0), 1000).unref();
  })();
});
