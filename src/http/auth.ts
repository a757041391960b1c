import { createSecretKey, type KeyObject } from 'node:crypto';
import { verifyPassword } from '../password.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import jwt from 'jsonwebtoken';
import type { RequestMeta } from '../engine/engine.js';
import { EngineError } from '../errors.js';

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

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by {@link TokenService.requireRole} on routes that need a token; null elsewhere. */
    principal: Principal | null;
  }
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

export interface TokenServiceOptions {
  secret: string;
  ttlSeconds: number;
  /** Clock in unix milliseconds; injectable so tests can expire tokens. */
  now?: () => number;
  /** Verified tokens remembered at most (default 20,000); the oldest is forgotten first. */
  rememberMax?: number;
}

/**
 * Issues and verifies tokens, and builds the per-route guards. One instance per app, holding the
 * one `KeyObject`.
 */
export class TokenService {
  private readonly key: KeyObject;
  private readonly ttl: number;
  private readonly now: () => number;
  /** Tokens already verified: exact token text -> principal and expiry (unix seconds). */
  private readonly verified = new Map<string, { principal: Principal; exp: number }>();
  private readonly rememberMax: number;

  constructor(opts: TokenServiceOptions) {
    if (opts.secret.length === 0) throw new Error('the JWT secret must not be empty');
    this.key = createSecretKey(Buffer.from(opts.secret));
    this.ttl = opts.ttlSeconds;
    this.now = opts.now ?? Date.now;
    this.rememberMax = opts.rememberMax ?? DEFAULT_REMEMBER_MAX;
  }

  /** Claims `{sub: "<id>", role}`, `iat` from the injected clock, `exp = iat + ttl`. */
  issue(p: Principal): string {
    const iat = Math.floor(this.now() / 1000);
    return jwt.sign({ role: p.role, iat }, this.key, {
      algorithm: 'HS256',
      subject: String(p.id),
      expiresIn: this.ttl,
    });
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
   * engine's whole decision. Expiry is still checked on every call, against the same clock. A future
   * revocation list must be consulted before this cache, not after.
   */
  verify(token: string): Principal {
    const nowSeconds = Math.floor(this.now() / 1000);
    const known = this.verified.get(token);
    if (known !== undefined) {
      if (nowSeconds >= known.exp) {
        this.verified.delete(token);
        throw new EngineError('TOKEN_EXPIRED', 'the token has expired; log in again');
      }
      return known.principal;
    }
    const found = this.verifySlow(token, nowSeconds);
    if (this.verified.size >= this.rememberMax) {
      // Oldest first (Map keeps insertion order): a bounded cache, not an LRU; misses only cost a verify.
      const oldest = this.verified.keys().next();
      if (oldest.done !== true) this.verified.delete(oldest.value);
    }
    this.verified.set(token, found);
    return found.principal;
  }

  private verifySlow(token: string, nowSeconds: number): { principal: Principal; exp: number } {
    let claims: string | jwt.JwtPayload;
    try {
      claims = jwt.verify(token, this.key, {
        algorithms: ['HS256'],
        clockTimestamp: nowSeconds,
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
    return { principal: { id: Number(claims.sub), role }, exp: claims.exp };
  }

  /**
   * An onRequest hook for a route or route group: it runs before the body is read or validated, so
   * an anonymous caller learns nothing about the route's body rules and costs no parsing.
   * `'any'` admits every logged-in user.
   */
  requireRole(role: Role | 'any') {
    return async (request: FastifyRequest, _reply: FastifyReply): Promise<void> => {
      const token = bearerToken(request.headers.authorization);
      if (token === null) throw new EngineError('UNAUTHENTICATED', 'a bearer token is required (Authorization: Bearer <token>)');
      const p = this.verify(token);
      if (role !== 'any' && p.role !== role) {
        throw new EngineError('FORBIDDEN', `this route is for ${role} users; you are logged in as ${p.role}`);
      }
      request.principal = p;
    };
  }
}
