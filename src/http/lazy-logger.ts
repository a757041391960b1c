import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions, Level, LevelWithSilent } from 'pino';

type Method = (this: unknown, ...args: unknown[]) => void;

/**
 * A request's logger that builds its pino child (with the request id bound) only when a line is
 * actually written. Fastify makes one child per request; with redaction configured, pino's `child`
 * serializes and redacts the bindings at once, which cost more per request than the student's whole
 * enrollment decision, while at the production level (`info` with request logging off) almost no
 * request ever writes a line. Lines that are written are exactly those of `parent.child(bindings)`.
 */
class LazyChildLogger {
  private real: FastifyBaseLogger | null = null;

  constructor(
    private readonly parent: FastifyBaseLogger & { isLevelEnabled(level: string): boolean },
    private readonly bindings: Bindings,
  ) {}

  private resolve(): FastifyBaseLogger {
    this.real ??= this.parent.child(this.bindings);
    return this.real;
  }

  get level(): LevelWithSilent | string {
    return this.real?.level ?? this.parent.level;
  }

  set level(level: LevelWithSilent | string) {
    this.resolve().level = level;
  }

  private write(level: Level, args: unknown[]): void {
    if (this.real === null && !this.parent.isLevelEnabled(level)) return;
    (this.resolve()[level] as unknown as Method)(...args);
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }

  error(...args: unknown[]): void {
    this.write('error', args);
  }

  warn(...args: unknown[]): void {
    this.write('warn', args);
  }

  info(...args: unknown[]): void {
    this.write('info', args);
  }

  debug(...args: unknown[]): void {
    this.write('debug', args);
  }

  trace(...args: unknown[]): void {
    this.write('trace', args);
  }

  silent(): void {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.resolve().child(bindings, options);
  }
}

/**
 * Fastify's `childLoggerFactory`. Routes with their own options (a `logLevel`, say) get a real child
 * at once, since their level differs from the parent's.
 */
export function lazyChildLoggerFactory(
  logger: FastifyBaseLogger,
  bindings: Bindings,
  options: ChildLoggerOptions,
): FastifyBaseLogger {
  const parent = logger as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean };
  if (Object.keys(options).length > 0 || typeof parent.isLevelEnabled !== 'function') return logger.child(bindings, options);
  return new LazyChildLogger(parent as FastifyBaseLogger & { isLevelEnabled(level: string): boolean }, bindings) as unknown as FastifyBaseLogger;
}
