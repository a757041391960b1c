import { pino, type Logger } from 'pino';

/**
 * One pino root logger; modules take `logger.child({ module })`. Secrets are redacted here, once,
 * so no module can leak a password, hash or token by logging a whole object.
 */
export const REDACT_PATHS = [
  'password',
  'passwordHash',
  '*.password',
  '*.passwordHash',
  '*.*.passwordHash',
  'token',
  '*.token',
  'jwtSecret',
  '*.jwtSecret',
  'req.headers.authorization',
  'headers.authorization',
];

export function createLogger(level: string, destination?: { write(msg: string): void }): Logger {
  const opts = {
    level,
    base: { service: 'enrollment' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(opts, destination as never) : pino(opts);
}

export type { Logger };
