import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';

/**
 * Starts a server-sent event stream (`GET /me/events`, `GET /admin/events`): hijacks the reply and
 * sends status 200 with the headers already set on it (request id, security headers) and the
 * stream's own.
 *
 * Fastify answers HEAD with each GET route's handler. An event stream never ends by itself, and
 * Node sends a HEAD response's head only at its end, so a HEAD that reached the stream was never
 * answered while it held one of the caller's stream slots (probe L, finding 3: four such HEADs got
 * the student's own feed refused 429). A HEAD therefore ends here, at once, with the head a GET
 * would have and no body; the caller must not count it as a stream. The caller runs every check a
 * GET gets (authentication, the stream caps) before this, so a HEAD gets the same refusals.
 *
 * @returns the response to write events to, or null when the request was a HEAD and is answered.
 */
export function startEventStream(request: FastifyRequest, reply: FastifyReply): ServerResponse | null {
  reply.hijack();
  const res = reply.raw;
  const headers: Record<string, string | number | string[]> = {};
  for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) headers[k] = v;
  const head = request.method === 'HEAD';
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
    // A HEAD is one ordinary exchange: Node keeps or closes the connection as the client asked.
    ...(head ? {} : { connection: 'keep-alive' }),
  });
  if (head) {
    res.end();
    return null;
  }
  return res;
}
