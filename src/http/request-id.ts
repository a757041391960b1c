import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/**
 * Request ids tie a reply, its log lines and the transitions it caused together. A caller (or a
 * proxy) may supply one in `x-request-id`; it is reduced to a safe alphabet and length first,
 * because it ends up in logs, in response headers and in the durable transition log.
 */
/** Read from requests and echoed on every reply, so callers can quote it in bug reports. */
export const REQUEST_ID_HEADER = 'x-request-id';
const MAX_LENGTH = 100;
const UNSAFE = /[^A-Za-z0-9._:@/+=-]/g;

/** Strips characters unsafe in headers and logs and caps the length; null when nothing usable is left. */
export function sanitizeRequestId(raw: string | string[] | undefined): string | null {
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (value === undefined) return null;
  const clean = value.replace(UNSAFE, '').slice(0, MAX_LENGTH);
  return clean.length > 0 ? clean : null;
}

/** Fastify's `genReqId`: the caller's id when usable, else a fresh UUID. */
export function genReqId(req: IncomingMessage): string {
  return sanitizeRequestId(req.headers[REQUEST_ID_HEADER]) ?? randomUUID();
}
