import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { EngineError } from '../../errors.js';
import type { NoticeHub, ResumeResult } from '../../notices/notice-hub.js';
import { NOTICE_KINDS, parseNoticeId, toWire, type Notice } from '../../notices/notices.js';
import { createFeedTickets } from '../admin/feed-tickets.js';
import { textResponse } from '../admin/schemas.js';
import { bearerToken, principalOf, type TokenSession } from '../auth.js';
import type { RouteContext } from '../context.js';
import { endForShutdown } from '../drain.js';
import { startEventStream } from '../event-stream.js';
import { bearer, errorResponses, Id, NoContent, SectionParams } from '../schemas.js';

/**
 * A student's own notices (issue 16): `GET /me/events`, server-sent events, and seat watches.
 *
 * The stream is authenticated like the admin feed: the Authorization header, or (for EventSource,
 * which cannot send headers) a one-use ticket from `POST /me/events-ticket`; a token in the URL is
 * refused. Every notice carries `id: <course>-<group>-<seq>`, the durable id of the transition it
 * comes from, so a client that reconnects with `Last-Event-ID` (a client that authenticates with the header,
 * such as an EventSource polyfill or a server-side client, does so by itself) is sent what it missed, read back from the database,
 * before the live notices; this works across restarts. A ticket stays one-use (it sits in a URL,
 * so in history and logs: a ticket that reopened streams would be a replayable credential), so a
 * page using tickets resumes with a new ticket and `?last_event_id=`, which counts as the header. When the missed notices cannot be listed, it gets one `reset` event instead and should
 * reload its sections.
 */

export interface MeEventsOptions extends RouteContext {
  hub: NoticeHub;
  /** Keep-alive period (ms; default {@link KEEP_ALIVE_MS}). */
  keepAliveMs?: number;
  /** Bytes all streams together may hold queued for clients that do not read (default {@link BACKLOG_BUDGET}). */
  backlogBudgetBytes?: number;
}

const KEEP_ALIVE_MS = 15_000;
const TICKET_TTL_MS = 30_000;
/**
 * Unused tickets one student may hold; a new one past it replaces that student's oldest. Enough
 * for a page per stream allowed (4) reconnecting; with no bound one student asking in a loop
 * evicted every other student's unused tickets from the shared store of 50,000 (probe).
 */
export const TICKETS_PER_STUDENT = 4;
/** A stream this far behind (bytes queued on its socket) is dropped; the client resumes with Last-Event-ID. */
const MAX_BACKLOG = 1024 * 1024;
/**
 * What every stream together may hold queued in the engine's memory: each stream's bound is its
 * share of it (at most {@link MAX_BACKLOG}, at least {@link MIN_BACKLOG}). Notices wait in memory only
 * once the kernel's buffers for a client that stopped reading are full (a suspended laptop, a
 * phone's background tab); with a fixed 1 MiB each, 3,016 such streams held 1.3 GB (probe K), and
 * the 20,000 streams allowed could have held 20 GB.
 */
export const BACKLOG_BUDGET = 64 * 1024 * 1024;
/** A stream may always fall this far behind (a burst of notices to a client that reads). */
const MIN_BACKLOG = 4 * 1024;
/** Live notices held while a resume reads the database; more and the stream is dropped (it resumes). */
const MAX_HELD = 10_000;

/** The data of each `notice` event (documentation; the stream is text). */
export const NoticeSchema = Type.Object(
  {
    id: Type.String({ description: '<course>-<group>-<seq> of the transition; the SSE id' }),
    kind: Type.Union(NOTICE_KINDS.map((k) => Type.Literal(k))),
    student_id: Type.Integer(),
    course_id: Type.Integer(),
    group_id: Type.Integer(),
    section_name: Type.String(),
    at: Type.String({ format: 'date-time' }),
    queue_position: Type.Optional(Type.Integer()),
    change: Type.Optional(Type.Object({}, { additionalProperties: true })),
    message: Type.String(),
  },
  { title: 'Notice', description: 'The data of each `notice` event of GET /me/events, and of each webhook delivery' },
);

const WatchSchema = Type.Object({
  course_id: Type.Integer(),
  group_id: Type.Integer(),
  position: Type.Integer({ description: "1-based place among the section's watchers (watch order)" }),
  created_at: Type.String({ format: 'date-time' }),
});

const sse = (event: string, data: unknown, id?: string): string => `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/** Each notice's SSE frame, serialised once however many of the student's streams it goes to. */
const frames = new WeakMap<Notice, string>();
const frameOf = (n: Notice): string => {
  let f = frames.get(n);
  if (f === undefined) frames.set(n, (f = sse('notice', toWire(n), n.id)));
  return f;
};

export const meEventsRoutes: FastifyPluginAsyncTypebox<MeEventsOptions> = async (app, { hub, tokens, drain, keepAliveMs = KEEP_ALIVE_MS, backlogBudgetBytes: backlogBudget = BACKLOG_BUDGET }) => {
  const studentOnly = tokens.requireRole('student');
  const tickets = createFeedTickets({ ttlMs: TICKET_TTL_MS, max: 50_000, maxPerPrincipal: TICKETS_PER_STUDENT, now: tokens.now });
  /** Open streams, each with its session (checked for revocation at every keep-alive). */
  const open = new Map<ServerResponse, { session: NonNullable<FastifyRequest['tokenSession']>; close: () => void }>();
  let keepAlive: NodeJS.Timeout | null = null;
  const endAll = async () => {
    if (keepAlive) clearInterval(keepAlive);
    keepAlive = null;
    for (const res of [...open.keys()]) endForShutdown(res);
    open.clear();
  };
  // A shutdown ends the streams when it begins: their clients reconnect (to another instance, or
  // to this one's successor) and resume with Last-Event-ID.
  drain?.onBegin(() => void endAll());
  app.addHook('preClose', endAll);
  app.addHook('onClose', endAll);

  app.post(
    '/me/events-ticket',
    {
      onRequest: studentOnly,
      schema: {
        tags: ['notices'],
        summary: 'A one-use ticket that opens GET /me/events (EventSource cannot send the token in a header)',
        description:
          `The ticket opens one stream, once, within ${TICKET_TTL_MS / 1000} s. A student holds at most ${TICKETS_PER_STUDENT} unused ` +
          "tickets: a new one past that replaces the student's oldest unused one (which then gets 401). To resume after a " +
          'drop, a page asks for a new ticket and opens `/me/events?ticket=<new>&last_event_id=<the last id it received>`.',
        security: bearer,
        response: { 200: Type.Object({ ticket: Type.String(), expires_in: Type.Integer() }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const session = request.tokenSession;
      if (session === null) throw new EngineError('UNAUTHENTICATED', 'a bearer token is required');
      const { ticket, expiresInSeconds } = tickets.issue({ principal: principalOf(request), session });
      void reply.header('cache-control', 'no-store');
      return { ticket, expires_in: expiresInSeconds };
    },
  );

  const streamAuth = async (request: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const q = request.query as { token?: unknown; ticket?: unknown } | undefined;
    if (q?.token !== undefined) {
      throw new EngineError(
        'UNAUTHENTICATED',
        'tokens are not accepted in URLs (they end up in history and logs): use the Authorization header, or POST /me/events-ticket and open /me/events?ticket=',
      );
    }
    const header = bearerToken(request.headers.authorization);
    let session: TokenSession;
    if (header !== null) {
      const v = tokens.verifyToken(header);
      request.principal = v.principal;
      session = v.session;
    } else if (typeof q?.ticket === 'string' && q.ticket !== '') {
      const grant = tickets.redeem(q.ticket);
      if (grant === null) throw new EngineError('UNAUTHENTICATED', 'the ticket is unknown, used or expired; ask for a new one');
      if (tokens.revocations.isRevoked(grant.session)) throw new EngineError('TOKEN_REVOKED', 'the token has been revoked; log in again');
      if (grant.session.exp * 1000 <= tokens.now()) throw new EngineError('TOKEN_EXPIRED', 'the token has expired; log in again');
      request.principal = grant.principal;
      session = grant.session;
    } else {
      throw new EngineError('UNAUTHENTICATED', 'a student token (Authorization header) or a ticket (POST /me/events-ticket) is required');
    }
    const p = principalOf(request);
    if (p.role !== 'student') throw new EngineError('FORBIDDEN', `this stream is for students; you are logged in as ${p.role}`);
    request.tokenSession = session;
  };

  app.get(
    '/me/events',
    {
      onRequest: streamAuth,
      logLevel: 'warn',
      schema: {
        tags: ['notices'],
        summary: "The student's own notices, live (server-sent events), resumable with Last-Event-ID",
        description:
          'Sends `ready`, then one `notice` event per change that concerns the student, once it is durable: promoted from ' +
          'the reserve queue, moved in the queue, dropped or enrolled by staff, section closed, reopened or changed, and ' +
          '`seatAvailable` for a seat watch (a notice, not a seat). Each has `id: <course>-<group>-<seq>`; reconnect with ' +
          '`Last-Event-ID` to be sent what was missed first (or one `reset` event when that cannot be listed). `expired` ' +
          'comes just before the stream closes at the token\'s expiry. Authenticate with the header, or `?ticket=` from ' +
          `POST /me/events-ticket; \`?token=\` is refused. At most ${hub.maxStreamsPerStudent} streams per student (429). ` +
          'A ticket is one-use: the automatic reconnect of an EventSource opened with one (same URL) gets 401 and the ' +
          'EventSource closes. A page resumes by closing it, asking for a new ticket and opening ' +
          '`/me/events?ticket=<new>&last_event_id=<last id received>` (`lastEventId` is read too); the `Last-Event-ID` ' +
          'header, when sent, wins over the query parameter.',
        security: bearer,
        querystring: Type.Object({
          ticket: Type.Optional(Type.String({ maxLength: 200 })),
          last_event_id: Type.Optional(Type.String({ maxLength: 64, description: 'Resume after this notice id, as the Last-Event-ID header does (for a page that reconnects with a new ticket)' })),
          lastEventId: Type.Optional(Type.String({ maxLength: 64, description: 'The same as last_event_id' })),
        }),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 64 })) }),
        response: { 200: textResponse('text/event-stream', 'Event stream of Notice objects'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const p = principalOf(request);
      const session = request.tokenSession as TokenSession;
      // The header (EventSource's own reconnect) wins; a page that reconnects with a new ticket
      // passes the last id it saw in the query instead, since it cannot set the header.
      const header = request.headers['last-event-id'];
      const query = request.query as { last_event_id?: string; lastEventId?: string };
      const fromQuery = query.last_event_id ?? query.lastEventId;
      const lastId = typeof header === 'string' && header !== '' ? header : fromQuery;
      if (typeof lastId === 'string' && lastId !== '' && parseNoticeId(lastId) === null) {
        throw new EngineError('BAD_REQUEST', `${lastId === header ? 'Last-Event-ID' : 'last_event_id'} is not a notice id (expected <course>-<group>-<seq>)`);
      }
      if (request.method === 'HEAD') {
        // The GET's head at once, no body, no stream slot taken (event-stream.ts); over the caps
        // it is refused as the GET would be.
        hub.assertStreamRoom(p.id);
        startEventStream(request, reply);
        return;
      }
      const res = reply.raw;
      let live = false;
      let held: Notice[] | null = [];
      const sent = new Set<string>();
      let corked = false;
      const write = (chunk: string): boolean => {
        if (res.destroyed || res.writableEnded) return false;
        if (res.writableLength > Math.max(MIN_BACKLOG, Math.min(MAX_BACKLOG, Math.floor(backlogBudget / Math.max(1, hub.openStreams))))) {
          res.destroy();
          return false;
        }
        // The notices of one turn go out in one socket write.
        if (!corked) {
          corked = true;
          res.cork();
          process.nextTick(() => {
            corked = false;
            res.uncork();
          });
        }
        res.write(chunk);
        return true;
      };
      const writeNotice = (n: Notice): boolean => write(frameOf(n));
      // Open first: live notices that arrive while the database is read are held, then sent after.
      const close = hub.openStream(p.id, {
        write(n) {
          if (tokens.revocations.isRevoked(session)) {
            close();
            if (!res.writableEnded) res.end(sse('expired', { reason: 'the token has been revoked; log in again' }));
            return false;
          }
          if (!live) {
            if (held === null || held.length >= MAX_HELD) {
              held = null;
              return false;
            }
            held.push(n);
            return true;
          }
          return writeNotice(n);
        },
      });
      let resumed: ResumeResult | null = null;
      if (typeof lastId === 'string' && lastId !== '') {
        try {
          resumed = await hub.resume(p.id, lastId);
        } catch (err) {
          close();
          throw err;
        }
      }
      startEventStream(request, reply);
      res.write(`retry: 3000\n\n${sse('ready', { student_id: p.id, resumed: resumed !== null && 'notices' in resumed })}`);
      if (drain?.active) {
        // Shutting down: the client comes back after the retry time (elsewhere, or to the successor)
        // and resumes from the same Last-Event-ID.
        close();
        endForShutdown(res);
        return;
      }
      if (resumed !== null) {
        if ('reset' in resumed) write(sse('reset', { reason: resumed.reset, reload: 'GET /student/course' }));
        else
          for (const n of resumed.notices) {
            sent.add(`${n.id}|${n.kind}`);
            writeNotice(n);
          }
      }
      const pending = held as Notice[] | null;
      live = true;
      held = [];
      if (pending === null) {
        // Too much arrived meanwhile: the client reconnects and resumes from its last id.
        close();
        res.destroy();
        return;
      }
      for (const n of pending) if (!sent.has(`${n.id}|${n.kind}`)) writeNotice(n);
      open.set(res, { session, close });
      // Each keep-alive also ends the streams of revoked sessions (logout, a password change or reset,
      // revoke-tokens): within KEEP_ALIVE_MS, not only at the next notice, which may never come.
      keepAlive ??= setInterval(() => {
        for (const [r, s] of open) {
          if (r.writableEnded || r.destroyed) continue;
          if (tokens.revocations.isRevoked(s.session)) {
            s.close();
            r.end(sse('expired', { reason: 'the token has been revoked; log in again' }));
            continue;
          }
          r.write(': keep-alive\n\n');
        }
      }, keepAliveMs);
      keepAlive.unref();
      const expiry = setTimeout(
        () => {
          close();
          if (!res.writableEnded) res.end(sse('expired', { reason: 'the token has expired; log in again' }));
        },
        Math.max(0, session.exp * 1000 - tokens.now()),
      );
      expiry.unref();
      const cleanup = () => {
        clearTimeout(expiry);
        close();
        open.delete(res);
        if (open.size === 0 && keepAlive) {
          clearInterval(keepAlive);
          keepAlive = null;
        }
      };
      res.on('close', cleanup);
      // The client may have gone while the database was read: its 'close' has already fired.
      if (res.destroyed || request.raw.socket.destroyed) cleanup();
    },
  );

  // -------------------------------------------------------------------------------------------
  // Seat watches

  const toWatch = (x: { watch: { courseId: number; groupId: number; createdAt: string }; position: number }) => ({
    course_id: x.watch.courseId,
    group_id: x.watch.groupId,
    position: x.position,
    created_at: x.watch.createdAt,
  });

  app.get(
    '/me/watches',
    {
      onRequest: studentOnly,
      schema: {
        tags: ['notices'],
        summary: "The student's active seat watches",
        description:
          "Read from the database, so every instance answers the same. `position` counts the older watchers who could take a place (not those holding one in the section or excluded by its sex lock). A watch of a section the student holds a place in has ended and is not listed.",
        security: bearer,
        response: { 200: Type.Object({ watches: Type.Array(WatchSchema), max: Type.Integer() }), ...errorResponses },
      },
    },
    async (request) => ({ watches: (await hub.listWatches(principalOf(request).id)).map(toWatch), max: hub.maxWatchesPerStudent }),
  );

  app.post(
    '/me/watches',
    {
      onRequest: studentOnly,
      schema: {
        tags: ['notices'],
        summary: 'Watch a full section: be told (in watch order) when a seat or reserve place opens',
        description:
          'Only for a section that is open, full and whose reserve queue is full, that the student does not hold and whose ' +
          'sex lock does not exclude them (403 SEX_LOCK, as for the enroll). Each place that opens is told to one watcher, ' +
          'oldest watch first, with a `seatAvailable` notice, and their watch ends; a watcher who holds a place in the ' +
          'section by then is skipped and their watch ends, one the sex lock excludes is skipped and keeps watching. ' +
          'Watches are kept in the database: every instance lists and announces them alike. ' +
          'The notice holds nothing: the place goes to whoever enrolls first. ' +
          `At most ${hub.maxWatchesPerStudent} watches per student and ${hub.maxWatchersPerSection} per section (429 TOO_MANY_WATCHES).`,
        security: bearer,
        body: Type.Object({ course_id: Id(), group_id: Id() }, { additionalProperties: false }),
        response: { 201: WatchSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const w = await hub.addWatch(principalOf(request).id, request.body.course_id, request.body.group_id);
      return reply.code(201).send(toWatch(w));
    },
  );

  app.delete(
    '/me/watches/:courseId/:groupId',
    {
      onRequest: studentOnly,
      schema: {
        tags: ['notices'],
        summary: 'Stop watching a section',
        security: bearer,
        params: SectionParams,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      await hub.removeWatch(principalOf(request).id, request.params.courseId, request.params.groupId);
      return reply.code(204).send(null);
    },
  );
};
