import { lookup as dnsLookup } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { EngineError } from '../errors.js';

/**
 * Which hosts a webhook may be delivered to (server-side request forgery).
 *
 * A webhook makes the engine POST to a URL staff choose. Left open, that URL can name the cloud
 * metadata service (169.254.169.254), a Redis or broker on loopback, or any machine on the private
 * network the engine sits in: the engine becomes a proxy into places its users cannot reach. So by
 * default a target whose address is loopback, private, link-local, unspecified, CGNAT, multicast
 * or reserved (or an IPv4-mapped / NAT64 form of one) is refused, twice:
 *
 * - at registration ({@link checkWebhookTarget}): a literal address is classified, a name is
 *   resolved and every address it has must be allowed; nothing is stored otherwise;
 * - at every delivery ({@link guardedLookup}, {@link forbiddenTargetReason}): the name is resolved
 *   again and only allowed addresses are handed to the socket, and the address the socket actually
 *   connected to is checked before a byte is written. A name that resolved to a public address at
 *   registration and to 127.0.0.1 later (DNS rebinding) therefore still never reaches 127.0.0.1.
 *
 * Operators whose integrations run on a private network set WEBHOOK_ALLOW_PRIVATE_TARGETS=true
 * (src/config.ts), which turns both checks off.
 */

/** Why an address may not be a webhook target. */
export type ForbiddenClass = 'loopback' | 'private' | 'link-local' | 'unspecified' | 'CGNAT' | 'multicast' | 'reserved';

/** Resolves a host name to every address it has (default: the system resolver, as sockets use it). */
export type ResolveHost = (hostname: string) => Promise<{ address: string; family: number }[]>;

export const systemResolveHost: ResolveHost = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses)));
  });

/** Marks the refusals of this module in error chains and in the delivery log. */
export const TARGET_FORBIDDEN = 'WEBHOOK_TARGET_FORBIDDEN';

function classifyV4(a: number, b: number, c: number): ForbiddenClass | null {
  if (a === 0) return 'unspecified'; // 0.0.0.0/8, "this network": Linux connects 0.0.0.0 to loopback
  if (a === 127) return 'loopback';
  if (a === 10 || (a === 172 && (b & 0xf0) === 16) || (a === 192 && b === 168)) return 'private';
  if (a === 169 && b === 254) return 'link-local'; // includes the metadata address 169.254.169.254
  if (a === 100 && (b & 0xc0) === 64) return 'CGNAT';
  if (a >= 224 && a <= 239) return 'multicast';
  if (a >= 240) return 'reserved'; // 240/4 and the broadcast address
  if (a === 192 && b === 0 && c === 0) return 'reserved'; // IETF protocol assignments (192.0.0.0/24)
  return null;
}

function v4Bytes(s: string): number[] | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const bytes = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  return bytes.every((n) => Number.isInteger(n) && n <= 255) ? bytes : null;
}

/** The 16 bytes of an IPv6 address (`::`, an IPv4 tail and a zone id allowed), or null. */
function v6Bytes(input: string): number[] | null {
  let s = input;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    const v4 = v4Bytes(s.slice(lastColon + 1));
    if (!v4) return null;
    tail = v4;
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0] ?? '');
  const rest = halves.length === 2 ? groups(halves[1] ?? '') : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  const bytes: number[] = [];
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    const n = parseInt(g, 16);
    bytes.push(n >> 8, n & 0xff);
  }
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

function classifyV6(b: number[]): ForbiddenClass | null {
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  const embedded = () => classifyV4(b[12]!, b[13]!, b[14]!);
  if (zeros(0, 16)) return 'unspecified';
  if (zeros(0, 15) && b[15] === 1) return 'loopback';
  // IPv4-mapped (::ffff:a.b.c.d): the socket connects to the IPv4 address itself.
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return embedded();
  // IPv4-compatible (::a.b.c.d, deprecated): never a legitimate target.
  if (zeros(0, 12)) return embedded() ?? 'reserved';
  // NAT64's well-known prefix (64:ff9b::/96) reaches the embedded IPv4 address through the gateway.
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return embedded();
  if ((b[0]! & 0xfe) === 0xfc) return 'private'; // fc00::/7, unique local
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return 'link-local'; // fe80::/10
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0xc0) return 'private'; // fec0::/10, site-local (deprecated)
  if (b[0] === 0xff) return 'multicast';
  return null;
}

/**
 * The class that makes `address` (an IPv4 or IPv6 literal, brackets allowed) a forbidden webhook
 * target, or null when it may be one. Anything that is not an address literal is null: names are
 * judged by what they resolve to.
 */
export function forbiddenAddressClass(address: string): ForbiddenClass | null {
  const a = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const kind = isIP(a.split('%')[0] ?? '');
  if (kind === 4) {
    const v4 = v4Bytes(a);
    return v4 ? classifyV4(v4[0]!, v4[1]!, v4[2]!) : null;
  }
  if (kind === 6) {
    const v6 = v6Bytes(a);
    // isIP said IPv6 but it did not parse: refuse rather than guess.
    return v6 ? classifyV6(v6) : 'reserved';
  }
  return null;
}

/** The refusal sentence for a forbidden address, or null when it is allowed. */
export function forbiddenTargetReason(address: string): string | null {
  const cls = forbiddenAddressClass(address);
  return cls === null ? null : `${address} is a ${cls} address`;
}

/** A URL's host as a socket sees it: an IPv6 literal without its brackets. */
export function hostOf(u: URL): string {
  return u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
}

const ALLOWANCE_HINT = 'webhook targets on internal networks need WEBHOOK_ALLOW_PRIVATE_TARGETS=true';

/**
 * Registration's check (400 `WEBHOOK_TARGET_FORBIDDEN` / `WEBHOOK_TARGET_UNRESOLVED`; nothing is
 * stored then). A name must resolve, and every address it has must be allowed: a name with one
 * internal address among public ones is refused, since any of them may be the one connected to.
 * The response names the class, never the addresses a name resolved to (staff should not get a
 * map of internal DNS from it).
 */
export async function checkWebhookTarget(u: URL, resolveHost: ResolveHost = systemResolveHost): Promise<void> {
  const host = hostOf(u);
  if (isIP(host) !== 0) {
    const cls = forbiddenAddressClass(host);
    if (cls !== null) throw new EngineError('WEBHOOK_TARGET_FORBIDDEN', `url's host ${host} is a ${cls} address; ${ALLOWANCE_HINT}`, { host, class: cls });
    return;
  }
  let addresses: { address: string }[];
  try {
    addresses = await resolveHost(host);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new EngineError('WEBHOOK_TARGET_UNRESOLVED', `url's host ${host} did not resolve (${code}); register it once its name resolves`, { host });
  }
  if (addresses.length === 0) throw new EngineError('WEBHOOK_TARGET_UNRESOLVED', `url's host ${host} has no address`, { host });
  for (const { address } of addresses) {
    const cls = forbiddenAddressClass(address);
    if (cls !== null) throw new EngineError('WEBHOOK_TARGET_FORBIDDEN', `url's host ${host} resolves to a ${cls} address; ${ALLOWANCE_HINT}`, { host, class: cls });
  }
}

/** The error a refused delivery fails with; its message starts with the stable code. */
export function targetForbiddenError(detail: string): Error & { code: string } {
  return Object.assign(new Error(`${TARGET_FORBIDDEN}: ${detail} (${ALLOWANCE_HINT})`), { code: TARGET_FORBIDDEN });
}

/**
 * A `lookup` for the delivery's socket (`http.request({ lookup })`): resolves the name now, at
 * connect time, and hands the socket only the allowed addresses, so whatever the name resolves to
 * by then, the connection can only go to an allowed address. None allowed: the connect fails with
 * {@link TARGET_FORBIDDEN}. (An address literal never reaches a lookup; the caller checks it.)
 */
export function guardedLookup(resolveHost: ResolveHost = systemResolveHost): LookupFunction {
  return (hostname, options, callback) => {
    const family = typeof options.family === 'number' ? options.family : options.family === 'IPv6' ? 6 : options.family === 'IPv4' ? 4 : 0;
    resolveHost(hostname).then(
      (found) => {
        const usable = found.filter((a) => family === 0 || a.family === family);
        const allowed = usable.filter((a) => forbiddenAddressClass(a.address) === null);
        if (allowed.length === 0) {
          const refused = usable.map((a) => forbiddenTargetReason(a.address)).filter((r) => r !== null);
          const err = refused.length > 0 ? targetForbiddenError(`${hostname} resolves only to refused addresses: ${refused.join(', ')}`) : Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' });
          callback(err, '', 0);
          return;
        }
        if (options.all === true) callback(null, allowed);
        else callback(null, allowed[0]!.address, allowed[0]!.family);
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
}
