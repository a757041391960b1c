import { isIP } from 'node:net';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { EngineError } from '../errors.js';

/**
 * DNS rebinding guard for the loopback demo. While the demo accounts' published passwords open
 * accounts, the engine listens on loopback only (src/demo/demo-exposure.ts), but a web page the
 * operator visits can point its own name at 127.0.0.1 and then, same-origin to the browser, log in
 * as the demo admin. Such a request still names the attacker's site in its `Host` header: only
 * requests addressed to this machine by a loopback name or address (`localhost`, `*.localhost`,
 * `127.0.0.0/8`, `[::1]`, any port) are served; any other is answered 421 DEMO_HOST_REFUSED with
 * nothing done.
 *
 * `/health` and `/ready` are answered whatever the `Host`: they need no token, change nothing and
 * say only whether the process and its storage are up, so a rebinding page gains nothing from them,
 * while a probe sent through a port forward or a proxy that keeps its own `Host` keeps working.
 *
 * A request without a `Host` header (HTTP/1.0) comes from no browser and is served: rebinding
 * needs a browser, and such a client reaches the loopback port directly anyway.
 *
 * The name checked is the one the request is addressed to as RFC 9112 (section 3.2) reads it: the
 * authority of an absolute-form target (`GET http://name/path`) wins over `Host`, and a request with
 * more than one `Host` header is refused (probe S: `Host: localhost` then `Host: evil.example` was
 * served, Node keeps the first; a proxy in front that keeps the other would have forwarded it).
 */

/** Paths answered whatever the Host (see above). */
const OPEN_PATHS: ReadonlySet<string> = new Set(['/health', '/ready']);

/** The host of a `Host` header (`name`, `name:port`, `[v6]`, `[v6]:port`), lower case; null if it is not one. */
function hostOfHeader(value: string): string | null {
  let host: string;
  let rest: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0) return null;
    host = value.slice(1, end);
    if (isIP(host) !== 6) return null;
    rest = value.slice(end + 1);
  } else {
    const colon = value.indexOf(':');
    host = colon < 0 ? value : value.slice(0, colon);
    rest = colon < 0 ? '' : value.slice(colon);
  }
  if (rest !== '' && !/^:\d{0,5}$/.test(rest)) return null;
  host = host.toLowerCase();
  // A fully qualified name's trailing dot (`localhost.`) names the same host.
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

/** The authority (`name:port`) of an absolute-form request target; '' when it does not parse. */
function authorityOf(target: string): string {
  try {
    return new URL(target).host;
  } catch {
    return '';
  }
}

/** Whether a `Host` header names this machine by a loopback name or address. */
export function isLoopbackHostHeader(value: string): boolean {
  const host = hostOfHeader(value.trim());
  if (host === null || host === '') return false;
  // RFC 6761: `localhost` and every name under it are this machine; no public DNS answers for them.
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  const version = isIP(host);
  if (version === 4) return host.startsWith('127.');
  if (version !== 6) return false;
  // The URL parser writes an IPv6 address the one short way (::1, ::ffff:7f00:1 for ::ffff:127.0.0.1).
  const canonical = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  return canonical === '::1' || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
}

/** The onRequest hook that refuses requests not addressed to a loopback name (see above). */
export function createLoopbackHostGuard(): (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => void {
  return (request, _reply, done) => {
    const raw = request.raw;
    let hosts = 0;
    for (let i = 0; i < raw.rawHeaders.length; i += 2) if (raw.rawHeaders[i]!.toLowerCase() === 'host') hosts += 1;
    const target = raw.url ?? '';
    const absolute = /^https?:\/\//i.test(target) ? authorityOf(target) : null;
    const value = hosts > 1 ? `${hosts} Host headers` : (absolute ?? request.headers.host);
    if (value === undefined || (hosts <= 1 && isLoopbackHostHeader(value))) {
      done();
      return;
    }
    const path = request.url.split('?', 1)[0] ?? '';
    if ((request.method === 'GET' || request.method === 'HEAD') && OPEN_PATHS.has(path.replace(/\/$/, ''))) {
      done();
      return;
    }
    const port = request.raw.socket?.localPort;
    const at = typeof port === 'number' ? `:${port}` : '';
    const named = value.length > 100 ? `${value.slice(0, 100)}...` : value;
    done(
      new EngineError(
        'DEMO_HOST_REFUSED',
        `this engine serves the demo accounts, whose passwords are public, so it answers only requests addressed to ` +
          `localhost, 127.0.0.1 or [::1], not to "${named}" (a web page of another site could otherwise point its name at ` +
          `this machine and use them: DNS rebinding). Open http://localhost${at}/ instead`,
      ),
    );
  };
}
