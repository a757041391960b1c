/**
 * The only reader of `process.env`. Every variable is validated at start and all problems are
 * reported together, so an operator fixes a bad deployment in one go instead of one crash at a time.
 */

import { isIP } from 'node:net';
import { DEMO_STAFF_PASSWORD, DEMO_STUDENT_PASSWORD } from './demo/demo-data.js';
import { DEFAULT_MIN_PASSWORD_LENGTH, newPasswordProblem } from './password-rules.js';

export interface Config {
  host: string;
  port: number;
  /** HS256 secret shared by every instance; in embedded mode generated once under dataDir if unset. */
  jwtSecret: string | null;
  tokenTtlSeconds: number;
  /** A session (one login and every refresh after it) ends this long after the login, refresh or not. */
  sessionMaxSeconds: number;
  /** Password checks (bcrypt) running at once at most; a login over the cap is answered 503 at once. */
  maxConcurrentPasswordChecks: number;
  /** Longest a login waits for a password-check slot before 503 LOGIN_BUSY (ms; 0: never waits). */
  loginQueueMs: number;
  /** Staff ids that may create staff accounts (the demo staff member is added in demo mode). */
  adminStaffIds: number[];
  databaseUrl: string | null;
  rabbitmqUrl: string | null;
  /** Shared rate limits and revocations across instances; null: in-process (one instance). */
  redisUrl: string | null;
  /** Every Redis key and channel starts with it, so deployments and test runs never collide. */
  redisPrefix: string;
  /**
   * Reverse proxies (addresses and CIDR ranges) whose `X-Forwarded-For` is believed, so that the
   * client address login throttling and the logs use (`request.ip`) is the client's, not the
   * proxy's: behind a campus proxy or NAT every student otherwise shares one address and its
   * failed-login limit. Empty (the default): no header is believed, the address is the TCP peer.
   */
  trustProxy: string[];
  /** Login throttling and the per-student write limit (see src/http/throttle.ts). */
  throttle: {
    /** Per account and client address. */
    loginFailuresPerUser: number;
    /** Per account from every address together (the bound on distributed guessing). */
    loginFailuresPerUserAllAddresses: number;
    loginFailuresPerAddress: number;
    loginWindowMs: number;
    /** 0: no limit. */
    studentWriteLimit: number;
    studentWriteWindowMs: number;
  };
  /**
   * A staff member created at start when no staff member has that id (a fresh full-mode database
   * has no way in otherwise); the password is hashed at once and never logged. Null: none. The
   * password follows the API's rules for new passwords (src/password-rules.ts), checked here so a
   * weak one is refused before anything is opened (exit code 2).
   */
  bootstrapStaff: { id: number; password: string } | null;
  /** Separate metrics listener for Prometheus (no token); port 0: none (`/metrics` on the API needs a staff token). */
  metrics: { host: string; port: number };
  enrollmentWindowMinutes: number;
  logLevel: string;
  /** One log line per request and per response; off by default (a registration rush is millions). */
  logRequests: boolean;
  /** Embedded mode's files (PGlite data, generated secret). */
  dataDir: string;
  /** PGlite's buffer pool (MB); its WebAssembly memory never shrinks, so it is kept small (docs/memory.md). */
  pgliteSharedBuffersMb: number;
  /**
   * Where PGlite runs in embedded mode: the engine's event loop (default), or a worker thread of its
   * own, faster under load for 17-37 MB more memory (see pglite-thread.ts and docs/operations.md).
   */
  pgliteThread: 'worker' | 'main';
  /** Load the demo data set into an empty store at start. */
  demoData: boolean;
  /** DEMO_DATA=true was set explicitly: the only way demo credentials may be live on a non-loopback address. */
  demoDataExplicit: boolean;
  /** Prefix for RabbitMQ queue/stream names, so test runs and deployments never collide. */
  amqpPrefix: string;
  /** Upper bound of events per group commit / batch. */
  batchMaxEvents: number;
  /** How long a group commit may wait for more appends (ms); bigger batches, fewer writes under load. */
  groupCommitLingerMs: number;
  groupCommitQuietMs: number;
  /** Full mode: longest wait for the broker's confirm of a group commit before it is answered 503 and the connection made again (ms). */
  brokerConfirmTimeoutMs: number;
  /**
   * Full mode: longest wait for one PostgreSQL statement's answer (engine pool, batcher pool and
   * leader session) before the connection is destroyed and the work retried or answered 503.
   */
  databaseQueryTimeoutMs: number;
  /**
   * The batcher starts at most one PostgreSQL transaction per this many ms (a quiet one writes at
   * once). Every batch costs about ten statements whatever its size, so under a trickle of single
   * requests (a connection storm) fewer, larger batches mean far fewer statements per enroll; under
   * load the tables lag the log by up to this long.
   */
  batchLingerMs: number;
  /** Run the batcher inside the server process (full mode). */
  inProcessBatcher: boolean;
  /**
   * Where that batcher runs: on a worker thread of its own (default), so its work stays off the
   * event loop requests wait for, or on the server's thread (`main`, one V8 heap fewer).
   */
  batcherThread: 'worker' | 'main';
  /** listen(2) backlog; the kernel caps it at net.core.somaxconn. */
  listenBacklog: number;
  /**
   * On SIGTERM, how long open connections are given to leave by themselves (each answer meanwhile
   * says `Connection: close`, `/ready` says 503) before the server closes (src/http/drain.ts).
   * SIGINT (Ctrl-C at a terminal) does not wait.
   */
  shutdownDrainMs: number;
  /**
   * Requests the start-up warm-up sends through a throw-away engine and app before the server
   * listens (src/http/warm-up.ts), so the first seconds of a registration rush do not run cold
   * code; 0 starts without it. Full mode: 3,000 (about a second); embedded mode, which starts at
   * a terminal more often than on registration day: 0.
   */
  warmUpRequests: number;
  /** Header, body and idle time limits of the HTTP server (see src/http/server-options.ts). */
  http: {
    headersTimeoutMs: number;
    requestTimeoutMs: number;
    keepAliveTimeoutMs: number;
    idleTimeoutMs: number;
    maxRequestsPerSocket: number;
    maxPipelinedRequests: number;
  };
  /** Requests one student may have waiting or running at once; past it: 503 OVERLOADED + Retry-After. */
  studentMailboxLimit: number;
  /**
   * Nice value (0-19) given to the process's threads other than the event loop's (compiler, GC
   * helpers, libuv pool, batcher worker), so under load they yield the core to the requests;
   * 0 leaves them as they are. Linux only (src/thread-priority.ts).
   */
  backgroundNice: number;
  /** Several instances (full mode, docs/scale-out.md): shards, lease, forwarding. */
  cluster: {
    shards: number;
    leaseTtlMs: number;
    /** This instance's HTTP base URL as other instances reach it (recorded with its leases). */
    advertiseUrl: string;
    /** Forward writes for shards owned elsewhere (false: refuse them with 503 NOT_OWNER). */
    forwardWrites: boolean;
    forwardRetryMs: number;
  };
  /**
   * Let webhooks target loopback, private (RFC 1918, fc00::/7), link-local (incl. the cloud
   * metadata address), CGNAT, multicast, the other addresses the IANA special-purpose registries
   * say are not globally reachable (documentation, benchmarking, reserved, ...) and this machine's
   * own interface addresses. Off by default: a staff account could otherwise make the engine POST
   * into its own network or to itself (SSRF); operators whose integrations run on a private network
   * turn it on (src/notices/webhook-target.ts).
   */
  webhookAllowPrivateTargets: boolean;
  /**
   * Active webhooks allowed at once: each notice is POSTed to every one, so a bound keeps a staff
   * account from making the engine a request amplifier. One more is refused with 429
   * TOO_MANY_WEBHOOKS; deleted webhooks do not count.
   */
  webhookMaxActive: number;
  /**
   * Attempts of one webhook on the wire at once on this instance: a receiver that hangs holds only
   * these (each for the 5 s attempt timeout), never the other webhooks' deliveries.
   */
  webhookInFlightPerWebhook: number;
  /** Jobs of one webhook waiting in memory for one of its attempts; past it a job is set aside (1 s, doubling to 30 s). */
  webhookWaitingPerWebhook: number;
  /** 'embedded' when no DATABASE_URL / RABBITMQ_URL are configured. */
  mode: 'embedded' | 'full';
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Whether a listen address is reachable only from this machine. Anything else (0.0.0.0, ::, a
 * network address, a host name other than localhost) counts as the network.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (h.startsWith('::ffff:')) return isLoopbackHost(h.slice(7));
  return /^127(\.\d{1,3}){3}$/.test(h);
}

/**
 * Whether listeners on these two hosts and one port could collide: the same host, a wildcard
 * (`0.0.0.0`, `::`, which take the port on every address), or a name (what it resolves to is not
 * known here). Only two different addresses, neither a wildcard, may share a port.
 */
function listenersMayOverlap(a: string, b: string): boolean {
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::' || h === '0:0:0:0:0:0:0:0';
  if (isIP(a) === 0 || isIP(b) === 0 || wildcard(a) || wildcard(b)) return true;
  return a.toLowerCase() === b.toLowerCase();
}

/**
 * A listen address as an operator writes it, made what `listen` takes: `[::1]`, the way an IPv6
 * address is written in a URL, is the address `::1` (`listen` would look `[::1]` up as a host
 * name and fail once everything is loaded). Anything that is not an IP address or a host name (a
 * port, a scheme, brackets around something else) is a problem of the configuration, said at once.
 * Whether a name resolves, and to an address of this machine, is checked before anything is opened
 * (`portRefusal` in src/http/server-options.ts).
 */
function listenHost(name: string, raw: string, problems: string[]): string {
  const inner = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : null;
  if (inner !== null && isIP(inner) === 6) return inner;
  if (isIP(raw) !== 0) return raw;
  // RFC 1123 host names (letters, digits, hyphens, dots), as resolvers take them.
  if (/^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/.test(raw) && raw.length <= 253) return raw;
  problems.push(
    `${name} must be an IP address or a host name, without a scheme or port (the port is ${name === 'HOST' ? 'PORT' : 'METRICS_PORT'}); ` +
      `brackets only around an IPv6 address, e.g. ::1 or [::1] (got "${raw}")`,
  );
  return raw;
}

/** A listen address as it is written in a URL: an IPv6 address in brackets. */
export function urlHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}

/**
 * Why one `TRUST_PROXY` entry cannot be used, or null when it is an IP address or a CIDR range.
 * Only explicit addresses: `true` would let any client choose its address with a header, and a hop
 * count cannot tell the proxy from a client that connects directly (Fastify refuses it as unsafe).
 */
function trustProxyProblem(entry: string): string | null {
  const lower = entry.toLowerCase();
  if (['true', 'yes', 'on', '*', 'all'].includes(lower)) {
    return `"${entry}" would let any client choose its address with X-Forwarded-For; list the proxies' addresses or CIDR ranges`;
  }
  if (/^\d+$/.test(entry)) {
    return `"${entry}": a hop count cannot tell a proxy from a client that connects directly; list the proxies' addresses or CIDR ranges`;
  }
  const slash = entry.indexOf('/');
  const address = slash < 0 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return `"${entry}" is not an IP address or a CIDR range (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/8)`;
  if (slash < 0) return null;
  const bits = entry.slice(slash + 1);
  const max = version === 4 ? 32 : 128;
  // Not 0: a range of every address would trust any client's header (and Fastify refuses it).
  if (!/^\d{1,3}$/.test(bits) || Number(bits) < 1 || Number(bits) > max) return `"${entry}": the prefix length must be a whole number from 1 to ${max}`;
  return null;
}

/** Secrets published in this repository's examples: never accepted as JWT_SECRET. */
const PLACEHOLDER_SECRETS: ReadonlySet<string> = new Set(['change-me-to-at-least-32-random-characters']);
/** A random 32-character hex secret has about 14 different characters; fewer than this is not random. */
const MIN_SECRET_DISTINCT_CHARS = 10;

/**
 * Documented in README.md and .env.example; keep the three in step. `role: 'batcher'` is the
 * standalone batcher (src/cli/batcher.ts), which signs no token and creates no staff: the settings
 * only the server reads (JWT_SECRET, BOOTSTRAP_STAFF_*) are not required or checked for it, so a
 * batcher run by hand with only the service URLs starts (probe Q: it refused without JWT_SECRET).
 */
export function loadConfig(env: Record<string, string | undefined> = process.env, opts: { role?: 'server' | 'batcher' } = {}): Config {
  const server = (opts.role ?? 'server') === 'server';
  const problems: string[] = [];
  const str = (name: string): string | null => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? null : v.trim();
  };
  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = str(name);
    if (raw === null) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be a whole number from ${min} to ${max} (got "${raw}")`);
      return def;
    }
    return n;
  };
  const bool = (name: string, def: boolean): boolean => {
    const raw = str(name);
    if (raw === null) return def;
    if (['1', 'true', 'yes', 'on'].includes(raw.toLowerCase())) return true;
    if (['0', 'false', 'no', 'off'].includes(raw.toLowerCase())) return false;
    problems.push(`${name} must be true or false (got "${raw}")`);
    return def;
  };
  const oneOf = <T extends string>(name: string, values: readonly T[], def: T): T => {
    const raw = str(name);
    if (raw === null) return def;
    const v = values.find((x) => x === raw.toLowerCase());
    if (v === undefined) problems.push(`${name} must be one of ${values.join(', ')} (got "${raw}")`);
    return v ?? def;
  };
  const url = (name: string, protocols: string[]): string | null => {
    const raw = str(name);
    if (raw === null) return null;
    try {
      const u = new URL(raw);
      if (!protocols.includes(u.protocol)) problems.push(`${name} must use ${protocols.join(' or ')} (got ${u.protocol})`);
    } catch {
      problems.push(`${name} is not a valid URL`);
    }
    return raw;
  };

  const databaseUrl = url('DATABASE_URL', ['postgres:', 'postgresql:']);
  const rabbitmqUrl = url('RABBITMQ_URL', ['amqp:', 'amqps:']);
  const redisUrl = url('REDIS_URL', ['redis:', 'rediss:']);
  if ((databaseUrl === null) !== (rabbitmqUrl === null)) {
    problems.push('full mode needs both DATABASE_URL and RABBITMQ_URL; set both, or neither for embedded mode');
  }
  const mode = databaseUrl !== null && rabbitmqUrl !== null ? 'full' : 'embedded';
  const jwtSecret = server ? str('JWT_SECRET') : null;
  if (jwtSecret !== null && jwtSecret.length < 32) problems.push('JWT_SECRET must be at least 32 characters');
  else if (jwtSecret !== null) {
    // Whoever knows the secret can sign a staff token: the placeholder of .env.example is public, and
    // a value like 'aaaa...' is guessed at once. A random one (hex, base64) has far more variety.
    const distinct = new Set(jwtSecret).size;
    if (PLACEHOLDER_SECRETS.has(jwtSecret) || /change[-_ ]?me/i.test(jwtSecret)) {
      problems.push('JWT_SECRET is the placeholder from .env.example, which anyone can read: set a random value (e.g. `openssl rand -base64 48`)');
    } else if (distinct < MIN_SECRET_DISTINCT_CHARS) {
      problems.push(`JWT_SECRET has only ${distinct} different characters: set a random value (e.g. \`openssl rand -base64 48\`)`);
    }
  }
  if (jwtSecret === null && mode === 'full' && server) {
    problems.push('JWT_SECRET is required in full mode (every instance must share it)');
  }
  const logLevel = (str('LOG_LEVEL') ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  const amqpPrefix = str('AMQP_PREFIX') ?? 'enrollment';
  const redisPrefix = str('REDIS_PREFIX') ?? 'enrollment:';
  if (!/^[A-Za-z0-9._:-]{1,100}$/.test(redisPrefix)) problems.push('REDIS_PREFIX may hold only letters, digits, ".", "_", ":" and "-"');
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(amqpPrefix)) problems.push('AMQP_PREFIX may hold only letters, digits, ".", "_" and "-"');

  const host = listenHost('HOST', str('HOST') ?? '127.0.0.1', problems);
  // Demo data (well-known passwords) only where nobody else can reach it, unless asked for by name.
  const demoData = bool('DEMO_DATA', mode === 'embedded' && isLoopbackHost(host));
  const demoDataExplicit = demoData && str('DEMO_DATA') !== null;
  const adminStaffIds: number[] = [];
  for (const part of (str('ADMIN_STAFF_IDS') ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    if (/^\d{1,10}$/.test(part) && Number(part) >= 1 && Number(part) <= 2_147_483_647) adminStaffIds.push(Number(part));
    else problems.push(`ADMIN_STAFF_IDS must be a comma-separated list of staff ids (got "${part}")`);
  }

  const bootstrapId = server ? str('BOOTSTRAP_STAFF_ID') : null;
  const bootstrapPassword = server ? (env['BOOTSTRAP_STAFF_PASSWORD'] ?? '') : '';
  let bootstrapStaff: Config['bootstrapStaff'] = null;
  if (bootstrapId !== null || bootstrapPassword !== '') {
    if (bootstrapId === null || !/^\d{1,10}$/.test(bootstrapId) || Number(bootstrapId) < 1 || Number(bootstrapId) > 2_147_483_647) {
      problems.push('BOOTSTRAP_STAFF_ID must be a staff id (a number) when BOOTSTRAP_STAFF_PASSWORD is set');
    } else {
      // The rules of every new password (the API's): this is the first staff member, usually the admin.
      const weak = newPasswordProblem(bootstrapPassword, { minPasswordLength: DEFAULT_MIN_PASSWORD_LENGTH, refusedPasswords: [DEMO_STUDENT_PASSWORD, DEMO_STAFF_PASSWORD] });
      if (weak !== null) problems.push(`BOOTSTRAP_STAFF_PASSWORD is refused: ${weak.reason}`);
      else bootstrapStaff = { id: Number(bootstrapId), password: bootstrapPassword };
    }
  }

  const trustProxy: string[] = [];
  for (const part of (str('TRUST_PROXY') ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const problem = trustProxyProblem(part);
    if (problem === null) trustProxy.push(part);
    else problems.push(`TRUST_PROXY must be empty or a comma-separated list of proxy addresses or CIDR ranges: ${problem}`);
  }

  const loginFailuresPerUser = int('LOGIN_FAILURES_PER_USER', 10, 1, 1_000_000);
  // Never below the per-address-and-account limit by default (a deployment that raised that one
  // keeps starting); set explicitly below it, one address could lock a student out everywhere.
  const loginFailuresPerUserAllAddresses = int('LOGIN_FAILURES_PER_USER_ALL_ADDRESSES', Math.max(100, loginFailuresPerUser), 1, 1_000_000);
  if (loginFailuresPerUserAllAddresses < loginFailuresPerUser) {
    problems.push('LOGIN_FAILURES_PER_USER_ALL_ADDRESSES must not be smaller than LOGIN_FAILURES_PER_USER (one address could then lock a student out everywhere)');
  }

  const config: Config = {
    host,
    bootstrapStaff,
    trustProxy,
    port: int('PORT', 8080, 0, 65535),
    jwtSecret,
    tokenTtlSeconds: int('TOKEN_TTL_MINUTES', 60, 1, 60 * 24) * 60,
    sessionMaxSeconds: int('SESSION_MAX_HOURS', 12, 1, 24 * 7) * 3600,
    maxConcurrentPasswordChecks: int('MAX_CONCURRENT_PASSWORD_CHECKS', 3, 1, 1000),
    loginQueueMs: int('LOGIN_QUEUE_MS', 5000, 0, 60_000),
    adminStaffIds,
    databaseUrl,
    rabbitmqUrl,
    redisUrl,
    redisPrefix,
    throttle: {
      loginFailuresPerUser,
      loginFailuresPerUserAllAddresses,
      loginFailuresPerAddress: int('LOGIN_FAILURES_PER_ADDRESS', 50, 1, 1_000_000),
      loginWindowMs: int('LOGIN_THROTTLE_WINDOW_SECONDS', 60, 1, 86_400) * 1000,
      studentWriteLimit: int('STUDENT_WRITE_LIMIT', 30, 0, 1_000_000),
      studentWriteWindowMs: int('STUDENT_WRITE_WINDOW_SECONDS', 10, 1, 3600) * 1000,
    },
    metrics: { host: listenHost('METRICS_HOST', str('METRICS_HOST') ?? '127.0.0.1', problems), port: int('METRICS_PORT', 0, 0, 65535) },
    enrollmentWindowMinutes: int('ENROLLMENT_WINDOW_MINUTES', 60, 1, 60 * 24 * 365),
    logLevel,
    logRequests: bool('LOG_REQUESTS', false),
    dataDir: str('DATA_DIR') ?? './data',
    // PGlite is 32-bit WebAssembly (4 GB of memory in all): 2,048 MB of buffers failed at start with
    // 'PGlite failed to initialize properly' (probe R); 1,024 leaves the rest room.
    pgliteSharedBuffersMb: int('PGLITE_SHARED_BUFFERS_MB', 16, 1, 1024),
    pgliteThread: oneOf('PGLITE_THREAD', ['main', 'worker'] as const, 'main'),
    demoData,
    demoDataExplicit,
    amqpPrefix,
    batchMaxEvents: int('BATCH_MAX_EVENTS', 2000, 1, 100_000),
    inProcessBatcher: bool('IN_PROCESS_BATCHER', true),
    batcherThread: oneOf('BATCHER_THREAD', ['main', 'worker'] as const, 'worker'),
    shutdownDrainMs: int('SHUTDOWN_DRAIN_MS', 5_000, 0, 25_000),
    backgroundNice: int('BACKGROUND_THREAD_NICE', 10, 0, 19),
    warmUpRequests: int('WARMUP_REQUESTS', mode === 'embedded' ? 0 : 3_000, 0, 100_000),
    groupCommitLingerMs: int('GROUP_COMMIT_LINGER_MS', mode === 'embedded' ? 5 : 10, 0, 1_000),
    groupCommitQuietMs: int('GROUP_COMMIT_QUIET_MS', mode === 'embedded' ? 0 : 1, 0, 1_000),
    brokerConfirmTimeoutMs: int('BROKER_CONFIRM_TIMEOUT_MS', 5_000, 100, 600_000),
    databaseQueryTimeoutMs: int('DATABASE_QUERY_TIMEOUT_MS', 30_000, 1_000, 3_600_000),
    batchLingerMs: int('BATCH_LINGER_MS', 100, 0, 10_000),
    listenBacklog: int('LISTEN_BACKLOG', 65_535, 1, 1_000_000),
    http: {
      headersTimeoutMs: int('HTTP_HEADERS_TIMEOUT_MS', 5_000, 100, 600_000),
      requestTimeoutMs: int('HTTP_REQUEST_TIMEOUT_MS', 10_000, 100, 600_000),
      keepAliveTimeoutMs: int('HTTP_KEEP_ALIVE_TIMEOUT_MS', 5_000, 100, 600_000),
      idleTimeoutMs: int('HTTP_IDLE_TIMEOUT_MS', 60_000, 1_000, 3_600_000),
      maxRequestsPerSocket: int('HTTP_MAX_REQUESTS_PER_SOCKET', 0, 0, 1_000_000_000),
      maxPipelinedRequests: int('HTTP_MAX_PIPELINED_REQUESTS', 8, 0, 1_000_000),
    },
    studentMailboxLimit: int('STUDENT_MAILBOX_LIMIT', 16, 1, 10_000),
    cluster: {
      shards: int('SHARDS', 1, 1, 1024),
      leaseTtlMs: int('LEASE_TTL_MS', 2500, 500, 60_000),
      advertiseUrl: url('ADVERTISE_URL', ['http:', 'https:']) ?? '',
      forwardWrites: bool('FORWARD_WRITES', true),
      forwardRetryMs: int('FORWARD_RETRY_MS', 8000, 0, 120_000),
    },
    webhookAllowPrivateTargets: bool('WEBHOOK_ALLOW_PRIVATE_TARGETS', false),
    webhookMaxActive: int('WEBHOOK_MAX_ACTIVE', 20, 1, 10_000),
    webhookInFlightPerWebhook: int('WEBHOOK_IN_FLIGHT_PER_WEBHOOK', 4, 1, 64),
    webhookWaitingPerWebhook: int('WEBHOOK_WAITING_PER_WEBHOOK', 60, 0, 10_000),
    mode,
  };
  if (config.mode === 'full' && config.port === 0 && config.cluster.advertiseUrl === '') {
    // Other instances forward writes to this one at its advertised address, which a port picked at
    // random cannot be; embedded mode has no peers.
    problems.push('PORT=0 (a port picked at start) needs ADVERTISE_URL in full mode: other instances forward writes to this address');
  }
  if (config.cluster.advertiseUrl === '') {
    const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : urlHost(host);
    config.cluster.advertiseUrl = `http://${h}:${config.port}`;
  }
  if (config.metrics.port !== 0 && config.metrics.port === config.port && listenersMayOverlap(config.host, config.metrics.host)) {
    // Checked here, not by the probe at start: the API's port is free until the API listens, so the
    // Prometheus listener would fail only once everything was loaded.
    problems.push(`METRICS_PORT must differ from PORT (both ${config.port}; the API listens there): choose another METRICS_PORT, or 0 for none`);
  }
  if (config.http.headersTimeoutMs > config.http.requestTimeoutMs) {
    problems.push('HTTP_HEADERS_TIMEOUT_MS must not be larger than HTTP_REQUEST_TIMEOUT_MS (the headers are part of the request)');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** What `npm run migrate` needs: a schema migration has no use for the broker or the token secret. */
export interface MigrateConfig {
  databaseUrl: string | null;
  dataDir: string;
  logLevel: string;
}

/**
 * The migration command's settings: DATABASE_URL (PostgreSQL) or else DATA_DIR (embedded), and
 * LOG_LEVEL. An operator migrating the database before the first start sets nothing else.
 */
export function loadMigrateConfig(env: Record<string, string | undefined> = process.env): MigrateConfig {
  const problems: string[] = [];
  const str = (name: string): string | null => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? null : v.trim();
  };
  const databaseUrl = str('DATABASE_URL');
  if (databaseUrl !== null) {
    try {
      const u = new URL(databaseUrl);
      if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') problems.push(`DATABASE_URL must use postgres: or postgresql: (got ${u.protocol})`);
    } catch {
      problems.push('DATABASE_URL is not a valid URL');
    }
  }
  const logLevel = (str('LOG_LEVEL') ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  if (problems.length > 0) throw new ConfigError(problems);
  return { databaseUrl, dataDir: str('DATA_DIR') ?? './data', logLevel };
}

/** What `npm run create-staff` needs: the database, and the password when not typed at a prompt. */
export interface CreateStaffConfig extends MigrateConfig {
  /** STAFF_PASSWORD, for scripts; unset: read from the terminal (not echoed) or from stdin. */
  staffPassword: string | null;
}

/**
 * `npm run create-staff` settings: as the migration's (DATABASE_URL, else the embedded files), plus
 * STAFF_PASSWORD when the password is not typed. Never logged.
 */
export function loadCreateStaffConfig(env: Record<string, string | undefined> = process.env): CreateStaffConfig {
  const base = loadMigrateConfig(env);
  const pw = env['STAFF_PASSWORD'];
  return { ...base, staffPassword: pw === undefined || pw === '' ? null : pw };
}
