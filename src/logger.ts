import { closeSync, fstatSync, openSync } from 'node:fs';
import { destination as pinoDestination, pino, stdSerializers, type Logger } from 'pino';

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
    // Fastify's request serializer, with secrets in the query string censored (Fastify lets the
    // instance's own serializers win over its defaults).
    serializers: { req: serializeRequest, err: serializeError },
  };
  return pino(opts, (destination ?? createStdoutDestination()) as never);
}

/**
 * pino's error serializer, without the arguments of a driver command an error carries: ioredis
 * puts the failed command on its errors (`command: { name, args }`), and the failed command of a
 * refused connection is `HELLO 3 AUTH <user> <password>`, so a wrong REDIS_URL password was
 * logged in clear at every retry. The command's name is kept. Causes are serialized the same way.
 */
function serializeError(err: unknown): unknown {
  const out = stdSerializers.err(err as Error) as unknown;
  return withoutCommandArgs(out, 0);
}

function withoutCommandArgs(v: unknown, depth: number): unknown {
  if (typeof v !== 'object' || v === null || depth > 5) return v;
  const o = v as Record<string, unknown>;
  const command = o.command;
  if (typeof command === 'object' && command !== null && 'args' in command) {
    o.command = { name: (command as { name?: unknown }).name };
  }
  if (o.cause !== undefined) o.cause = withoutCommandArgs(o.cause, depth + 1);
  if (Array.isArray(o.aggregateErrors)) o.aggregateErrors = o.aggregateErrors.map((e) => withoutCommandArgs(e, depth + 1));
  return o;
}

/**
 * The API's own query parameters, whose values are ids, numbers or a search text, never
 * credentials (the event streams' one-use `ticket` is left out on purpose). Any other parameter's
 * value is censored: clients put tokens in URLs under names no list of secret-looking names
 * foresees (`jwt`, `pass`, `bearer`, `s`, ...). A new route's parameter is censored until added here.
 */
const PLAIN_PARAMS = new Set(['course_id', 'group_id', 'std_id', 'department', 'q', 'limit', 'filter', 'buckets']);

/**
 * A URL as logged: the values of every query parameter that is not one of the API's own plain ones
 * replaced, since request logs (LOG_REQUESTS=true) keep the URL, and a token in it would open the
 * account to anyone reading the logs. Authorization headers and bodies are never logged at all.
 */
export function censorUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const parts = url.slice(q + 1).split('&');
  let changed = false;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    const eq = part.indexOf('=');
    let name = eq === -1 ? part : part.slice(0, eq);
    try {
      name = decodeURIComponent(name);
    } catch {
      // a malformed escape: judged as written
    }
    if (eq !== -1 && !PLAIN_PARAMS.has(name)) {
      parts[i] = `${part.slice(0, eq)}=[redacted]`;
      changed = true;
    }
  }
  return changed ? `${url.slice(0, q)}?${parts.join('&')}` : url;
}

interface LoggedRequest {
  method?: string;
  url?: string;
  headers?: Record<string, unknown>;
  host?: string;
  ip?: string;
  socket?: { remotePort?: number };
}

/** Fastify's `req` serializer (the same fields), with {@link censorUrl} applied to the URL. */
function serializeRequest(req: LoggedRequest): Record<string, unknown> {
  return {
    method: req.method,
    url: typeof req.url === 'string' ? censorUrl(req.url) : req.url,
    version: req.headers?.['accept-version'],
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}

/** Write errors sonic-boom retries by itself: the output is only busy. */
const RETRIED = new Set(['EAGAIN', 'EBUSY']);

/**
 * Standard output as pino writes it by default (sonic-boom, synchronous), except that output that
 * has gone away stops logging instead of breaking the process. `npm start` leaves the engine
 * writing to the terminal it was started from; once that terminal is closed (a window shut, an
 * ssh session dropped), every write fails with EIO. pino only forgives EPIPE: any other error is
 * re-emitted with no listener, so the log call itself threw, in the middle of a shutdown, and the
 * process never exited (a black-box probe: still running 45 s after SIGTERM). Here any such error
 * (EIO, EPIPE, EBADF, ...) turns the destination into a sink that drops lines; the engine carries on.
 * After an EIO (a terminal hung up) the descriptor is also pointed at /dev/null, see
 * {@link releaseDeadTerminal}.
 */
export function createStdoutDestination(fd = 1): ReturnType<typeof pinoDestination> {
  const stream = pinoDestination({ fd, sync: true });
  let gone = false;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (gone || RETRIED.has(err.code ?? '')) return;
    gone = true;
    const s = stream as unknown as Record<string, unknown>;
    s.write = () => true;
    s.flush = (cb?: (err?: Error) => void) => cb?.();
    s.flushSync = () => undefined;
    s.end = () => undefined;
    if (err.code === 'EIO') releaseDeadTerminal(fd);
  });
  return stream;
}

/**
 * Node restores a terminal's settings at exit on every standard descriptor that was a terminal at
 * start, and aborts the process (SIGABRT, status 134) when that fails with EIO, as it does on a
 * terminal that hung up: a clean shutdown would end looking like a crash. Node skips a descriptor
 * that has been closed or now names another file, so the dead terminal's descriptor (and stderr,
 * when it is the same terminal) is reopened on /dev/null: open() takes the lowest free number, the
 * one just closed. Should another thread take that number in between, it is left to that thread's
 * file (Node skips it as "another file" too) and the /dev/null copy is closed again.
 */
function releaseDeadTerminal(fd: number): void {
  let same: number[] = [fd];
  try {
    const st = fstatSync(fd);
    for (const other of [1, 2]) {
      if (other === fd) continue;
      try {
        const o = fstatSync(other);
        if (o.dev === st.dev && o.ino === st.ino && o.rdev === st.rdev) same = [...same, other];
      } catch {
        // closed already
      }
    }
  } catch {
    return; // the descriptor is closed already: Node skips it
  }
  for (const d of same) {
    try {
      closeSync(d);
      const reopened = openSync('/dev/null', 'w');
      if (reopened !== d) closeSync(reopened);
    } catch {
      // nothing more to do: at worst the descriptor stays closed, which Node also skips
    }
  }
}

export type { Logger };
