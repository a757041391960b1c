import { createSecretKey, randomUUID, type KeyObject } from 'node:crypto';
import { verifyPassword } from '../password.js';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import jwt from 'jsonwebtoken';
import type { RequestMeta } from '../engine/engine.js';
import { EngineError } from '../errors.js';
import { RevocationMirror, revocationEntries } from '../coordination/revocation-mirror.js';
import type { TokenRevocations } from '../coordination/types.js';

export type { TokenRevocations } from '../coordination/types.js';

/**
 * Authentication for the HTTP layer: HS256 JWTs signed with the secret every instance shares, so a
 * token survives a restart and works on any instance (SPEC section 5).
 *
 * Every request verifies a token, so verification must be cheap. `jsonwebtoken` given a string
 * secret first tries (and fails) to parse it as a PEM public key on every call (~400 µs); given a
 * ready `KeyObject` it goes straight to the HMAC (~7 µs). The key is therefore made once here.
 */

/** The two kinds of user the Go service had; a token carries exactly one. */
export type Role = 'student' | 'staff';

/** Who a verified token speaks for. */
export interface Principal {
  id: number;
  role: Role;
}

/**
 * The session a token belongs to. `sid` and `authTime` are set at login and carried unchanged by
 * every refresh, so a session ends `maxSessionSeconds` after the password was checked however often
 * it is refreshed; `jti` names this one token (for revocation).
 */
export interface TokenSession {
  jti: string;
  sid: string;
  /** Unix seconds of the login that started the session. */
  authTime: number;
  /**
   * Unix milliseconds of that login (claim `auth_time_ms`; `authTime` rounded up for tokens without
   * it): "revoke every token of a student" cuts at a millisecond, so a login just after it works.
   */
  authTimeMs: number;
  /** `<role>:<id>`, what a revocation of every token of one person names. */
  subject: string;
  /** Unix seconds at which this token expires. */
  exp: number;
}

/** Who a token speaks for and which session it belongs to. */
export interface VerifiedToken {
  principal: Principal;
  session: TokenSession;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by {@link TokenService.requireRole} on routes that need a token; null elsewhere. */
    principal: Principal | null;
    /** The session of the token that set `principal`; null elsewhere. */
    tokenSession: TokenSession | null;
    /**
     * The client's address as the instance that first received a forwarded request saw it (its
     * signed mark checked by the forwarder); null for a request that came straight from a client.
     */
    forwardedClient: string | null;
  }
}

/**
 * The address the failure budgets and the password-check queue count a request under: the client
 * that sent it, also when another instance forwarded it here (throttled under the forwarding
 * instance's address, one client's wrong guesses refused every student whose change came the same
 * way). `request.ip` is the TCP peer, or what a trusted proxy said (TRUST_PROXY).
 */
export function clientAddress(request: FastifyRequest): string {
  return request.forwardedClient ?? request.ip;
}

/** Tokens name this service as issuer and audience, and tokens that do not are refused. */
export const TOKEN_ISSUER = 'course-enrollment-engine';
export const TOKEN_AUDIENCE = 'course-enrollment-api';
/** A session ends this long after its login unless configured otherwise. */
export const DEFAULT_MAX_SESSION_SECONDS = 12 * 3600;

/**
 * The in-process {@link TokenRevocations}: one instance only; entries are dropped once past `until`.
 * Several instances share theirs through `src/coordination` (Redis).
 */
export function createMemoryRevocations(now: () => number = Date.now): TokenRevocations {
  const mirror = new RevocationMirror(now);
  return {
    isRevoked: (t) => mirror.isRevoked(t),
    revoke(e) {
      for (const entry of revocationEntries(e, now())) mirror.apply(entry);
      return Promise.resolve();
    },
  };
}

/**
 * A valid bcrypt hash (cost 10, the Go service's default, of a throw-away string). Login
 * verifies against it when the user does not exist, so the reply takes as long as for a wrong
 * password and timing does not reveal which ids exist.
 */
const DUMMY_HASH = '$2b$10$v9HPaD5br8sXQpVqnANNQeGDapKjXNm.N/WXEB/BnOh7raufAmP8a';

const SUBJECT = /^\d{1,10}$/;

/** Verified tokens remembered at most (about 300 bytes each): one per active user on a busy day. */
const DEFAULT_REMEMBER_MAX = 20_000;

/**
 * Checks a password against a stored hash, or against the dummy hash when there is none. Runs on
 * libuv's thread pool (`@node-rs/bcrypt` is async), so a login never blocks other requests.
 */
export async function checkPassword(password: string, storedHash: string | undefined): Promise<boolean> {
  const ok = await verifyPassword(password, storedHash ?? DUMMY_HASH).catch(() => false);
  return ok && storedHash !== undefined;
}

/** `Authorization: Bearer <jwt>`; a bare JWT is accepted too, as some of the Go clients send it. */
export function bearerToken(header: string | undefined): string | null {
  if (header === undefined) return null;
  const h = header.trim();
  const m = /^bearer\s+(\S+)$/i.exec(h);
  if (m) return m[1] ?? null;
  return /^[\w-]+\.[\w-]+\.[\w-]+$/.test(h) ? h : null;
}

/** The RequestMeta every engine command carries: who asked, under which request id. */
export function requestMeta(request: FastifyRequest): RequestMeta {
  const p = principalOf(request);
  return { requestId: request.id, actor: `${p.role}:${p.id}` };
}

/** The caller of a guarded route. Throws if the route forgot its guard, rather than acting as nobody. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new EngineError('UNAUTHENTICATED', 'a bearer token is required');
  return request.principal;
}

/** The login time in ms if it lies within the login's second; otherwise (or without it) that second's end. */
function withinSecond(authTimeMs: number | undefined, authTime: number): number {
  return authTimeMs !== undefined && Math.floor(authTimeMs / 1000) === authTime ? authTimeMs : authTime * 1000 + 999;
}

export interface TokenServiceOptions {
  secret: string;
  ttlSeconds: number;
  /** A session (login plus every refresh) ends this long after the login (default 12 h). */
  maxSessionSeconds?: number;
  /** Withdrawn tokens and sessions (default: an in-process list). */
  revocations?: TokenRevocations;
  /** Clock in unix milliseconds; injectable so tests can expire tokens. */
  now?: () => number;
  /** Verified tokens remembered at most (default 20,000); the oldest is forgotten first. */
  rememberMax?: number;
  /**
   * Whether the token's user is still there (a row deleted from the database, seen after a
   * restart): a token of a user who is gone is 401, as for any other token that no longer
   * authenticates anyone, not a 404 or 400 from the route. Default: every user is.
   */
  principalExists?: (p: Principal) => boolean;
}

/**
 * Issues and verifies tokens, and builds the per-route guards. One instance per app, holding the
 * one `KeyObject`.
 */
export class TokenService {
  private readonly key: KeyObject;
  private readonly ttl: number;
  /** The clock tokens are judged by (unix ms); shared with whatever must end at a token's expiry. */
  readonly now: () => number;
  /** Tokens already verified: exact token text -> principal and session. */
  private readonly verified = new Map<string, VerifiedToken>();
  private readonly rememberMax: number;
  private readonly maxSession: number;
  private readonly principalExists: ((p: Principal) => boolean) | undefined;
  readonly revocations: TokenRevocations;

  constructor(opts: TokenServiceOptions) {
    if (opts.secret.length === 0) throw new Error('the JWT secret must not be empty');
    this.key = createSecretKey(Buffer.from(opts.secret));
    this.ttl = opts.ttlSeconds;
    this.now = opts.now ?? Date.now;
    this.rememberMax = opts.rememberMax ?? DEFAULT_REMEMBER_MAX;
    this.maxSession = opts.maxSessionSeconds ?? DEFAULT_MAX_SESSION_SECONDS;
    this.revocations = opts.revocations ?? createMemoryRevocations(this.now);
    this.principalExists = opts.principalExists;
  }

  /**
   * Claims `{sub: "<id>", role, sid, auth_time, jti, iss, aud}`, `iat` from the injected clock and
   * `exp = min(iat + ttl, auth_time + maxSession)`. Without `session` this is a login and starts a
   * new session; with it (a refresh) the session's id and login time are carried over, so no chain
   * of refreshes outlives the session. Throws SESSION_EXPIRED when the session has no time left.
   */
  issue(p: Principal, session?: Pick<TokenSession, 'sid' | 'authTime'> & { authTimeMs?: number }): string {
    const nowMs = this.now();
    const iat = Math.floor(nowMs / 1000);
    const sid = session?.sid ?? randomUUID();
    const authTime = session?.authTime ?? iat;
    const authTimeMs = session ? (session.authTimeMs ?? authTime * 1000 + 999) : nowMs;
    const exp = Math.min(iat + this.ttl, authTime + this.maxSession);
    if (exp <= iat) throw new EngineError('SESSION_EXPIRED', 'the session has reached its maximum age; log in again');
    const jti = randomUUID();
    const token = jwt.sign({ role: p.role, iat, exp, sid, auth_time: authTime, auth_time_ms: authTimeMs }, this.key, {
      algorithm: 'HS256',
      subject: String(p.id),
      jwtid: jti,
      issuer: TOKEN_ISSUER,
      audience: TOKEN_AUDIENCE,
    });
    // Signed here a moment ago: remembered as verifying it would find it (the same principal and
    // session), so the student's first request does not pay for decoding it and checking our own
    // HMAC (a login storm's thousands of first requests). Revocation and expiry are still checked
    // on every use; another instance verifies it the usual way.
    this.remember(token, {
      principal: { id: p.id, role: p.role },
      session: { jti, sid, authTime, authTimeMs: withinSecond(authTimeMs, authTime), subject: `${p.role}:${p.id}`, exp },
    });
    return token;
  }

  /** Unix seconds at which a session can last no longer (its login plus the session maximum age). */
  sessionEnd(session: Pick<TokenSession, 'authTime'>): number {
    return session.authTime + this.maxSession;
  }

  /** The longest a session lasts (seconds from its login, refreshes or not). */
  get maxSessionSeconds(): number {
    return this.maxSession;
  }

  /** Unix seconds at which every session started until now has ended. */
  latestSessionEnd(): number {
    return Math.floor(this.now() / 1000) + this.maxSession;
  }

  /**
   * Ends every session of `subject` (`student:<id>`, `staff:<id>`) that logged in at or before
   * `at` (unix ms; now by default), on every instance: revoke-tokens and every change of password.
   */
  revokeSessionsOf(subject: string, at = this.now()): Promise<void> {
    return this.revocations.revoke({ subject, at, until: this.latestSessionEnd() });
  }

  /** How many verified tokens are remembered now: bounded by `rememberMax` (a gauge for metrics). */
  get rememberedTokens(): number {
    return this.verified.size;
  }

  /**
   * Returns the token's principal, or throws UNAUTHENTICATED / TOKEN_EXPIRED.
   *
   * A token that verified once is remembered (by its exact text) until it expires: a student sends
   * the same token with every request, and decoding and HMAC-checking it again cost more than the
   * engine's whole decision. Expiry and the revocation list are still checked on every call.
   */
  verify(token: string): Principal {
    return this.verifyToken(token).principal;
  }

  /** As {@link verify}, with the token's session. The revocation list is consulted before any cached answer. */
  verifyToken(token: string): VerifiedToken {
    const nowSeconds = Math.floor(this.now() / 1000);
    const known = this.verified.get(token);
    if (known !== undefined) {
      if (this.revocations.isRevoked(known.session)) throw new EngineError('TOKEN_REVOKED', 'the token has been revoked; log in again');
      if (nowSeconds >= known.session.exp) {
        this.verified.delete(token);
        throw new EngineError('TOKEN_EXPIRED', 'the token has expired; log in again');
      }
      return known;
    }
    const found = this.verifySlow(token, nowSeconds);
    if (this.revocations.isRevoked(found.session)) throw new EngineError('TOKEN_REVOKED', 'the token has been revoked; log in again');
    this.remember(token, found);
    return found;
  }

  private remember(token: string, found: VerifiedToken): void {
    if (this.verified.size >= this.rememberMax) {
      // Oldest first (Map keeps insertion order): a bounded cache, not an LRU; misses only cost a verify.
      const oldest = this.verified.keys().next();
      if (oldest.done !== true) this.verified.delete(oldest.value);
    }
    this.verified.set(token, found);
  }

  private verifySlow(token: string, nowSeconds: number): VerifiedToken {
    let claims: string | jwt.JwtPayload;
    try {
      claims = jwt.verify(token, this.key, {
        algorithms: ['HS256'],
        clockTimestamp: nowSeconds,
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
      });
    } catch (err) {
      if (err instanceof jwt.TokenExpiredError) throw new EngineError('TOKEN_EXPIRED', 'the token has expired; log in again');
      throw new EngineError('UNAUTHENTICATED', 'the token is not valid');
    }
    if (typeof claims !== 'object' || typeof claims.exp !== 'number' || typeof claims.sub !== 'string' || !SUBJECT.test(claims.sub)) {
      throw new EngineError('UNAUTHENTICATED', 'the token is not valid');
    }
    const role: unknown = claims['role'];
    if (role !== 'student' && role !== 'staff') throw new EngineError('UNAUTHENTICATED', 'the token is not valid');
    const sid: unknown = claims['sid'];
    const authTime: unknown = claims['auth_time'];
    if (typeof claims.jti !== 'string' || claims.jti === '' || typeof sid !== 'string' || sid === '' || typeof authTime !== 'number') {
      throw new EngineError('UNAUTHENTICATED', 'the token is not valid');
    }
    // A token claiming a longer life than its session allows was not made by this service's rules.
    if (claims.exp > authTime + this.maxSession) throw new EngineError('SESSION_EXPIRED', 'the session has reached its maximum age; log in again');
    const authTimeMsClaim: unknown = claims['auth_time_ms'];
    const authTimeMs = withinSecond(typeof authTimeMsClaim === 'number' ? authTimeMsClaim : undefined, authTime);
    return {
      principal: { id: Number(claims.sub), role },
      session: { jti: claims.jti, sid, authTime, authTimeMs, subject: `${role}:${claims.sub}`, exp: claims.exp },
    };
  }

  /**
   * An onRequest hook for a route or route group: it runs before the body is read or validated, so
   * an anonymous caller learns nothing about the route's body rules and costs no parsing.
   * `'any'` admits every logged-in user.
   *
   * A callback hook, not an async one: it runs on every request of a guarded route and decides
   * synchronously, so it costs no promise and no extra microtask. Called without `done` (as a
   * plain guard inside a handler), it throws instead.
   */
  requireRole(role: Role | 'any') {
    const admit = (request: FastifyRequest): void => {
      const token = bearerToken(request.headers.authorization);
      if (token === null) throw new EngineError('UNAUTHENTICATED', 'a bearer token is required (Authorization: Bearer <token>)');
      const { principal: p, session } = this.verifyToken(token);
      if (role !== 'any' && p.role !== role) {
        throw new EngineError(
          'FORBIDDEN',
          role === 'staff'
            ? 'students cannot use the admin page or staff routes; this route is for staff'
            : 'this route is for students; staff use the staff routes (/staff/..., /sections)',
        );
      }
      if (this.principalExists !== undefined && !this.principalExists(p)) {
        throw new EngineError('UNAUTHENTICATED', 'the token belongs to a user that no longer exists; log in again');
      }
      request.principal = p;
      request.tokenSession = session;
    };
    return (request: FastifyRequest, _reply: FastifyReply, done?: HookHandlerDoneFunction): void => {
      if (done === undefined) return admit(request);
      try {
        admit(request);
      } catch (err) {
        done(err as Error);
        return;
      }
      done();
    };
  }
}
