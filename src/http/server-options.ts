import type { IncomingMessage, Server, ServerOptions, ServerResponse } from 'node:http';
import { createServer, isIP, type Socket } from 'node:net';

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
  /**
   * Requests one connection may have waiting for their answers at once (HTTP/1.1 pipelining); a
   * connection that sends more is closed (0: no limit). See {@link admitPipelined}.
   */
  maxPipelinedRequests: number;
}

/** The defaults, documented in README.md and .env.example. */
export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 60_000,
  maxRequestsPerSocket: 0,
  maxPipelinedRequests: 8,
};

/**
 * How often Node checks the header and request deadlines. Node's default is 30 s, so a 10 s
 * limit would in practice be anything up to 40 s; checking every second keeps the limits what
 * they say. The check walks the open connections only, which is cheap next to serving them.
 */
export function checkIntervalMs(limits: HttpLimits): number {
  return Math.max(100, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 2)));
}

const kPipeline = Symbol('pipelinedRequests');

interface PipelineState {
  /** Requests admitted on this connection and not answered yet (the first of them is running). */
  waiting: number;
  /** The admitted requests after the running one, in arrival order, each waiting for its turn (made when one has to wait). */
  queue: (() => void)[] | null;
  /** Over the bound: nothing more of this connection is served; it closes once the running request is answered. */
  refused: boolean;
}

/**
 * Orders and bounds HTTP/1.1 pipelining; called first thing for every request (the app's onRequest
 * hook), with `run` to serve it and `refuse` to drop it unserved.
 *
 * Order: Node parses every request a client has sent in one read and hands each to the app at
 * once, so a request without a body (a `GET`, a `DELETE`) reached the engine before an earlier
 * `PUT` whose body was still being read: a pipelined enroll, list, drop ran as list, drop, enroll.
 * Each request now waits until the one before it on the same connection has been answered (the
 * answers go out in that order anyway), so a connection's requests run in the order they were sent.
 *
 * Bound: a client that wrote hundreds of requests on each of its connections and never read (no
 * token needed: `GET /docs/json` answers 106 KB) made the engine hold gigabytes and stall everyone
 * else. A connection with more than `max` requests unanswered (0: no bound) stops being read; the
 * request over the bound and those still waiting their turn are not served (nothing of them is
 * done), the one running is answered, and then the connection is closed. (Before, the connection
 * was destroyed at once, and a write already running was done without its answer reaching the
 * client.) Browsers do not pipeline, and a client that does rarely has more than a few requests out.
 */
export function admitPipelined(req: IncomingMessage, res: ServerResponse, max: number, run: () => void, refuse: () => void): void {
  const socket = req.socket as Socket & { [kPipeline]?: PipelineState };
  const st = (socket[kPipeline] ??= { waiting: 0, queue: null, refused: false });
  if (st.refused || socket.destroyed) {
    refuse();
    return;
  }
  if (max > 0 && st.waiting >= max) {
    st.refused = true;
    socket.pause();
    refuse();
    return;
  }
  st.waiting += 1;
  // A response emits 'close' once it is answered or its connection is gone, whichever comes first.
  res.once('close', () => {
    st.waiting -= 1;
    if (st.refused) {
      for (const waiting of st.queue?.splice(0) ?? []) waiting();
      socket.end();
      return;
    }
    st.queue?.shift()?.();
  });
  if (st.waiting === 1) run();
  else (st.queue ??= []).push(() => (st.refused || socket.destroyed ? refuse() : run()));
}

/**
 * With `maxRequestsPerSocket`, Node answers the last request a socket may carry with
 * `Connection: close` but leaves the socket open until the keep-alive timeout, and answers anything
 * more sent on it with a bare 503 (no body, no code; probe R). This closes the connection once that
 * last answer has gone out. For every server that takes {@link HttpLimits} (the API, the metrics listener).
 */
export function closeAfterLastRequest(server: Server, maxRequestsPerSocket: number): void {
  if (maxRequestsPerSocket <= 0) return;
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    if ((res as ServerResponse & { maxRequestsOnConnectionReached?: boolean }).maxRequestsOnConnectionReached !== true) return;
    // Taken now: Node detaches the socket from the response as it finishes.
    const socket = res.socket;
    res.once('finish', () => socket?.end());
  });
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
      // Node answers an HTTP/1.1 request without Host with a bare 400 (no reason, no code, no
      // security headers); the app refuses it itself, in the one error shape (app.ts).
      requireHostHeader: false,
    },
  };
}

/**
 * Why the server could not listen on `host`:`port`, in words an operator acts on, or null when it
 * can. Asked before the engine opens its store (loading a large term takes seconds, the demo data
 * more), so a port already taken (a second engine, another service), a host name that does not
 * resolve, or one that is not an address of this machine is said at once, not after the load with
 * a stack trace. Binds and closes a throw-away listener (with PORT=0 too, on a port the system
 * picks: the host is checked all the same): another process may still take the port before the
 * real listen, which says the same through {@link listenRefusal}.
 */
export async function portRefusal(host: string, port: number, names: ListenSettingNames = API_LISTEN_SETTINGS): Promise<string | null> {
  const probe = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ host, port, exclusive: true }, resolve);
    });
    return null;
  } catch (err) {
    return listenRefusal(err, host, port, names);
  } finally {
    if (probe.listening) await new Promise<void>((r) => probe.close(() => r()));
  }
}

/**
 * The settings a listener's address comes from, named in its refusals: the API's `HOST`/`PORT`, or
 * the Prometheus listener's `METRICS_HOST`/`METRICS_PORT`, so the operator knows which to change.
 */
export interface ListenSettingNames {
  host: string;
  port: string;
}

/** The API listener's settings. */
export const API_LISTEN_SETTINGS: ListenSettingNames = { host: 'HOST', port: 'PORT' };
/** The Prometheus listener's settings (src/metrics/server.ts). */
export const METRICS_LISTEN_SETTINGS: ListenSettingNames = { host: 'METRICS_HOST', port: 'METRICS_PORT' };

/** The operator's reading of a failed listen (see {@link portRefusal}); null for an error that is not about the address. */
export function listenRefusal(err: unknown, host: string, port: number, names: ListenSettingNames = API_LISTEN_SETTINGS): string | null {
  const hostSetting = names.host;
  const portSetting = names.port;
  switch ((err as NodeJS.ErrnoException | null)?.code) {
    case 'EADDRINUSE':
      return `port ${port} on ${host} is in use by another process (another engine?): stop it, or choose another ${portSetting}`;
    case 'EACCES':
      return `port ${port} on ${host} needs privileges this process does not have: choose a ${portSetting} above 1023`;
    case 'EADDRNOTAVAIL': {
      // A name: say what it resolved to, the address that is not this machine's.
      const address = (err as { address?: unknown }).address;
      const resolved = isIP(host) === 0 && typeof address === 'string' && address !== host ? ` (it resolves to ${address})` : '';
      return `${hostSetting} ${host} is not an address of this machine${resolved}: use 127.0.0.1, 0.0.0.0 or one of its addresses`;
    }
    // getaddrinfo's answers for a HOST that is a name (net reports them as errno codes).
    case 'ENOTFOUND':
    case 'ENODATA':
    case 'EAI_NONAME':
    case 'EAI_NODATA':
    case 'EAI_FAIL':
      return `${hostSetting} ${host} is not a name this machine resolves: use 127.0.0.1, localhost, 0.0.0.0 or one of its addresses`;
    case 'EAI_AGAIN':
      return `${hostSetting} ${host} could not be resolved (the name server did not answer): use 127.0.0.1, 0.0.0.0 or one of this machine's addresses`;
    case 'EAFNOSUPPORT':
      return `${hostSetting} ${host} is an IPv6 address and IPv6 is not available on this machine: use 127.0.0.1 or 0.0.0.0`;
    default:
      return null;
  }
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
