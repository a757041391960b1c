import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isEngineError } from '../errors.js';
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
 */

const CLIENT_ERROR_CODES: Record<number, string> = {
  400: 'BAD_REQUEST',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  406: 'NOT_ACCEPTABLE',
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

/** Installs the error and not-found handlers on the root instance, so every route and plugin shares them. */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const { status, body } = toErrorReply(err);
    if (status === 503) request.log.warn({ err, code: body.code }, 'request refused: unavailable (storage away or mailbox full)');
    else if (status >= 500) request.log.error({ err, code: body.code }, 'request failed');
    else request.log.debug({ code: body.code, reason: body.reason }, 'request refused');
    if (isEngineError(err) && err.retryAfterSeconds !== undefined) void reply.header('retry-after', String(err.retryAfterSeconds));
    void reply.header(REQUEST_ID_HEADER, request.id).code(status).send(body);
  });

  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const url = request.url.length > 200 ? `${request.url.slice(0, 200)}...` : request.url;
    const body: ErrorBodyT = { reason: `no route ${request.method} ${url}`, code: 'NOT_FOUND' };
    void reply.header(REQUEST_ID_HEADER, request.id).code(404).send(body);
  });
}
