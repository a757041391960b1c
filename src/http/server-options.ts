import type { ServerOptions } from 'node:http';

/**
 * Connection limits for a registration rush. Node's HTTP server, as Fastify sets it up, waits
 * for ever for a client that trickles its request (`requestTimeout` 0) and keeps idle keep-alive
 * sockets for 72 s; a few hundred slow clients then hold the server while thousands of students
 * wait. These limits cut a trickling client off in seconds and keep idle sockets short, without
 * touching a request that arrives at network speed.
 */
export interface HttpLimits {
  /** The request line and headers must arrive within this (Node answers 408 and closes). */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this (Node answers 408 and closes). */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A socket with no traffic in either direction for this long is destroyed (live feeds ping well within it). */
  idleTimeoutMs: number;
  /** Requests served on one keep-alive connection before it is closed (0: no limit). */
  maxRequestsPerSocket: number;
}

/** The defaults, documented in README.md and .env.example. */
export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 60_000,
  maxRequestsPerSocket: 0,
};

/**
 * How often Node checks the header and request deadlines. Node's default is 30 s, so a 10 s
 * limit would in practice be anything up to 40 s; checking every second keeps the limits what
 * they say. The check walks the open connections only, which is cheap next to serving them.
 */
export function checkIntervalMs(limits: HttpLimits): number {
  return Math.max(100, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 2)));
}

/** The Fastify (and through `http`, Node `http.Server`) options that carry {@link HttpLimits}. */
export function fastifyServerOptions(limits: HttpLimits): {
  connectionTimeout: number;
  keepAliveTimeout: number;
  requestTimeout: number;
  maxRequestsPerSocket: number;
  http: ServerOptions;
} {
  return {
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    maxRequestsPerSocket: limits.maxRequestsPerSocket,
    http: {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: checkIntervalMs(limits),
      noDelay: true,
    },
  };
}

/**
 * Where and how the server listens. The backlog matters on registration day: with Node's default
 * of 511, a storm of new connections overflows the kernel's accept queue while the event loop is
 * busy, and each dropped SYN costs the student a 1 s (then 3 s) retransmission. The kernel caps
 * the value at net.core.somaxconn, as it does for Go's listener, which asks for that maximum.
 */
export function listenOptions(o: { host: string; port: number; backlog: number }): { host: string; port: number; backlog: number } {
  return { host: o.host, port: o.port, backlog: o.backlog };
}
