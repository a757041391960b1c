import http from 'node:http';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { EngineError } from '../errors.js';
import { shardOfCourse, type ClusterMembership } from '../persistence/types.js';
import { REQUEST_ID_HEADER } from './request-id.js';

/**
 * Any instance answers any request (docs/scale-out.md, section 4): a write for a shard another
 * instance owns is sent, as it came (method, path, body, Authorization, request id), over HTTP to
 * the owner's address recorded with its lease, and the owner's reply is relayed unchanged. Then
 * this instance waits until its read copy has consumed the log past the owner's reply, so the
 * client's next read here shows its change.
 *
 * A forward is retried only when nothing can have been done: the connection was refused, or the
 * target said NOT_OWNER (it refuses before deciding). A forward that broke after it was sent is
 * answered 503 (outcome unknown), as a lost broker confirm is.
 */

/** Marks a request forwarded once; an instance that does not own the shard then refuses it instead of forwarding again. */
export const FORWARDED_HEADER = 'x-engine-forwarded';

export interface ForwardingOptions {
  cluster: ClusterMembership;
  /** How long a forward keeps retrying while the owner cannot be reached or changes (ms). */
  retryMs: number;
  /** Longest wait for the read copy after a forwarded write (ms). */
  syncTimeoutMs?: number;
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Writes that change no shard: token issue and refresh, and the admin feed's one-use ticket. */
const LOCAL_PATHS = new Set(['/login', '/refresh', '/admin/feed-ticket']);

interface Relayed {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function courseOf(request: FastifyRequest): number | null {
  for (const src of [request.params, request.body, request.query] as unknown[]) {
    if (typeof src !== 'object' || src === null) continue;
    const o = src as Record<string, unknown>;
    // A swap is routed by the section it enrolls in (docs/swap.md: decided first, by that owner).
    const nested = [o.info, o.enroll].find((v): v is Record<string, unknown> => typeof v === 'object' && v !== null);
    const raw = o.courseId ?? o.course_id ?? nested?.course_id;
    const n = typeof raw === 'string' ? Number(raw) : raw;
    if (typeof n === 'number' && Number.isSafeInteger(n)) return n;
  }
  return null;
}

class Refused extends Error {}

/** Returns the preValidation hook that forwards writes this instance does not own. */
export function createForwarder(opts: ForwardingOptions) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const syncTimeoutMs = opts.syncTimeoutMs ?? 2000;
  const cluster = opts.cluster;

  function send(address: string, request: FastifyRequest, payload: Buffer | undefined): Promise<Relayed> {
    const url = new URL(request.url, address);
    const headers: http.OutgoingHttpHeaders = {
      [FORWARDED_HEADER]: '1',
      [REQUEST_ID_HEADER]: request.id,
    };
    if (request.headers.authorization) headers.authorization = request.headers.authorization;
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    return new Promise<Relayed>((resolve, reject) => {
      const req = http.request(url, { method: request.method, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', (err) => reject(err));
      });
      req.setTimeout(30_000, () => req.destroy(new Error('the owner did not answer in time')));
      req.on('error', (err: NodeJS.ErrnoException) => {
        // Only a refused connection proves the request never reached the owner. A reset on a
        // kept-alive socket does not: an owner killed (-9) after reading the request, and perhaps
        // after publishing its change, resets it too, and a retry would then be answered on the
        // new owner's state (SAME_COURSE for a change that did happen). It is in doubt (503).
        if (err.code === 'ECONNREFUSED') reject(new Refused(err.code));
        else reject(err);
      });
      req.end(payload);
    });
  }

  function notOwnerReply(r: Relayed): boolean {
    if (r.status !== 503) return false;
    try {
      const b = JSON.parse(r.body.toString('utf8')) as { code?: unknown };
      return b.code === 'NOT_OWNER';
    } catch {
      return false;
    }
  }

  /** Serves the write here if this instance takes it for the shard; counted until it is answered. */
  function admit(reply: FastifyReply, shard: number): boolean {
    const answered = cluster.admitWrite(shard);
    if (!answered) return false;
    reply.raw.once('finish', answered);
    reply.raw.once('close', answered);
    return true;
  }

  /** The slow path: this instance does not own the shard. */
  async function forward(request: FastifyRequest, reply: FastifyReply, shard: number): Promise<FastifyReply | undefined> {
    let route = cluster.routeWrite(shard);
    if (route.self && admit(reply, shard)) return undefined;
    if (request.headers[FORWARDED_HEADER] !== undefined) {
      // Sent here by an instance whose view of the leases is older: it retries with a fresh one.
      throw new EngineError('NOT_OWNER', 'this instance does not own the shard of this request; nothing was changed');
    }
    const payload = request.body === undefined ? undefined : Buffer.from(JSON.stringify(request.body));
    const until = performance.now() + opts.retryMs;
    let pause = 50;
    for (;;) {
      if (route.self && admit(reply, shard)) return undefined; // this instance took the shard over meanwhile: serve it here
      if (!route.self && route.address) {
        try {
          const r = await send(route.address, request, payload);
          if (!notOwnerReply(r) || performance.now() >= until) {
            if (r.status >= 200 && r.status < 300) await cluster.syncReads(syncTimeoutMs);
            void reply.code(r.status);
            for (const h of ['content-type', 'retry-after'] as const) if (r.headers[h] !== undefined) void reply.header(h, r.headers[h]);
            return reply.send(r.body);
          }
        } catch (err) {
          if (!(err instanceof Refused)) {
            request.log.warn({ err, owner: route.address }, 'a forwarded write broke after it was sent');
            throw new EngineError('UNAVAILABLE', 'the instance owning this section did not answer; the outcome of the change is unknown, check before retrying');
          }
        }
      }
      if (performance.now() >= until) {
        throw new EngineError('UNAVAILABLE', 'no instance owns this section right now (takeover in progress); nothing was changed, try again', undefined, {
          retryAfterSeconds: 1,
        });
      }
      await sleep(pause);
      pause = Math.min(pause * 2, 400);
      await cluster.refreshRoutes().catch(() => undefined);
      route = cluster.routeWrite(shard);
    }
  }

  // A callback hook: a request this instance serves itself (every request with one instance)
  // costs a lookup, not a promise.
  return function forwardHook(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    if (!WRITE_METHODS.has(request.method)) return done();
    const path = request.url.split('?', 1)[0] as string;
    if (LOCAL_PATHS.has(path)) return done();
    const course = courseOf(request);
    const shard = course === null ? 0 : shardOfCourse(course, cluster.shards);
    if (admit(reply, shard)) return done();
    forward(request, reply, shard).then(
      (sent) => {
        if (sent === undefined) done();
      },
      (err: unknown) => done(err as Error),
    );
  };
}
