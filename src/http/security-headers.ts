import helmet from 'helmet';

/**
 * Security headers on every reply (helmet's set: `X-Content-Type-Options: nosniff`,
 * `X-Frame-Options`, `Referrer-Policy: no-referrer`, cross-origin policies, HSTS, ...), with a
 * Content-Security-Policy that lets a JSON reply do nothing at all in a browser.
 *
 * Pages set their own, looser policy over this one: `/docs` (swagger-ui, {@link DOCS_CSP}) and
 * `/admin` (its own strict policy in admin/routes.ts).
 *
 * Why helmet itself rather than @fastify/helmet: the plugin builds a new helmet middleware for
 * every request (about 15 µs here, a sizeable share of an enroll). With this policy helmet's
 * headers do not depend on the request, so they are worked out once at start (helmet run against
 * a recorder) and added to every reply with Fastify's own `reply.headers`, which writes them with
 * the rest of the head. Calling helmet's middleware on the raw response for every request cost
 * 959 against 720 µs of engine CPU per enroll in the storm bench (one run each).
 */

/** A JSON API needs no scripts, styles, frames or forms. */
const API_DIRECTIVES = {
  'default-src': ["'none'"],
  'base-uri': ["'none'"],
  'form-action': ["'none'"],
  'frame-ancestors': ["'none'"],
};

/**
 * swagger-ui: its own scripts and styles (no CDN, no inline script), requests to this server only
 * ("Try it out"), data: images for its icons. Inline styles are allowed because swagger-ui's
 * React components inject style elements; scripts stay locked to 'self'.
 */
export const DOCS_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/**
 * The headers every reply carries, worked out once (helmet run against a recorder). The app adds
 * them in its one per-request `onRequest` hook, together with the request id.
 */
export function securityHeaders(): Readonly<Record<string, string>> {
  const apply = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: API_DIRECTIVES },
    // No includeSubDomains: the engine cannot know what else runs under its parent domain.
    strictTransportSecurity: { maxAge: 15_552_000, includeSubDomains: false },
  });
  return recordHeaders(apply);
}

/** The headers a request-independent middleware sets, captured once from a stand-in response. */
function recordHeaders(apply: ReturnType<typeof helmet>): Record<string, string> {
  const headers: Record<string, string> = {};
  const res = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  let called = false;
  apply({ headers: {} } as never, res as never, () => (called = true));
  if (!called) throw new Error('helmet did not finish synchronously; its headers cannot be precomputed');
  return headers;
}
