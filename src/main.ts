import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isEngineError } from './errors.js';
import { ConfigError, isLoopbackHost, loadConfig, urlHost, type Config } from './config.js';
import { formatBanner } from './banner.js';
import { boundedStep } from './bounded-step.js';
import { DEMO_STAFF_ID, DEMO_STAFF_PASSWORD, DEMO_STUDENT_ID, DEMO_STUDENT_PASSWORD } from './demo/demo-data.js';
import { DEMO_PASSWORDS, demoCredentialsLive, demoExposure } from './demo/demo-exposure.js';
import { loadDemoData } from './demo/load-demo.js';
import { secureDataDir } from './data-dir.js';
import { isDataDirRefusal, takeDataDir, type DataDirLock } from './data-dir-lock.js';
import { createMemoryCoordination } from './coordination/memory.js';
import { createThreadPriority } from './thread-priority.js';
import type { Coordination } from './coordination/types.js';
import { createEngine } from './engine/engine.js';
import { buildApp } from './http/app.js';
import { createDrain } from './http/drain.js';
import { createArrivalGauge, type ArrivalGauge } from './http/arrivals.js';
import { listenOptions, listenRefusal, portRefusal } from './http/server-options.js';
import { createNoticeHub } from './notices/notice-hub.js';
import { deriveWebhookNotices, eventMayNotify } from './notices/notices.js';
import { createWebhookService, deliveryPrefetch, type WebhookService } from './notices/webhooks.js';
import { createWebhookOutbox, type WebhookOutbox } from './persistence/webhook-outbox.js';
import { createLogger, type Logger } from './logger.js';
import { watchEngine } from './metrics/engine-metrics.js';
import { metricsAddressRefusal, metricsListenRefusal, startMetricsServer } from './metrics/server.js';
import { NO_STORAGE_REQUIREMENTS, type ClusterMembership, type Persistence, type StorageRequirements } from './persistence/types.js';
import { hashPassword } from './password.js';
import { retryStorageAtStart } from './persistence/start-retry.js';
import { createScratchPersistence } from './persistence/scratch-store.js';
import { warmUpRequestPath } from './http/warm-up.js';
import { encodeClassTime } from './actors/class-time.js';
import { resetRequestMetrics } from './http/request-metrics.js';
import { randomBytes } from 'node:crypto';
import { loadOrCreateSecret } from './secret-file.js';
import { startupWrite } from './startup-write.js';

/**
 * The one module that knows every layer. It builds them in order — config, logger, persistence,
 * actors (engine), HTTP, listen, then (full mode with live peers) the shard leases — and shuts them
 * down in reverse.
 */

/**
 * Each mode's store is imported only when that mode is chosen: full mode never touches PGlite,
 * whose JavaScript alone (loaded, not even started) keeps about 0.8 MB of heap live for the life
 * of the process, and embedded mode never needs pg or amqplib.
 */
async function createPersistence(
  config: Config,
  logger: Logger,
  outbox: WebhookOutbox,
  webhooksRecorded: () => void,
  arrivals: ArrivalGauge,
): Promise<Persistence & Partial<ClusterMembership>> {
  if (config.mode === 'embedded') {
    const { createEmbeddedStore } = await import('./persistence/embedded-store.js');
    return createEmbeddedStore({
      dataDir: join(config.dataDir, 'pglite'),
      logger,
      batchMaxEvents: config.batchMaxEvents,
      groupCommitLingerMs: config.groupCommitLingerMs,
      groupCommitQuietMs: config.groupCommitQuietMs,
      sharedBuffersMb: config.pgliteSharedBuffersMb,
      thread: config.pgliteThread,
      outbox,
    });
  }
  const { createFullStore } = await import('./persistence/full-store.js');
  const { batcherThreadFactory } = await import('./persistence/batcher-thread.js');
  return createFullStore({
    databaseUrl: config.databaseUrl as string,
    rabbitmqUrl: config.rabbitmqUrl as string,
    prefix: config.amqpPrefix,
    logger,
    batchMaxEvents: config.batchMaxEvents,
    batchLingerMs: config.batchLingerMs,
    groupCommitLingerMs: config.groupCommitLingerMs,
    groupCommitQuietMs: config.groupCommitQuietMs,
    // A batch lingers only while more of the server's requests are on their way to it.
    groupCommitSettled: (waiting) => arrivals.settled(waiting),
    brokerConfirmTimeoutMs: config.brokerConfirmTimeoutMs,
    databaseQueryTimeoutMs: config.databaseQueryTimeoutMs,
    runBatcher: config.inProcessBatcher,
    // On its own thread the batcher has its own pool, broker connection and webhook outbox
    // (src/cli/batcher-worker.ts); on this thread it shares the store's pool and this outbox.
    ...(config.batcherThread === 'worker'
      ? {
          batcherFactory: batcherThreadFactory({
            entry: join(dirname(fileURLToPath(import.meta.url)), 'cli', 'batcher-worker'),
            logLevel: config.logLevel,
            onRecorded: webhooksRecorded,
          }),
        }
      : {}),
    shards: config.cluster.shards,
    leaseTtlMs: config.cluster.leaseTtlMs,
    address: config.cluster.advertiseUrl,
    forwarding: config.cluster.forwardWrites,
    // Peers forward writes to a shard's owner: with one live, no lease before this server listens (see below).
    joinWhenListening: true,
    outbox,
  });
}

/** Every shard has an owner other than this instance (after a hand-over: a survivor took them). */
function hasOwner(cluster: ClusterMembership): boolean {
  for (let shard = 0; shard < cluster.shards; shard++) {
    const r = cluster.routeWrite(shard);
    if (r.self || r.address === null) return false;
  }
  return true;
}

/**
 * Redis when configured (several instances agree), else in-process; ioredis is loaded only when used.
 * With Redis, a revocation Redis cannot take is saved to a backup before it is answered: the
 * database in full mode (a small pool of its own, closed after the coordination), the data
 * directory's journal in embedded mode.
 */
async function createCoordination(config: Config, logger: Logger): Promise<{ coordination: Coordination; closeBackup: () => Promise<void> }> {
  if (config.redisUrl === null) {
    // One instance: in embedded mode its data directory also keeps revocations across restarts.
    const coordination = createMemoryCoordination(config.mode === 'embedded' ? { dataDir: resolve(config.dataDir), logger } : { logger });
    return { coordination, closeBackup: async () => undefined };
  }
  const backup =
    config.mode === 'full'
      ? (await import('./persistence/revocation-backup.js')).createPgRevocationBackup(config.databaseUrl as string, {
          // A logout during a Redis outage waits for the database at most this long (then 503).
          queryTimeoutMs: Math.min(config.databaseQueryTimeoutMs, 5000),
        })
      : (await import('./coordination/revocation-journal.js')).createJournalBackup(resolve(config.dataDir));
  const { createRedisCoordination } = await import('./coordination/redis.js');
  const coordination = createRedisCoordination({ url: config.redisUrl, prefix: config.redisPrefix, logger, backup });
  return { coordination, closeBackup: () => backup.close() };
}

/**
 * BOOTSTRAP_STAFF_ID / BOOTSTRAP_STAFF_PASSWORD: the first staff member of a fresh deployment,
 * created through the engine's normal event path when no staff member has that id, and left alone
 * otherwise (the variable never resets a password). The password is hashed here and never logged;
 * its strength was checked with the configuration (src/config.ts: a weak, common or demo password
 * refuses the start, exit code 2, before anything is opened).
 */
async function bootstrapStaff(
  engine: ReturnType<typeof createEngine>,
  b: { id: number; password: string },
  adminStaffIds: readonly number[],
  log: Logger,
  requirements: StorageRequirements,
  cluster: ClusterMembership | null,
): Promise<void> {
  if (engine.getStaff(b.id)) {
    log.info({ staff: b.id }, 'BOOTSTRAP_STAFF_ID exists already; nothing changed (BOOTSTRAP_STAFF_PASSWORD can be unset)');
    return;
  }
  if (requirements.staffDepartment) {
    // The Go service's schema: a staff row needs a department, which this variable cannot say.
    log.error({ staff: b.id }, 'this database requires a department for every staff member; create the first one with `npm run create-staff` (--department), not BOOTSTRAP_STAFF_ID; no staff member created');
    return;
  }
  const passwordHash = await hashPassword(b.password, 10);
  // The registry's shard (0); a try whose outcome was in doubt may have created it already.
  const created = await startupWrite(
    'the BOOTSTRAP_STAFF_ID staff member',
    () =>
      engine.createStaff({ id: b.id, passwordHash, departmentId: null }, { requestId: 'bootstrap', actor: 'system' }).then(
        () => true,
        (err: unknown) => {
          if (isEngineError(err) && err.code === 'ALREADY_EXISTS') return false;
          throw err;
        },
      ),
    { cluster, log, shards: [0], done: () => engine.getStaff(b.id) !== undefined },
  );
  if (created === null) return; // another instance created it meanwhile (logged by startupWrite)
  if (!created) {
    log.info({ staff: b.id }, 'BOOTSTRAP_STAFF_ID exists already; nothing changed (BOOTSTRAP_STAFF_PASSWORD can be unset)');
    return;
  }
  // The hint only where it helps: an id listed already may create staff.
  const hint = adminStaffIds.includes(b.id) ? '' : ' (add it to ADMIN_STAFF_IDS to let it create staff)';
  log.info({ staff: b.id }, `first staff member created from BOOTSTRAP_STAFF_ID${hint}`);
}

/**
 * Runs the students' request path hot before the real server listens (src/http/warm-up.ts): a
 * throw-away engine over a store that keeps nothing, its own app on a loopback port, its own
 * students and sections. Nothing of it reaches the real engine, store, logs or metrics; what it
 * leaves is compiled code. A failure is logged and the start goes on.
 */
async function warmUp(config: Config, logger: Logger): Promise<void> {
  const log = logger.child({ module: 'warm-up' });
  const quiet = logger.child({ module: 'warm-up' }, { level: 'silent' });
  const engine = createEngine({
    persistence: createScratchPersistence({
      groupCommit: { maxEvents: config.batchMaxEvents, lingerMs: config.groupCommitLingerMs, quietMs: config.groupCommitQuietMs },
    }),
    logger: quiet,
    enrollmentWindowMs: config.enrollmentWindowMinutes * 60_000,
    studentMailboxLimit: config.studentMailboxLimit,
  });
  let hub: ReturnType<typeof createNoticeHub> | null = null;
  try {
    await engine.start();
    const now = Date.now();
    const sections = [];
    for (let c = 1; c <= 40; c++) {
      for (let g = 1; g <= 2; g++) {
        sections.push({
          info: {
            courseId: 9_000_000 + c,
            groupId: g,
            forDepartment: null,
            name: `warm-up ${c}`,
            lecturer: 'warm-up',
            units: 1 + (c % 3),
            examTime: c % 2 === 0 ? now + c * 86_400_000 : null,
            classTime: encodeClassTime({ days: 1 << (c % 5), startMinute: 480 + (c % 8) * 60, endMinute: 530 + (c % 8) * 60 }),
            notes: '',
          },
          capacity: 1_000_000,
          reserveCapacity: 10,
          sexLock: null,
        });
      }
    }
    const students = [];
    for (let i = 1; i <= 1_000; i++) {
      students.push({
        id: 9_000_000 + i,
        passwordHash: '',
        enrollmentStart: now - 1_000,
        maxUnits: 1_000,
        remainingActions: 1_000_000,
        departmentId: null,
        entryYear: null,
        gender: 'male' as const,
      });
    }
    await engine.importBatch({ sections, students, staff: [], departments: [] }, { requestId: 'warm-up', actor: 'system' });
    const jwtSecret = randomBytes(32).toString('hex');
    hub = createNoticeHub({ engine, store: null, logger: quiet, resumeWaitMs: 0 });
    await hub.start();
    const app = await buildApp({
      engine,
      logger: quiet,
      jwtSecret,
      tokenTtlSeconds: 3600,
      readiness: async () => ({ ready: true, checks: {} }),
      limits: config.http,
      // The real limits (each warm-up student writes a few times) on a store of its own.
      coordination: createMemoryCoordination(),
      throttle: config.throttle,
      notices: { hub, webhooks: null },
    });
    const r = await warmUpRequestPath({
      app,
      jwtSecret,
      studentIds: students.map((s) => s.id),
      sections: sections.map((s) => ({ courseId: s.info.courseId, groupId: s.info.groupId })),
      clients: 64,
      requests: config.warmUpRequests,
      maxMs: 10_000,
    });
    log.info({ requests: r.requests, accepted: r.accepted, unexpected: r.unexpected, ms: Math.round(r.ms) }, 'request path warmed up');
  } catch (err) {
    log.warn({ err }, 'warm-up failed; starting without it');
  } finally {
    hub?.stop();
    engine.stop();
    // Its requests are not the real server's.
    resetRequestMetrics();
  }
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
  // A person at a terminal sees at once that something is happening (opening the store can take seconds).
  const tty = process.stdout.isTTY === true;
  if (tty) process.stdout.write(`\n  Course-enrollment engine starting (${config.mode} mode): opening the store and loading sections...\n\n`);
  /** A port or host a listener cannot listen on: said plainly, exit 3 (as for a held data directory). */
  const refuseAddress = (reason: string, at: { host: string; port: number } = config): never => {
    log.fatal({ host: at.host, port: at.port }, `refusing to start: ${reason}`);
    if (tty) process.stderr.write(`\n  ${reason}\n\n`);
    logger.flush();
    process.exit(3);
  };
  // Before anything is opened or loaded: the API's address, then the Prometheus listener's (the
  // same port on the same host is a configuration error, said by loadConfig).
  const taken = await portRefusal(config.host, config.port);
  if (taken !== null) refuseAddress(taken);
  if (config.metrics.port > 0) {
    const metricsTaken = await metricsAddressRefusal(config.metrics.host, config.metrics.port);
    if (metricsTaken !== null) refuseAddress(metricsTaken, config.metrics);
  }

  // First of all, before this instance loads anything or takes a lease: while it warms up, no peer
  // routes writes to it and nothing waits for it.
  if (config.warmUpRequests > 0) await warmUp(config, logger);

  const dataDir = resolve(config.dataDir);
  let dataDirLock: DataDirLock | null = null;
  if (config.mode === 'embedded') {
    // New directories (and files of anything honouring the umask) private from the start.
    process.umask(0o077);
    try {
      // Not someone else's directory, and no other engine on it: then it is made private.
      dataDirLock = await takeDataDir(dataDir, 'the engine');
    } catch (err) {
      if (!isDataDirRefusal(err)) throw err;
      log.fatal({ dataDir }, `refusing to start: ${err.message}`);
      if (tty) process.stderr.write(`\n  ${err.message}\n\n`);
      logger.flush();
      process.exit(3);
    }
    secureDataDir(dataDir, logger, 'start');
  }
  // Webhook deliveries are recorded with the changes they come from (issue 16): by the group commit
  // (embedded), by the in-process batcher (full; a standalone batcher has its own outbox).
  let wakeWebhooks: (() => void) | null = null;
  // Embedded mode: this process alone registers webhooks, so the outbox keeps the active ones
  // (its group commit is on the request's path); full mode reads them in each batch.
  const outbox = createWebhookOutbox({
    deriver: deriveWebhookNotices,
    mayNotify: eventMayNotify,
    logger,
    onRecorded: () => wakeWebhooks?.(),
    cacheWebhooks: config.mode === 'embedded',
  });
  // What the HTTP server has on its way to the store (fed by the app built below, read by the group commit).
  const arrivals = createArrivalGauge();
  const persistence = await createPersistence(config, logger, outbox, () => wakeWebhooks?.(), arrivals);
  const cluster = persistence.mode === 'full' ? (persistence as Persistence & ClusterMembership) : null;
  const engine = createEngine({
    ...(cluster ? { cluster } : {}),
    persistence,
    logger,
    enrollmentWindowMs: config.enrollmentWindowMinutes * 60_000,
    studentMailboxLimit: config.studentMailboxLimit,
  });
  // Storage may still be starting (compose, a broker restart): keep trying instead of exiting.
  // Read after the migrations: the Go service's own schema has NOT NULLs the engine's does not.
  let storageRequirements: StorageRequirements = NO_STORAGE_REQUIREMENTS;
  await retryStorageAtStart(log, async () => {
    await persistence.migrate();
    storageRequirements = (await persistence.requirements?.()) ?? NO_STORAGE_REQUIREMENTS;
    await engine.start();
  });
  let demo: Awaited<ReturnType<typeof loadDemoData>> | null = null;
  // Start-up writes wait until this instance decides writes (its lease taken and its state loaded
  // under it) and retry a refusal while that settles, for a bounded time (src/startup-write.ts).
  // Another instance started at the same moment on the same new database may load it first (done).
  if (config.demoData && engine.isEmpty()) demo = await startupWrite('the demo data', () => loadDemoData(engine, logger), { cluster, log, done: () => !engine.isEmpty() });
  if (config.bootstrapStaff) await bootstrapStaff(engine, config.bootstrapStaff, config.adminStaffIds, log, storageRequirements, cluster);
  // Data the Go service wrote can hold students queued beside free seats (SPEC: its promotion never
  // reached the database correctly): promoted now, in queue order, before anyone else can take those seats.
  const stranded = await engine.promoteStrandedQueues({ requestId: 'promote-stranded-queue', actor: 'system' });
  if (stranded.promoted > 0 || stranded.failed > 0) log.warn(stranded, 'students queued beside free seats (data written by the Go service) promoted in queue order');
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
  // Embedded mode: one process on its store, so openings of unwatched sections need no database read.
  const hub = createNoticeHub({ engine, store: persistence.notices ?? null, logger, resumeWaitMs: config.mode === 'full' ? 5000 : 0, singleInstance: config.mode === 'embedded' });
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
            // Room for every active webhook's share of the worker: a hanging receiver holds only its own.
            prefetch: deliveryPrefetch(config.webhookMaxActive, config.webhookInFlightPerWebhook, config.webhookWaitingPerWebhook),
          })
        : (await import('./persistence/delivery-queue.js')).createDatabaseDeliveryQueue({ store, logger });
    webhooks = createWebhookService({
      store,
      queue,
      logger,
      onWebhooksChanged: () => outbox.webhooksChanged(),
      // Off by default: webhook targets on internal networks are refused (SSRF; webhook-target.ts).
      allowPrivateTargets: config.webhookAllowPrivateTargets,
      // Each notice is POSTed to every active webhook: bounded (429 TOO_MANY_WEBHOOKS past it).
      maxActive: config.webhookMaxActive,
      // A hanging receiver holds only its own share (docs/notices.md).
      perWebhookInFlight: config.webhookInFlightPerWebhook,
      perWebhookWaiting: config.webhookWaitingPerWebhook,
    });
    await webhooks.start();
    const w = webhooks;
    hub.onWatchNotices(() => w.wake());
    wakeWebhooks = () => w.wake();
  }

  const jwtSecret = config.jwtSecret ?? loadOrCreateSecret(dataDir, logger);
  const { coordination, closeBackup } = await createCoordination(config, logger);
  // An unreachable Redis never fails start (its features degrade as documented, coordination/redis.ts);
  // an embedded data directory whose revocation journal cannot be written does. In full mode the
  // revocations saved to the database during a Redis outage must be read first: retried like storage.
  for (let attempt = 1; ; attempt++) {
    try {
      await coordination.start();
      break;
    } catch (err) {
      if (config.mode !== 'full') throw err;
      const waitMs = Math.min(250 * 2 ** attempt, 5000);
      log.warn({ err, attempt, waitMs }, 'revocations saved in the database unreadable at start; retrying');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
  const drain = createDrain();
  const app = await buildApp({
    drain,
    arrivals,
    engine,
    logger,
    jwtSecret,
    tokenTtlSeconds: config.tokenTtlSeconds,
    sessionMaxSeconds: config.sessionMaxSeconds,
    maxConcurrentPasswordChecks: config.maxConcurrentPasswordChecks,
    loginQueueMs: config.loginQueueMs,
    // In demo mode the demo staff member is the admin, so the demo can show staff creation.
    adminStaffIds: demoLive ? [...config.adminStaffIds, DEMO_STAFF_ID] : config.adminStaffIds,
    // Published with the demo data: never a new password, in demo mode too (probe I: the README says so).
    refusedPasswords: DEMO_PASSWORDS,
    logRequests: config.logRequests,
    readiness: () => persistence.readiness(),
    storageRequirements,
    limits: config.http,
    trustProxy: config.trustProxy,
    ...(cluster && config.cluster.forwardWrites ? { cluster, forwardRetryMs: config.cluster.forwardRetryMs } : {}),
    coordination,
    throttle: config.throttle,
    notices: { hub, webhooks },
    // The loopback demo: a web page pointing its own name at 127.0.0.1 (DNS rebinding) must not reach the demo admin.
    loopbackHostsOnly: exposure === 'local',
  });
  // From the moment clients (and the launcher, or an orchestrator that saw the port open) can reach
  // it, a SIGTERM or Ctrl-C must stop it gracefully: without a listener Node dies of the signal at
  // once. A signal that comes before the shutdown below is ready is kept and acted on then (before,
  // one sent as the ready line appeared killed the process outright in 2 of 8 tries under load).
  let stopSignal: string | null = null;
  let onStopSignal: (signal: string) => void = (signal) => {
    stopSignal ??= signal;
  };
  process.once('SIGINT', () => onStopSignal('SIGINT'));
  process.once('SIGTERM', () => onStopSignal('SIGTERM'));
  try {
    await app.listen(listenOptions({ host: config.host, port: config.port, backlog: config.listenBacklog }));
  } catch (err) {
    // Taken since the check at the start.
    const reason = listenRefusal(err, config.host, config.port);
    if (reason === null) throw err;
    refuseAddress(reason);
  }
  // Only now may peers route writes here: an instance that found live peers at its start took no
  // lease while it loaded and built its server (seconds under load, during which their forwards
  // were refused and, past FORWARD_RETRY_MS, answered 503). It takes its share from the next lease
  // round on; each shard is fenced and reloaded before it is served, as at any takeover.
  cluster?.join();
  // Every thread the engine starts with exists by now (V8's helpers, libuv's pool, the batcher's worker).
  const priority = createThreadPriority({ nice: config.backgroundNice, logger });
  watchEngine(engine, coordination);
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | null = null;
  if (config.metrics.port > 0) {
    try {
      metricsServer = await startMetricsServer({ ...config.metrics, logger, limits: config.http });
    } catch (err) {
      // Taken since the check at the start: said as that check says it.
      const reason = metricsListenRefusal(err, config.metrics.host, config.metrics.port);
      if (reason === null) throw err;
      refuseAddress(reason, config.metrics);
    }
  }
  if (exposure === 'warn') {
    log.warn(
      { host: config.host, demoStaff: DEMO_STAFF_ID, demoData: 'explicit' },
      `WARNING: DEMO CREDENTIALS ARE LIVE ON A NETWORK ADDRESS (HOST=${config.host}): anyone who can reach this port ` +
        'can log in as staff with the published demo password. Never do this outside a throw-away demo.',
    );
  }

  const shown = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : urlHost(config.host);
  // PORT=0 lets the system pick a free port: say the one it picked.
  const bound = app.server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : config.port;
  const base = `http://${shown}:${port}`;
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

  if (tty) {
    // The log writes asynchronously; the banner must not overtake the ready line above (nor be
    // lost behind it when the terminal goes away at once).
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    process.stdout.write(
      formatBanner({
        base,
        mode: config.mode,
        startupMs: performance.now() - t0,
        coordination: { kind: coordination.kind, connected: coordination.connected },
        metricsUrl: metricsServer ? `http://${config.metrics.host === '0.0.0.0' ? 'localhost' : urlHost(config.metrics.host)}:${config.metrics.port}/metrics` : null,
        demo: demoLive
          ? { student: { user: DEMO_STUDENT_ID, password: DEMO_STUDENT_PASSWORD }, staff: { user: DEMO_STAFF_ID, password: DEMO_STAFF_PASSWORD } }
          : null,
        logLevel: config.logLevel,
      }),
    );
  }
  // Started by scripts/start.mjs (`npm start`): tell it the engine is listening, so it can leave.
  if (process.send) process.send({ type: 'engine-ready', pid: process.pid, url: base }, () => process.disconnect?.());

  let stopping = false;
  const within = (what: string, ms: number, step: () => Promise<unknown>) => boundedStep(log, what, ms, step);
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // From here every answer says Connection: close and /ready 503, so clients and load balancers
    // move on while the requests in flight are answered (src/http/drain.ts). Ctrl-C does not wait.
    drain.begin();
    const drainUntil = performance.now() + (signal === 'SIGTERM' ? config.shutdownDrainMs : 0);
    try {
      // Several instances: hand the shards over first (stop taking writes, drain, release the
      // leases), so a survivor takes them at its next lease round instead of after expiry; this
      // instance keeps answering meanwhile, forwarding to the new owner.
      // Alone (no live peer at a fresh read of the lease table): nobody to hand the shards to.
      // Handing over would make every write arriving meanwhile wait for a takeover that never
      // comes (8 s, then 503); instead this instance serves until its server has closed, and the
      // store's close releases the leases.
      if (cluster) await within('reading the lease table', 2000, () => cluster.refreshRoutes());
      if (cluster && cluster.peers > 0) {
        let owned = false;
        for (let shard = 0; shard < cluster.shards; shard++) owned ||= cluster.routeWrite(shard).self;
        await within('the hand-over (the leases expire by themselves)', 10_000, () => cluster.handOver());
        // The peer count and routes are those of the last lease round (seconds ago with a long
        // lease): read them now, or an instance started a moment before its peers registered
        // believes it is alone and closes at once, resetting the writes they forward to it.
        await within('reading the lease table', 2000, () => cluster.refreshRoutes());
        // Requests still arriving here are forwarded to the survivor that takes over (if there is one).
        for (let i = 0; i < 30 && config.cluster.forwardWrites && cluster.peers > 0 && !hasOwner(cluster); i++) {
          await new Promise((r) => setTimeout(r, 100));
          await within('reading the lease table', 2000, () => cluster.refreshRoutes());
        }
        // The peers learn the new owner at their next lease round; until then they still forward
        // here. Closing now would reset the kept-alive sockets they are about to write on, and a
        // reset after sending is an outcome in doubt (503). Two rounds later they route elsewhere.
        if (owned && cluster.peers > 0 && hasOwner(cluster)) await new Promise((r) => setTimeout(r, 2 * Math.max(100, Math.round(config.cluster.leaseTtlMs / 5))));
      }
      metricsServer?.close();
      priority.stop();
      await drain.close(app, { deadline: drainUntil });
      await coordination.close();
      // After the HTTP server (no revoke in flight) and the coordination (which no longer saves to it).
      await within('closing the revocation backup', 2000, closeBackup);
      const sender = webhooks;
      if (sender) await within('stopping the webhook sender', 2000, () => sender.close());
      hub.stop();
      engine.stop();
      await persistence.close();
      if (config.mode === 'embedded') secureDataDir(dataDir, logger, 'shutdown');
      await dataDirLock?.release();
      log.info('stopped');
      process.exit(0);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  /**
   * A shutdown that cannot finish (a broker or database that stopped answering holds a close) ends
   * here: everything acknowledged is durable already, and an orchestrator waiting for the exit
   * should not wait for ever.
   */
  const SHUTDOWN_DEADLINE_MS = 30_000;
  const shutdownWithDeadline = (signal: string) => {
    setTimeout(() => {
      try {
        log.error({ signal, ms: SHUTDOWN_DEADLINE_MS }, 'shutdown did not finish in time; exiting');
      } finally {
        process.exit(1);
      }
    }, SHUTDOWN_DEADLINE_MS).unref();
    void shutdown(signal);
  };
  onStopSignal = shutdownWithDeadline;
  if (stopSignal !== null) shutdownWithDeadline(stopSignal);
}

main().catch((err: unknown) => {
  createLogger('error').fatal({ err }, 'failed to start');
  process.exit(1);
});
