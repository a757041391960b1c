import { readFile } from 'node:fs/promises';
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { sectionMachine } from '../../actors/section-machine.js';
import { EngineError, isEngineError } from '../../errors.js';
import { bearerToken, principalOf, type TokenSession } from '../auth.js';
import type { RouteContext } from '../context.js';
import { endForShutdown } from '../drain.js';
import { startEventStream } from '../event-stream.js';
import { toTransition } from '../course-data.js';
import { bearer, errorResponses, SectionParams } from '../schemas.js';
import { describeActor, describeSectionTransition } from './describe.js';
import { SectionFeed, sseEvent, toAdminSection, type FeedClient } from './feed.js';
import { createFeedTickets } from './feed-tickets.js';
import { machineGraph, toMermaid, type MachineGraph } from './machine-graph.js';
import type { MachineLayout } from './machine-layout.js';
import { AdminSectionDetail, AdminSectionList, MachineLayoutSchema, textResponse } from './schemas.js';

/**
 * The staff-only admin page (SPEC section 7, issue 5): a live list of every section and, for the
 * one selected, its statechart drawn from the machine definition with the current state lit up.
 *
 * Everything is served by the engine itself; the page needs no internet, no CDN and no build step.
 * The page's three files (`/admin`, `/admin/admin.js`, `/admin/admin.css`) hold no data and are
 * public, as a browser navigating to `/admin` cannot send a bearer token; every endpoint that
 * returns data is staff-only (401 without a token, 403 for a student):
 *
 * - `GET /admin/api/sections`: every section's list row, plus departments;
 * - `GET /admin/api/sections/:courseId/:groupId`: one section with its members, reserve queue and
 *   recent transitions;
 * - `GET /admin/api/machine`: the section machine's graph, laid out with elkjs at build time
 *   (`npm run layout`; the serving process never loads elkjs);
 * - `GET /admin/machine.mmd`: the same graph as Mermaid `stateDiagram-v2` text;
 * - `POST /admin/feed-ticket`: trades the staff token (in the header) for a one-use ticket that
 *   opens the live feed within a few seconds;
 * - `GET /admin/events`: the live feed (server-sent events). EventSource cannot send headers, and a
 *   token in a URL lands in history and logs, so the page opens it with `?ticket=`; `?token=` is
 *   refused. A stream ends when its token expires or is revoked, and one staff member may hold only
 *   a few at once.
 *
 * Staff actions on the page call the ordinary staff routes, so the same rules and errors apply.
 */

/** How often the live feed may send; SPEC's "updating live" without flooding the page. */
export const FEED_FLUSH_MS = 200;
const KEEP_ALIVE_MS = 15_000;
const MAX_FEED_CLIENTS = 200;
/** Pages one staff member may have open at once; a few tabs, never every slot. */
export const MAX_FEEDS_PER_USER = 4;
/** A feed ticket opens a stream within this long of being issued, once. */
const FEED_TICKET_TTL_MS = 30_000;
const MAX_FEED_TICKETS = 10_000;
/** A page this far behind (bytes queued on its socket) is dropped; it reconnects and reloads. */
const MAX_FEED_BACKLOG = 4 * 1024 * 1024;

const STATIC_DIR = new URL('./static/', import.meta.url);
/** Written by scripts/machine-layout.ts (see MACHINE_LAYOUT_FILE); copied beside the build by the build. */
const LAYOUT_FILE = new URL('./machine-layout.json', import.meta.url);

/** Whether a layout draws exactly this graph (same machine, states and transitions). */
const sameGraph = (layout: MachineLayout, graph: MachineGraph): boolean =>
  layout.machine === graph.id && JSON.stringify([layout.states, layout.transitions]) === JSON.stringify([graph.states, graph.transitions]);

/** Headers for the page: it may run only its own script and style and talk only to this server. */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

interface StaticFile {
  url: string;
  file: string;
  type: string;
  summary: string;
}

const STATIC_FILES: StaticFile[] = [
  { url: '/admin', file: 'index.html', type: 'text/html; charset=utf-8', summary: 'The admin page (public shell; its data is staff-only)' },
  { url: '/admin/admin.js', file: 'admin.js', type: 'text/javascript; charset=utf-8', summary: "The admin page's script" },
  { url: '/admin/admin.css', file: 'admin.css', type: 'text/css; charset=utf-8', summary: "The admin page's style sheet" },
];

/** Registers the admin page, its data endpoints and the live feed; see the module comment. */
export const adminRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, drain }) => {
  const staffOnly = tokens.requireRole('staff');
  const graph = machineGraph(sectionMachine);
  const mermaid = toMermaid(graph);
  // Precomputed by `npm run layout` (elkjs never loads here); a stale file is a bug the tests catch.
  const layout = JSON.parse(await readFile(LAYOUT_FILE, 'utf8')) as MachineLayout;
  if (!sameGraph(layout, graph)) {
    app.log.error({ file: LAYOUT_FILE.pathname }, 'the precomputed statechart layout does not match the section machine: run npm run layout');
  }

  const feed = new SectionFeed(engine, {
    flushMs: FEED_FLUSH_MS,
    keepAliveMs: KEEP_ALIVE_MS,
    maxClients: MAX_FEED_CLIENTS,
    maxClientsPerUser: MAX_FEEDS_PER_USER,
  });
  const tickets = createFeedTickets({ ttlMs: FEED_TICKET_TTL_MS, max: MAX_FEED_TICKETS, now: tokens.now });
  feed.start();
  // Open streams would keep the server from closing: end them first.
  drain?.onBegin(() => feed.close());
  app.addHook('preClose', async () => feed.close());
  app.addHook('onClose', async () => feed.close());

  for (const f of STATIC_FILES) {
    const body = await readFile(new URL(f.file, STATIC_DIR), 'utf8');
    app.get(
      f.url,
      {
        schema: {
          tags: ['admin'],
          summary: f.summary,
          response: { 200: textResponse(f.type.split(';')[0] as string, f.summary) },
        },
      },
      async (_request, reply) => reply.headers(PAGE_HEADERS).type(f.type).send(body),
    );
  }

  app.get(
    '/admin/machine.mmd',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['admin'],
        summary: 'The section machine as Mermaid stateDiagram-v2 text, derived from its definition',
        security: bearer,
        response: { 200: textResponse('text/plain', 'Mermaid source'), ...errorResponses },
      },
    },
    async (_request, reply) => reply.type('text/plain; charset=utf-8').send(mermaid),
  );

  app.get(
    '/admin/api/machine',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['admin'],
        summary: 'The section machine as a graph derived from its definition, laid out with elkjs (precomputed)',
        description:
          'States, transitions (with eventless `always` transitions, guard names and the root-level command ' +
          'transitions) and absolute coordinates for every box, edge and label.',
        security: bearer,
        response: { 200: MachineLayoutSchema, ...errorResponses },
      },
    },
    async () => layout,
  );

  app.get(
    '/admin/api/sections',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['admin'],
        summary: 'Every section with its live state and numbers, plus the departments',
        security: bearer,
        response: { 200: AdminSectionList, ...errorResponses },
      },
    },
    async () => {
      return {
        sections: engine.listSections().map(toAdminSection),
        departments: engine.listDepartments(),
        flush_ms: FEED_FLUSH_MS,
      };
    },
  );

  app.get(
    '/admin/api/sections/:courseId/:groupId',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['admin'],
        summary: 'One section: numbers, registered students, the reserve queue in order, recent transitions',
        security: bearer,
        params: SectionParams,
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 30 })) }),
        response: { 200: AdminSectionDetail, ...errorResponses },
      },
    },
    async (request) => {
      const { courseId, groupId } = request.params;
      const section = toAdminSection(engine.getSection(courseId, groupId));
      const members = engine.sectionMembers(courseId, groupId);
      const records = await engine.recentTransitions(courseId, groupId, request.query.limit ?? 30).catch((err: unknown) => {
        if (isEngineError(err)) throw err;
        request.log.warn({ err }, 'reading transitions failed');
        throw new EngineError('UNAVAILABLE', 'the transition history cannot be read right now; try again shortly');
      });
      const transitions = records.map((t) => ({
        ...toTransition(t),
        text: describeSectionTransition(t.type, t.studentId, t.payload),
        by: describeActor(t.actor),
      }));
      return { section, registered: members.registered, queue: members.queue, transitions };
    },
  );

  app.post(
    '/admin/feed-ticket',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['admin'],
        summary: 'A one-use ticket that opens the live feed (EventSource cannot send the token in a header)',
        description: `The ticket opens one \`GET /admin/events?ticket=\` within ${FEED_TICKET_TTL_MS / 1000} s; the stream keeps this token's expiry.`,
        security: bearer,
        response: {
          200: Type.Object({ ticket: Type.String(), expires_in: Type.Integer({ description: 'Seconds the ticket stays valid' }) }),
          ...errorResponses,
        },
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

  /** Staff check for the feed: a bearer header, or a one-use ticket (EventSource). Never a token in the URL. */
  const feedAuth = async (request: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const q = request.query as { token?: unknown; ticket?: unknown } | undefined;
    if (q?.token !== undefined) {
      throw new EngineError(
        'UNAUTHENTICATED',
        'tokens are not accepted in URLs (they end up in history and logs): POST /admin/feed-ticket with the Authorization header, then open /admin/events?ticket=',
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
      if (grant === null) throw new EngineError('UNAUTHENTICATED', 'the feed ticket is unknown, used or expired; ask for a new one');
      if (tokens.revocations.isRevoked(grant.session)) throw new EngineError('TOKEN_REVOKED', 'the token has been revoked; log in again');
      if (grant.session.exp * 1000 <= tokens.now()) throw new EngineError('TOKEN_EXPIRED', 'the token has expired; log in again');
      request.principal = grant.principal;
      session = grant.session;
    } else {
      throw new EngineError('UNAUTHENTICATED', 'a staff token (Authorization header) or a feed ticket (POST /admin/feed-ticket) is required');
    }
    const p = principalOf(request);
    if (p.role !== 'staff') throw new EngineError('FORBIDDEN', 'students cannot use the admin page: its live feed is for staff');
    request.tokenSession = session;
  };

  app.get(
    '/admin/events',
    {
      onRequest: feedAuth,
      // A ticket is in the URL: keep request lines (which carry it) out of the logs anyway.
      logLevel: 'warn',
      schema: {
        tags: ['admin'],
        summary: 'Live feed of section changes (server-sent events), for staff',
        description:
          'Sends `ready` once, then a `sections` event with the current rows of the sections that changed, ' +
          `coalesced per section and at most every ${FEED_FLUSH_MS} ms, and \`expired\` just before it closes at the ` +
          "token's expiry. Authenticate with the usual header, or with `?ticket=` from `POST /admin/feed-ticket` where " +
          `headers cannot be set (EventSource); \`?token=\` is refused. At most ${MAX_FEEDS_PER_USER} streams per staff member (429).`,
        security: bearer,
        querystring: Type.Object({ ticket: Type.Optional(Type.String({ maxLength: 200, description: 'One-use ticket from POST /admin/feed-ticket' })) }),
        response: { 200: textResponse('text/event-stream', 'Event stream'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const p = principalOf(request);
      const session = request.tokenSession;
      if (session === null) throw new EngineError('UNAUTHENTICATED', 'a staff token is required');
      if (!feed.hasRoomFor(p.id)) {
        throw new EngineError('TOO_MANY_FEEDS', `at most ${MAX_FEEDS_PER_USER} live admin pages per staff member; close one and try again`, undefined, {
          retryAfterSeconds: 10,
        });
      }
      if (!feed.hasRoom()) {
        throw new EngineError('UNAVAILABLE', 'too many live admin pages are open; try again shortly', undefined, { retryAfterSeconds: 10 });
      }
      // A HEAD is answered here with the GET's head and takes no slot (event-stream.ts).
      const res = startEventStream(request, reply);
      if (res === null) return;
      res.write(`retry: 3000\n\n${sseEvent('ready', { flush_ms: FEED_FLUSH_MS })}`);
      // Shutting down: the page reconnects after the retry time.
      if (drain?.active) {
        endForShutdown(res);
        return;
      }
      const client: FeedClient = {
        owner: p.id,
        write(chunk) {
          if (res.destroyed || res.writableEnded) return false;
          // A revoked session loses its stream at the next message, not at its expiry.
          if (tokens.revocations.isRevoked(session)) {
            res.end(sseEvent('expired', { reason: 'the token has been revoked; log in again' }));
            return false;
          }
          if (res.writableLength > MAX_FEED_BACKLOG) {
            res.destroy();
            return false;
          }
          res.write(chunk);
          return true;
        },
        end() {
          // Called only when the server shuts down.
          endForShutdown(res);
        },
      };
      const remove = feed.add(client);
      // The stream lives no longer than the token that opened it.
      const expiry = setTimeout(
        () => {
          remove();
          if (!res.writableEnded) res.end(sseEvent('expired', { reason: 'the token has expired; log in again' }));
        },
        Math.max(0, session.exp * 1000 - tokens.now()),
      );
      expiry.unref();
      res.on('close', () => {
        clearTimeout(expiry);
        remove();
      });
    },
  );
};
