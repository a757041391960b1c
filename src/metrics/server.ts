import { createServer, STATUS_CODES, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../logger.js';
import { securityHeaders } from '../http/security-headers.js';
import { admitPipelined, closeAfterLastRequest, DEFAULT_HTTP_LIMITS, fastifyServerOptions, listenRefusal, METRICS_LISTEN_SETTINGS, portRefusal, type HttpLimits } from '../http/server-options.js';
import { renderMetrics } from './registry.js';

/**
 * The Prometheus listener (`METRICS_PORT`): `GET /metrics` without a token, on its own port so it
 * can stay on a private network (compose: reachable by Prometheus only, not published) while the
 * API's `/metrics` asks for a staff token. Anything else is a 404.
 *
 * It keeps the API's connection limits (`HTTP_*`, src/http/server-options.ts) and security headers:
 * with Node's defaults a client that sent nothing, or trickled its headers, held a connection for
 * about a minute, and 500 idle ones stayed open past 75 s, on a port that needs no token.
 */
export async function startMetricsServer(opts: { host: string; port: number; logger: Logger; limits?: HttpLimits }): Promise<Server> {
  const log = opts.logger.child({ module: 'metrics' });
  const limits = opts.limits ?? DEFAULT_HTTP_LIMITS;
  const headers = securityHeaders();
  const node = fastifyServerOptions(limits);
  const server = createServer(node.http, (req, res) => {
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    admitPipelined(
      req,
      res,
      limits.maxPipelinedRequests,
      () => serve(req.method, req.url, res),
      // Over the pipelining bound: not answered; the connection closes once the running one is.
      () => undefined,
    );
  });
  const serve = (method: string | undefined, url: string | undefined, res: ServerResponse) => {
    if (method !== 'GET' || (url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    renderMetrics().then(
      ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
      (err: unknown) => {
        log.error({ err }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  };
  // As the API's server: Node enforces these through the options above and these properties.
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = node.keepAliveTimeout;
  server.maxRequestsPerSocket = node.maxRequestsPerSocket;
  closeAfterLastRequest(server, node.maxRequestsPerSocket);
  // A socket with no traffic either way for this long is destroyed (Fastify's connectionTimeout).
  server.setTimeout(node.connectionTimeout);
  server.on('clientError', clientErrorAnswer(headers));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  log.info({ address: addr }, 'metrics listener for Prometheus');
  return server;
}

/**
 * Why the Prometheus listener could not listen on `host`:`port` (a port in use, a name that does
 * not resolve, ...), naming METRICS_PORT / METRICS_HOST, or null when it can: asked at the start
 * of a process, before it opens or loads anything, as for the API's PORT / HOST.
 */
export function metricsAddressRefusal(host: string, port: number): Promise<string | null> {
  return portRefusal(host, port, METRICS_LISTEN_SETTINGS);
}

/** {@link metricsAddressRefusal}'s reading of a listen that failed all the same (taken since); null for another error. */
export function metricsListenRefusal(err: unknown, host: string, port: number): string | null {
  return listenRefusal(err, host, port, METRICS_LISTEN_SETTINGS);
}

/**
 * What Node's parser refuses before there is a request (headers or body too slow, malformed,
 * headers too large): one answer with the security headers, then the connection is closed, as
 * Node's default handler does without them.
 */
function clientErrorAnswer(headers: Readonly<Record<string, string>>): (err: NodeJS.ErrnoException, socket: Duplex) => void {
  const answer = (status: 400 | 408 | 431): string => {
    const body = `${STATUS_CODES[status] ?? ''}\n`;
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${lines}Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
  };
  const answers = { 400: answer(400), 408: answer(408), 431: answer(431) };
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    // Not in the middle of an answer already on its way.
    if (socket.writable && (socket as Duplex & { bytesWritten?: number }).bytesWritten === 0) socket.write(answers[status]);
    socket.destroy(err);
  };
}
