/**
 * The one error type of the engine. Every layer throws {@link EngineError} with a stable code, so a
 * client (or the Go service's old clients) can branch on `code` while people read `reason`.
 * Codes are part of the public contract: add new ones, never rename or reuse old ones.
 */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  UNAUTHENTICATED: 401,
  TOKEN_EXPIRED: 401,
  BAD_CREDENTIALS: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  SECTION_NOT_FOUND: 404,
  STUDENT_NOT_FOUND: 404,
  /** No staff member with that id (e.g. `POST /staff/{id}/revoke-tokens`). */
  STAFF_NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  // Student rules, in the order SPEC section 4 checks them.
  ENROLLMENT_WINDOW_CLOSED: 403,
  SECTION_CLOSED: 409,
  SEX_LOCK: 403,
  UNITS_EXCEEDED: 409,
  SAME_COURSE: 409,
  EXAM_CONFLICT: 409,
  CLASS_CONFLICT: 409,
  SECTION_FULL: 409,
  // Other operations.
  NO_ACTIONS_LEFT: 403,
  NOT_ENROLLED: 409,
  ALREADY_IN_SECTION: 409,
  SAME_GROUP: 400,
  CAPACITY_BELOW_REGISTERED: 409,
  RESERVE_BELOW_QUEUED: 409,
  SEX_LOCK_CONFLICT: 409,
  /**
   * A staff edit of a section's units, exam time or class time would put a member over their units
   * limit or into an exam or class clash (SPEC section 4's invariants); `force: true` applies it anyway.
   */
  MEMBER_RULES_CONFLICT: 409,
  UNAVAILABLE: 503,
  /** Another engine instance owns the event stream: this one serves reads only. */
  NOT_OWNER: 503,
  /** A bounded queue is full: nothing was changed; retry after the Retry-After header's seconds. */
  OVERLOADED: 503,
  INTERNAL: 500,
  // Safe-by-default limits (issue 11).
  SESSION_EXPIRED: 401,
  TOKEN_REVOKED: 401,
  ADMIN_REQUIRED: 403,
  WEAK_PASSWORD: 400,
  /** The current password given with a change of password is wrong (the token alone does not let anyone change it). */
  WRONG_PASSWORD: 403,
  TOO_MANY_FEEDS: 429,
  LOGIN_BUSY: 503,
  // Operating on registration day (issue 15).
  /** Too many failed logins for this id or from this address: wait `Retry-After` seconds. */
  LOGIN_THROTTLED: 429,
  /** Too many write requests from one student in the window: wait `Retry-After` seconds. */
  RATE_LIMITED: 429,
  /** Right password, wrong kind of account (`staff` flag): the reason says which to use. */
  WRONG_ROLE: 401,
  // Conditional swap (issue 16).
  /** Only a reserve-queue place was left and the request asked for a seat (swap without queue_ok). */
  NO_SEAT: 409,
  /** A swap whose drop and enroll name the same section. */
  SAME_SECTION: 400,
  /**
   * Several owners (issue 14): a swap whose two sections belong to shards of different owners;
   * not supported yet (docs/swap.md, "Two owners"): nothing was changed. Drop and enroll instead.
   */
  SWAP_ACROSS_OWNERS: 409,
  // Student notices, seat watches and webhooks (issue 16).
  ALREADY_WATCHING: 409,
  NOT_WATCHING: 404,
  WATCH_NOT_NEEDED: 409,
  TOO_MANY_WATCHES: 429,
  WEBHOOK_NOT_FOUND: 404,
  TOO_MANY_STREAMS: 429,
  NOTICES_UNAVAILABLE: 503,
  /**
   * A webhook URL whose host is (or resolves to) a loopback, private, link-local, CGNAT, multicast
   * or otherwise not globally reachable address (IANA special-purpose registries), or an address of
   * the engine's own machine: refused so staff cannot make the engine a proxy into its own network
   * or to itself (SSRF); WEBHOOK_ALLOW_PRIVATE_TARGETS=true allows them (src/notices/webhook-target.ts).
   */
  WEBHOOK_TARGET_FORBIDDEN: 400,
  /** A webhook URL whose host name does not resolve, so its addresses cannot be checked. */
  WEBHOOK_TARGET_UNRESOLVED: 400,
  /**
   * POST /webhooks when WEBHOOK_MAX_ACTIVE webhooks are active already (each notice is POSTed to
   * every one: the bound keeps a staff account from making the engine an amplifier); nothing is
   * stored. Deleted webhooks do not count.
   */
  TOO_MANY_WEBHOOKS: 429,
  // HTTP-level refusals, sent by the HTTP layer before a route runs (src/http/error-handler.ts):
  // the method, media type, size or timing of the request itself is wrong.
  METHOD_NOT_ALLOWED: 405,
  NOT_ACCEPTABLE: 406,
  REQUEST_TIMEOUT: 408,
  LENGTH_REQUIRED: 411,
  PAYLOAD_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  HEADERS_TOO_LARGE: 431,
  /**
   * The demo accounts' published passwords are live (the engine listens on loopback only) and the
   * request's `Host` is not a loopback name or address: refused against DNS rebinding, nothing done
   * (src/http/host-guard.ts). Open http://localhost:PORT/ instead.
   */
  DEMO_HOST_REFUSED: 421,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/**
 * The project's one error type: a stable code, its status, the reason the client reads.
 *
 * A refusal (a status below 500: a rule said no, a token is missing, a section is full) is an
 * answer, not a fault: it is never logged with a stack, so none is captured for it. Capturing one
 * cost about 9 µs per error against under 1 µs without (`new EngineError` 12 frames deep), and a
 * registration rush answers most of its requests with SECTION_FULL. Server-side failures (5xx)
 * keep their stack for the logs.
 */
export class EngineError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  /** Extra JSON-safe members sent to the client beside `reason` and `code`. */
  readonly details: Record<string, unknown> | undefined;
  /** Sent as `Retry-After` (seconds) with a refusal the client should simply repeat later. */
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, reason: string, details?: Record<string, unknown>, opts?: { retryAfterSeconds?: number }) {
    const refusal = ERROR_STATUS[code] < 500;
    const limit = Error.stackTraceLimit;
    if (refusal) Error.stackTraceLimit = 0;
    try {
      super(reason);
    } finally {
      if (refusal) Error.stackTraceLimit = limit;
    }
    this.name = 'EngineError';
    this.code = code;
    this.statusCode = ERROR_STATUS[code];
    this.details = details;
    this.retryAfterSeconds = opts?.retryAfterSeconds;
  }
}

export function isEngineError(err: unknown): err is EngineError {
  return err instanceof EngineError;
}

/**
 * The words every answer whose outcome is in doubt ends with (the change may or may not have been
 * made: a broker confirm that never came, a lease that ran out before it came, a forward that got
 * no answer). One phrase, so a client can tell these 503s from the many that say "nothing was
 * changed" by one test, and knows to read before it retries (probe M, finding 3: a confirm failed
 * by a closing channel said only "the broker did not confirm the change", and had been applied).
 */
export const OUTCOME_UNKNOWN = 'its outcome is unknown, check before retrying';

/** A 503 UNAVAILABLE whose change may have been made: `what` happened; {@link OUTCOME_UNKNOWN} follows. */
export function outcomeUnknown(what: string, details?: Record<string, unknown>): EngineError {
  return new EngineError('UNAVAILABLE', `${what}; ${OUTCOME_UNKNOWN}`, details);
}
