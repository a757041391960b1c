import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest, type RawServerDefault } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Engine } from '../engine/engine.js';
import { NO_STORAGE_REQUIREMENTS, type ClusterMembership, type ReadinessReport, type StorageRequirements } from '../persistence/types.js';
import { registrarRoutes } from './admin/registrar.js';
import type { NoticeHub } from '../notices/notice-hub.js';
import type { WebhookService } from '../notices/webhooks.js';
import { adminRoutes } from './admin/routes.js';
import type { ArrivalGauge } from './arrivals.js';
import { TokenService, type TokenRevocations } from './auth.js';
import type { RouteContext } from './context.js';
import { createPasswordGate } from './password-gate.js';
import { createMemoryCoordination } from '../coordination/memory.js';
import type { Coordination } from '../coordination/types.js';
import { createThrottle, DEFAULT_THROTTLE_POLICY, type ThrottlePolicy } from './throttle.js';
import { createClientErrorHandler, createFrameworkErrorHandler, installErrorHandlers } from './error-handler.js';
import { EngineError } from '../errors.js';
import type { Drain } from './drain.js';
import { createForwarder } from './forwarding.js';
import { createLoopbackHostGuard } from './host-guard.js';
import { registerOpenApi } from './openapi.js';
import { securityHeaders } from './security-headers.js';
import { lazyChildLoggerFactory } from './lazy-logger.js';
import { genReqId, REQUEST_ID_HEADER } from './request-id.js';
import { authRoutes } from './routes/auth.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { installRequestMetrics, watchPasswordGate } from './request-metrics.js';
import { meEventsRoutes } from './routes/me-events.js';
import { peopleRoutes } from './routes/people.js';
import { sectionRoutes } from './routes/sections.js';
import { staffRoutes } from './routes/staff.js';
import { studentRoutes } from './routes/student.js';
import { swapRoutes } from './routes/swap.js';
import { webhookRoutes } from './routes/webhooks.js';
import { admitPipelined, closeAfterLastRequest, DEFAULT_HTTP_LIMITS, fastifyServerOptions, type HttpLimits } from './server-options.js';
import { MAX_BODY_DEPTH, nestedTooDeep, schemaErrorFormatter, validatorCompiler } from './validation.js';
import { DEFAULT_MIN_PASSWORD_LENGTH } from '../password-rules.js';

/** What the HTTP layer needs from the process that wires it up; nothing here knows about storage drivers. */
export interface AppDeps {
  engine: Engine;
  /** Fed with the server's connections and write requests, so the group commit knows when nothing more is on its way (src/http/arrivals.ts). */
  arrivals?: ArrivalGauge;
  logger: Logger;
  /** HS256 secret shared by every instance, so tokens survive restarts and work on any instance. */
  jwtSecret: string;
  tokenTtlSeconds: number;
  /** Readiness of the persistence layer, for `GET /ready`. */
  readiness: () => Promise<ReadinessReport>;
  /** What the database's schema requires beyond the API's rules (none unless the Go schema's NOT NULLs are there). */
  storageRequirements?: StorageRequirements;
  /** Clock in unix milliseconds for token times; injectable so tests can expire tokens. */
  now?: () => number;
  /** Log every request and response (two lines per request: off by default for the rush). */
  logRequests?: boolean;
  /** Header, body and idle time limits of the HTTP server (defaults: {@link DEFAULT_HTTP_LIMITS}). */
  limits?: HttpLimits;
  /** A session ends this long after its login, however often it is refreshed (default 12 h). */
  sessionMaxSeconds?: number;
  /** Withdrawn tokens and sessions, checked before the token cache (default: the coordination store's). */
  revocations?: TokenRevocations;
  /** Rate limits and revocations shared by every instance (default: in-process, one instance). */
  coordination?: Coordination;
  /**
   * Reverse proxies (IP addresses, CIDR ranges) trusted to say the client's address in
   * `X-Forwarded-For`: only a request whose connection comes from one of them gets `request.ip`
   * from that header (the nearest untrusted entry), so throttling and the logs see the client,
   * not the proxy. Empty or absent (the default): no header is trusted, `request.ip` is the TCP peer.
   */
  trustProxy?: readonly string[];
  /** Login throttling and per-student write limit (default {@link DEFAULT_THROTTLE_POLICY}: writes unlimited). */
  throttle?: Partial<ThrottlePolicy>;
  /** Password checks at once at most; logins over it wait for a slot (default 3). */
  maxConcurrentPasswordChecks?: number;
  /** Longest a login waits for a password-check slot (ms) before 503 LOGIN_BUSY; 0: never waits (default 5000). */
  loginQueueMs?: number;
  /** Staff ids with the admin role: the only ones who may create staff (default none). */
  adminStaffIds?: readonly number[];
  /** Shortest password a new account may have (default 10). */
  minPasswordLength?: number;
  /** Passwords refused for new accounts, e.g. the demo passwords outside demo mode (default none). */
  refusedPasswords?: readonly string[];
  /** Several instances: writes for shards owned elsewhere are forwarded to their owner (docs/scale-out.md). */
  cluster?: ClusterMembership;
  /** How long a forwarded write keeps retrying while the owner changes (ms, default 8000). */
  forwardRetryMs?: number;
  /**
   * The graceful shutdown's state (src/http/drain.ts): while it is on, every response says
   * `Connection: close` and `/ready` says 503. Default: none (never draining).
   */
  drain?: Drain;
  /** Student notices and seat watches (`/me/events`, `/me/watches`) and webhooks (`/webhooks`), when wired (issue 16). */
  notices?: { hub: NoticeHub; webhooks: WebhookService | null };
  /** Keep-alive period of students' event streams (ms; default 15 s); each also ends the streams of revoked sessions. */
  streamKeepAliveMs?: number;
  /** Bytes all event streams together may hold queued for clients that stopped reading (default 64 MiB). */
  streamBacklogBudgetBytes?: number;
  /**
   * Serve only requests whose `Host` is a loopback name or address (421 DEMO_HOST_REFUSED
   * otherwise; `/health` and `/ready` always): set while the demo's public passwords are live on a
   * loopback listener, against DNS rebinding (src/http/host-guard.ts). Default false.
   */
  loopbackHostsOnly?: boolean;
}

/** Login checks at once by default: one fewer than libuv's four pool threads, so file and DNS work still get one. */
export const DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS = 3;
/** A login waits this long at most for a password-check slot: the registration-day login burst is served, not refused. */
export const DEFAULT_LOGIN_QUEUE_MS = 5_000;

/** The app as built: Fastify with the TypeBox type provider. */
export type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

/** Request bodies are a few ids; anything near this size is abuse, not a request. */
const BODY_LIMIT = 64 * 1024;
const API_VERSION = '0.1.0';

type BodyDone = (err: Error | null, body?: unknown) => void;

/**
 * Why a body was refused, said precisely (Fastify's parser says "Body is not valid JSON" for both):
 * JSON that parses but carries a prototype-poisoning member, or where JSON itself fails.
 */
function jsonRefusal(body: string): Error {
  let reason: string;
  try {
    JSON.parse(body);
    reason = 'the request body may not contain a __proto__ or constructor.prototype member';
  } catch (err) {
    reason = `the request body is not valid JSON (${withoutInput(err instanceof Error ? err.message : String(err))})`;
  }
  return Object.assign(new Error(reason), { statusCode: 400 });
}

/**
 * V8's parse error without the body's own text: for an unexpected character it quotes the
 * character and about ten around it, and the body may be a login's password (a client that left out
 * its quotes), which the reason would then carry into the logs. What kind of error and where is
 * enough to fix a client.
 */
function withoutInput(message: string): string {
  return message.endsWith('is not valid JSON') ? 'an unexpected character' : message;
}

/**
 * JSON parsing that is lenient where old clients may differ and strict elsewhere: an empty body
 * with a JSON content type is "no body" (a client that sets the header on every request, DELETE
 * included, still works), and a body with no content type at all is read as JSON (a Go server
 * decoding with encoding/json would not have required the header), and so is one sent as
 * `text/plain` (what a browser's `fetch` with a string body and no header sends; the Go service
 * read it as JSON too). Any other content type is a 415. Prototype-poisoning keys are refused, as with Fastify's default parser.
 */
function installJsonParsing(app: App): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  const parse = (request: FastifyRequest, body: string, done: BodyDone): void => {
    if (body.length === 0) {
      done(null, undefined);
      return;
    }
    parseJson(request, body, (err, value) => {
      if (err) done(jsonRefusal(body), undefined);
      else if (nestedTooDeep(value)) done(Object.assign(new Error(`the request body is nested more than ${MAX_BODY_DEPTH} levels deep`), { statusCode: 400 }), undefined);
      else done(null, value);
    });
  };
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser(['application/json', 'text/plain'], { parseAs: 'string' }, (request, body, done) =>
    parse(request, body as string, done),
  );
  app.addContentTypeParser('*', { parseAs: 'string' }, (request, body, done) => {
    if (request.headers['content-type'] === undefined) {
      parse(request, body as string, done);
      return;
    }
    done(Object.assign(new Error(`unsupported content type ${request.headers['content-type']}; send application/json`), { statusCode: 415 }));
  });
}

/**
 * Builds the whole HTTP layer and returns it ready (plugins loaded, routes compiled) but not
 * listening, so the caller decides where it listens and tests drive it with `inject`.
 */
/** The router's options; the 405 answer's own route table (installErrorHandlers) matches paths as the router does. */
const ROUTER_OPTIONS = { ignoreTrailingSlash: true } as const;

export async function buildApp(deps: AppDeps): Promise<App> {
  const loggerInstance: FastifyBaseLogger = deps.logger;
  const headers = securityHeaders();
  const app = Fastify({
    loggerInstance,
    // Refusals Fastify or Node would answer in their own shape get the one error shape too.
    frameworkErrors: createFrameworkErrorHandler(headers),
    clientErrorHandler: createClientErrorHandler(headers),
    // A request that arrives on an open connection while the server closes is served, with
    // Connection: close (Fastify's default answered it 503 in its own shape); close waits for it.
    return503OnClosing: false,
    genReqId,
    childLoggerFactory: lazyChildLoggerFactory,
    logController: new LogController({ disableRequestLogging: !deps.logRequests }),
    bodyLimit: BODY_LIMIT,
    routerOptions: ROUTER_OPTIONS,
    // A list only (never `true` or a hop count): a client that connects directly cannot choose its
    // address with a header. Also makes request.host and request.protocol believe X-Forwarded-Host
    // and X-Forwarded-Proto from those proxies (the routes use neither).
    trustProxy: deps.trustProxy !== undefined && deps.trustProxy.length > 0 ? [...deps.trustProxy] : false,
    schemaErrorFormatter,
    ...fastifyServerOptions(deps.limits ?? DEFAULT_HTTP_LIMITS),
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.decorateRequest('principal', null);
  app.decorateRequest('tokenSession', null);
  app.decorateRequest('forwardedClient', null);
  app.decorateRequest('arrivedByForward', false);
  // One callback hook for what every reply carries (no promise, no second hook per request): the
  // security headers, worked out once, and the request id.
  // And pipelining first of all: a connection's requests run one after another, in the order sent,
  // and a request over the bound is not served (its connection is closed).
  const maxPipelined = (deps.limits ?? DEFAULT_HTTP_LIMITS).maxPipelinedRequests;
  const drain = deps.drain;
  const arrivals = deps.arrivals;
  arrivals?.watch(app.server);
  closeAfterLastRequest(app.server, (deps.limits ?? DEFAULT_HTTP_LIMITS).maxRequestsPerSocket);
  app.addHook('onRequest', (request, reply, done) => {
    arrivals?.request(request.raw, reply.raw);
    // An empty Content-Type (Go's http.Post(url, "", body) sends one) is no content type: read as
    // JSON as a missing one is (installJsonParsing); Fastify answered it 415 before any parser ran.
    const type = request.headers['content-type'];
    if (type !== undefined && type.trim() === '') delete request.headers['content-type'];

    admitPipelined(
      request.raw,
      reply.raw,
      maxPipelined,
      () => {
        void reply.headers(headers);
        void reply.header(REQUEST_ID_HEADER, request.id);
        if (drain?.active) void reply.header('connection', 'close');
        // RFC 9112 3.2: an HTTP/1.1 request must name its host. Node's own check is off (it answered
        // a bare 400: no reason, no code, no security headers; probe S); HTTP/1.0 may go without.
        if (request.headers.host === undefined && request.raw.httpVersionMajor === 1 && request.raw.httpVersionMinor === 1) {
          done(new EngineError('BAD_REQUEST', 'an HTTP/1.1 request needs a Host header; nothing was done'));
          return;
        }
        done();
      },
      () => void reply.hijack(),
    );
  });
  // After the hook above, so a refusal carries the security headers and the request id, in turn.
  if (deps.loopbackHostsOnly) app.addHook('onRequest', createLoopbackHostGuard());
  installRequestMetrics(app);
  installJsonParsing(app);
  installErrorHandlers(app, ROUTER_OPTIONS);
  await registerOpenApi(app, API_VERSION);

  const coordination = deps.coordination ?? createMemoryCoordination({ now: deps.now });
  const passwordGate = createPasswordGate({
    max: deps.maxConcurrentPasswordChecks ?? DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS,
    maxWaitMs: deps.loginQueueMs ?? DEFAULT_LOGIN_QUEUE_MS,
  });
  watchPasswordGate(passwordGate);
  const ctx: RouteContext = {
    engine: deps.engine,
    tokens: new TokenService({
      secret: deps.jwtSecret,
      ttlSeconds: deps.tokenTtlSeconds,
      now: deps.now,
      maxSessionSeconds: deps.sessionMaxSeconds,
      revocations: deps.revocations ?? coordination.revocations,
      principalExists: (p) => (p.role === 'staff' ? deps.engine.getStaff(p.id) : deps.engine.getStudent(p.id)) !== undefined,
    }),
    readiness: withSharedStore(
      drain
        ? async () => {
            const report = await deps.readiness();
            if (!drain.active) return report;
            return { ready: false, checks: { ...report.checks, shutdown: { ok: false, detail: 'shutting down: finishing the requests in flight' } } };
          }
        : deps.readiness,
      coordination,
    ),
    passwordGate,
    accounts: {
      adminStaffIds: new Set(deps.adminStaffIds ?? []),
      minPasswordLength: deps.minPasswordLength ?? DEFAULT_MIN_PASSWORD_LENGTH,
      refusedPasswords: new Set(deps.refusedPasswords ?? []),
    },
    throttle: createThrottle(coordination.limits, { ...DEFAULT_THROTTLE_POLICY, ...deps.throttle }),
    requirements: deps.storageRequirements ?? NO_STORAGE_REQUIREMENTS,
    ...(drain ? { drain } : {}),
  };
  if (deps.cluster) {
    const forwarder = createForwarder({ cluster: deps.cluster, retryMs: deps.forwardRetryMs ?? 8000, secret: deps.jwtSecret });
    // App-level, so it runs before any route's token check: a forwarded request refused here is
    // still known as forwarded, and not counted in the request metrics a second time.
    app.addHook('onRequest', forwarder.recognizeForwarded);
    app.addHook('preValidation', forwarder);
  }
  await app.register(healthRoutes, ctx);
  await app.register(authRoutes, ctx);
  await app.register(studentRoutes, ctx);
  await app.register(swapRoutes, ctx);
  await app.register(staffRoutes, ctx);
  await app.register(sectionRoutes, ctx);
  await app.register(peopleRoutes, ctx);
  await app.register(adminRoutes, ctx);
  await app.register(metricsRoutes, ctx);
  await app.register(registrarRoutes, ctx);
  if (deps.notices) {
    await app.register(meEventsRoutes, {
      ...ctx,
      hub: deps.notices.hub,
      ...(deps.streamKeepAliveMs === undefined ? {} : { keepAliveMs: deps.streamKeepAliveMs }),
      ...(deps.streamBacklogBudgetBytes === undefined ? {} : { backlogBudgetBytes: deps.streamBacklogBudgetBytes }),
    });
    if (deps.notices.webhooks) await app.register(webhookRoutes, { ...ctx, webhooks: deps.notices.webhooks });
  }

  await app.ready();
  return app;
}

/**
 * Readiness with the shared store's state beside it (Redis, when configured): shown, never counted.
 * An instance whose Redis is away still serves everything (limits fail open, revocations held here
 * and saved), and a load balancer that pulled every instance for a Redis outage would turn it into a
 * registration-day outage; but a dashboard built on `/ready` should still see it (probe J).
 */
function withSharedStore(readiness: () => Promise<ReadinessReport>, coordination: Coordination): () => Promise<ReadinessReport> {
  if (coordination.kind !== 'redis') return readiness;
  return async () => {
    const report = await readiness();
    const redis = coordination.connected
      ? { ok: true, detail: 'connected: rate limits and revocations shared' }
      : { ok: false, detail: 'away: rate limits fail open, revocations held on this instance until it is back (not counted against readiness)' };
    return { ready: report.ready, checks: { ...report.checks, redis } };
  };
}
