import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import FindMyWay, { type HTTPMethod } from 'find-my-way';
import { isEngineError, type ErrorCode } from '../errors.js';
import { REQUEST_ID_HEADER } from './request-id.js';
import type { ErrorBodyT } from './schemas.js';

/**
 * The one place errors become replies, so every error a client sees has the same shape,
 * `{"reason", "code", ...details}` (the Go service's `{"reason"}` plus a stable code):
 *
 * - EngineError: its own status and code (rule rejections, auth, 404s, 503 for storage);
 * - request validation: 400 BAD_REQUEST with what was wrong;
 * - other client errors Fastify raises (bad JSON, body too large, wrong media type): their 4xx;
 * - anything else is a bug: 500 INTERNAL with a fixed reason, logged with the `err` key so the
 *   stack is in the logs and nothing internal leaks to the client.
 *
 * On the Go service's routes (SPEC section 5 table, marked with {@link markGoCompatible}) the
 * status is the Go service's: every refusal it answered 400 (rule rejections, unknown section or
 * student: our 403/404/409) is 400, and a role mismatch (FORBIDDEN) is 401. The body keeps the
 * same `reason` and `code`, so nothing is lost. Its clients treat 400 as "refused, show the
 * reason" and anything else as "try again"; 503 and 429 therefore keep their status.
 */

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A route of the Go service's API (SPEC section 5 table): errors get the Go status codes. */
    goCompat?: boolean;
  }
}

/** Marks every route the calling plugin registers after this call as a Go-compatible route. */
export function markGoCompatible(app: { addHook(name: 'onRoute', hook: (route: RouteOptions) => void): unknown }): void {
  app.addHook('onRoute', (route: RouteOptions) => {
    route.config = { ...route.config, goCompat: true };
  });
}

/** The Go service's status for one of our statuses on its routes. */
export function goStatus(status: number, code: string): number {
  if (code === 'FORBIDDEN') return 401;
  if (status === 403 || status === 404 || status === 409) return 400;
  return status;
}

/** The code for a 4xx that Fastify or Node's parser raised, by status; every one is listed in src/errors.ts. */
export const CLIENT_ERROR_CODES: Readonly<Record<number, ErrorCode>> = {
  400: 'BAD_REQUEST',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  406: 'NOT_ACCEPTABLE',
  408: 'REQUEST_TIMEOUT',
  411: 'LENGTH_REQUIRED',
  413: 'PAYLOAD_TOO_LARGE',
  414: 'URI_TOO_LONG',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  431: 'HEADERS_TOO_LARGE',
};

interface ErrorLike {
  message?: unknown;
  statusCode?: unknown;
  validation?: unknown;
}

/** Maps any thrown value to the status and body the client gets; pure, so it is easy to reason about. */
export function toErrorReply(err: unknown): { status: number; body: ErrorBodyT } {
  if (isEngineError(err)) {
    // Details of a server-side failure (e.g. a driver's message naming a host) stay in the logs.
    const details = err.statusCode < 500 ? err.details : undefined;
    return { status: err.statusCode, body: { ...details, reason: err.message, code: err.code } };
  }
  const e = (typeof err === 'object' && err !== null ? err : {}) as ErrorLike;
  const message = typeof e.message === 'string' && e.message.length > 0 ? e.message : 'bad request';
  if (e.validation !== undefined) return { status: 400, body: { reason: message, code: 'BAD_REQUEST' } };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { status: e.statusCode, body: { reason: message, code: CLIENT_ERROR_CODES[e.statusCode] ?? 'BAD_REQUEST' } };
  }
  return { status: 500, body: { reason: 'internal error', code: 'INTERNAL' } };
}

/** Methods a 405's `Allow` may name, in the order it names them. */
const ALLOW_ORDER: readonly HTTPMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/**
 * Installs the error and not-found handlers on the root instance, so every route and plugin shares
 * them. Call before any route is added: a path served under other methods than the one asked is
 * answered 405 with `Allow` (as HTTP says, and as the Go service's router did), not 404, so a
 * client that sent POST where PUT was meant is told so; the routes are recorded as they are added.
 * A path whose route serves the method asked but found nothing there (a wildcard static route) is
 * a 404.
 */
export function installErrorHandlers(app: FastifyInstance, routerOptions: { ignoreTrailingSlash?: boolean } = {}): void {
  const known = FindMyWay({ ignoreTrailingSlash: routerOptions.ignoreTrailingSlash ?? false });
  const noop = (): void => undefined;
  app.addHook('onRoute', (route) => {
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) {
      const m = method.toUpperCase() as HTTPMethod;
      if (!ALLOW_ORDER.includes(m) || known.hasRoute(m, route.url)) continue;
      known.on(m, route.url, noop);
    }
  });
  const allowedMethods = (url: string): HTTPMethod[] => {
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    return ALLOW_ORDER.filter((m) => known.find(m, path) !== null);
  };

  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const own = toErrorReply(err);
    const body = own.body;
    const status = request.routeOptions.config?.goCompat ? goStatus(own.status, body.code) : own.status;
    // A login flood refused by the password-check cap is expected load, not a fault: no line per refusal.
    if (body.code === 'LOGIN_BUSY') request.log.debug({ code: body.code }, 'request refused: password checks at capacity');
    else if (status === 503) request.log.warn({ err, code: body.code }, 'request refused: unavailable (storage away, not the owner, or a queue full)');
    else if (status >= 500) request.log.error({ err, code: body.code }, 'request failed');
    else request.log.debug({ code: body.code, reason: body.reason }, 'request refused');
    // Load shedding (a full queue, the password-check cap) says when to come back; so does every
    // other 503 (a broker or database away, an ownership change): a second unless it says otherwise.
    if (isEngineError(err) && err.retryAfterSeconds !== undefined) void reply.header('retry-after', String(err.retryAfterSeconds));
    else if (status === 503) void reply.header('retry-after', '1');
    void reply.header(REQUEST_ID_HEADER, request.id).code(status).send(body);
  });

  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const url = request.url.length > 200 ? `${request.url.slice(0, 200)}...` : request.url;
    const allowed = allowedMethods(request.url);
    // 405 only when the method is not among those the path is served under. A route that serves
    // this method and still found nothing (the docs' `/docs/static/*` for a file that is not there,
    // which calls the not-found handler) is a 404: a 405 saying "GET is not allowed; allowed: GET,
    // HEAD" contradicted itself (probe O2).
    if (allowed.length > 0 && !allowed.includes(request.method as HTTPMethod)) {
      const body: ErrorBodyT = { reason: `${request.method} is not allowed on ${url}; allowed: ${allowed.join(', ')}`, code: 'METHOD_NOT_ALLOWED' };
      void reply.header(REQUEST_ID_HEADER, request.id).header('allow', allowed.join(', ')).code(405).send(body);
      return;
    }
    const body: ErrorBodyT = { reason: allowed.length > 0 ? `nothing found at ${url}` : `no route ${request.method} ${url}`, code: 'NOT_FOUND' };
    void reply.header(REQUEST_ID_HEADER, request.id).code(404).send(body);
  });
}

/**
 * Fastify's `frameworkErrors`: a URL it cannot decode (`GET /%`), a path parameter over its length
 * limit. Fastify answered these itself, in its own shape (`{"error", "message", "statusCode"}`) and
 * without the security headers; they go through {@link toErrorReply} like every other error and
 * get the headers every other reply has.
 */
export function createFrameworkErrorHandler(headers: Readonly<Record<string, string>>): (err: Error, request: FastifyRequest, reply: FastifyReply) => void {
  return (err, request, reply) => {
    const { status, body } = toErrorReply(err);
    request.log.debug({ err, code: body.code }, 'request refused before routing');
    void reply.headers(headers).header(REQUEST_ID_HEADER, request.id).code(status).send(body);
  };
}

/** The raw answers to requests Node could not parse, by status, in the one error shape. */
function rawClientError(status: 400 | 408 | 431, reason: string, headers: Readonly<Record<string, string>>): string {
  const body = JSON.stringify({ reason, code: CLIENT_ERROR_CODES[status] });
  const text = STATUS_CODES[status] ?? '';
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return (
    `HTTP/1.1 ${status} ${text}\r\n${lines}Content-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

/**
 * Fastify's `clientErrorHandler`, for what Node's parser refuses before there is a request (a
 * malformed request line or header, a request or its headers arriving too slowly, headers over the
 * size limit): as Fastify's own handler does, one raw answer and the connection closed, but in the
 * one error shape and with the security headers.
 */
export function createClientErrorHandler(headers: Readonly<Record<string, string>>): (err: NodeJS.ErrnoException, socket: Duplex) => void {
  const answers = {
    400: rawClientError(400, 'the request could not be parsed as HTTP/1.1', headers),
    408: rawClientError(408, 'the request did not arrive in time', headers),
    431: rawClientError(431, 'the request headers are too large', headers),
  };
  return (err, socket) => {
    // A reset connection is gone already (as in Fastify's handler): nothing to answer.
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    if (socket.writable) socket.write(answers[status]);
    socket.destroy(err);
  };
}
