/**
 * The only reader of `process.env`. Every variable is validated at start and all problems are
 * reported together, so an operator fixes a bad deployment in one go instead of one crash at a time.
 */

export interface Config {
  host: string;
  port: number;
  /** HS256 secret shared by every instance; in embedded mode generated once under dataDir if unset. */
  jwtSecret: string | null;
  tokenTtlSeconds: number;
  databaseUrl: string | null;
  rabbitmqUrl: string | null;
  redisUrl: string | null;
  enrollmentWindowMinutes: number;
  logLevel: string;
  /** One log line per request and per response; off by default (a registration rush is millions). */
  logRequests: boolean;
  /** Embedded mode's files (PGlite data, generated secret). */
  dataDir: string;
  /** Load the demo data set into an empty store at start. */
  demoData: boolean;
  /** Prefix for RabbitMQ queue/stream names, so test runs and deployments never collide. */
  amqpPrefix: string;
  /** Upper bound of events per group commit / batch. */
  batchMaxEvents: number;
  /** Run the batcher inside the server process (full mode). */
  inProcessBatcher: boolean;
  /** Requests one student may have waiting or running at once; past it: 503 OVERLOADED + Retry-After. */
  studentMailboxLimit: number;
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

/** Documented in README.md and .env.example; keep the three in step. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
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
  const jwtSecret = str('JWT_SECRET');
  if (jwtSecret !== null && jwtSecret.length < 32) problems.push('JWT_SECRET must be at least 32 characters');
  if (jwtSecret === null && mode === 'full') {
    problems.push('JWT_SECRET is required in full mode (every instance must share it)');
  }
  const logLevel = (str('LOG_LEVEL') ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  const amqpPrefix = str('AMQP_PREFIX') ?? 'enrollment';
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(amqpPrefix)) problems.push('AMQP_PREFIX may hold only letters, digits, ".", "_" and "-"');

  const config: Config = {
    host: str('HOST') ?? '0.0.0.0',
    port: int('PORT', 8080, 0, 65535),
    jwtSecret,
    tokenTtlSeconds: int('TOKEN_TTL_MINUTES', 60, 1, 60 * 24 * 30) * 60,
    databaseUrl,
    rabbitmqUrl,
    redisUrl,
    enrollmentWindowMinutes: int('ENROLLMENT_WINDOW_MINUTES', 60, 1, 60 * 24 * 365),
    logLevel,
    logRequests: bool('LOG_REQUESTS', false),
    dataDir: str('DATA_DIR') ?? './data',
    demoData: bool('DEMO_DATA', mode === 'embedded'),
    amqpPrefix,
    batchMaxEvents: int('BATCH_MAX_EVENTS', 2000, 1, 100_000),
    inProcessBatcher: bool('IN_PROCESS_BATCHER', true),
    studentMailboxLimit: int('STUDENT_MAILBOX_LIMIT', 16, 1, 10_000),
    mode,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
