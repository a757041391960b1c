import { lookup as dnsLookup } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { networkInterfaces } from 'node:os';
import { EngineError } from '../errors.js';

/**
 * Which hosts a webhook may be delivered to (server-side request forgery).
 *
 * A webhook makes the engine POST to a URL staff choose. Left open, that URL can name the cloud
 * metadata service (169.254.169.254), a Redis or broker on loopback, the engine's own machine on
 * its network address, or any machine on the private network the engine sits in: the engine
 * becomes a proxy into places its users cannot reach. So by default a target is refused when its
 * address
 *
 * - is not globally reachable according to the IANA IPv4 and IPv6 special-purpose address
 *   registries (loopback, private, link-local, CGNAT, documentation, benchmarking, reserved, ...:
 *   {@link SPECIAL_PURPOSE}), or is multicast, or lies outside IPv6's global unicast 2000::/3; an
 *   IPv4-mapped, NAT64 or 6to4 address is judged by the IPv4 address it embeds;
 * - or is an address of one of this machine's own network interfaces (os.networkInterfaces(),
 *   read at every check, so an address the machine gets later, e.g. from DHCP, is refused too):
 *   a public address of the engine's host would otherwise reach everything listening on it.
 *
 * It is refused twice:
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

/**
 * The addresses of this machine's network interfaces, asked at each check (tests pass their own).
 * The same list object returned again is taken as unchanged (its keys are kept): return a new
 * array when the addresses change.
 */
export type OwnAddresses = () => Iterable<string>;

/** How long the system's interface list is reused (asking costs about 0.1 ms). */
const OWN_ADDRESSES_TTL_MS = 1000;
let ownCache: { at: number; addresses: string[] } | null = null;

/**
 * Every address of every interface of this machine, as the system reports it (re-read when the
 * last reading is more than a second old, so an address gained later, e.g. from DHCP, is seen).
 */
export const systemOwnAddresses: OwnAddresses = () => {
  const now = performance.now();
  if (ownCache === null || now - ownCache.at > OWN_ADDRESSES_TTL_MS) {
    ownCache = { at: now, addresses: Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address)) };
  }
  return ownCache.addresses;
};

/** Marks the refusals of this module in error chains and in the delivery log. */
export const TARGET_FORBIDDEN = 'WEBHOOK_TARGET_FORBIDDEN';

interface Block {
  cidr: string;
  cls: ForbiddenClass;
  /** What IANA reserves it for, as the refusal says it. */
  purpose: string;
}

/**
 * The IANA special-purpose blocks that are not globally reachable (IPv4 and IPv6 Special-Purpose
 * Address Registries; "Globally Reachable" False or N/A), and multicast. The first match names the
 * refusal, so a more specific block comes before the one containing it. IPv4-mapped
 * (::ffff:0:0/96), NAT64 (64:ff9b::/96), IPv4-compatible (::/96) and 6to4 (2002::/16) addresses
 * are judged by their embedded IPv4 address before this table is consulted.
 */
export const SPECIAL_PURPOSE: readonly Block[] = [
  { cidr: '0.0.0.0/8', cls: 'unspecified', purpose: '"this network"' },
  { cidr: '10.0.0.0/8', cls: 'private', purpose: 'private use' },
  { cidr: '100.64.0.0/10', cls: 'CGNAT', purpose: 'shared address space (carrier-grade NAT)' },
  { cidr: '127.0.0.0/8', cls: 'loopback', purpose: 'loopback' },
  { cidr: '169.254.0.0/16', cls: 'link-local', purpose: 'link-local, the cloud metadata address among them' },
  { cidr: '172.16.0.0/12', cls: 'private', purpose: 'private use' },
  { cidr: '192.0.0.0/24', cls: 'reserved', purpose: 'reserved for IETF protocol assignments' },
  { cidr: '192.0.2.0/24', cls: 'reserved', purpose: 'reserved for documentation (TEST-NET-1)' },
  { cidr: '192.88.99.0/24', cls: 'reserved', purpose: 'the deprecated 6to4 relay anycast' },
  { cidr: '192.168.0.0/16', cls: 'private', purpose: 'private use' },
  { cidr: '198.18.0.0/15', cls: 'reserved', purpose: 'reserved for benchmarking' },
  { cidr: '198.51.100.0/24', cls: 'reserved', purpose: 'reserved for documentation (TEST-NET-2)' },
  { cidr: '203.0.113.0/24', cls: 'reserved', purpose: 'reserved for documentation (TEST-NET-3)' },
  { cidr: '224.0.0.0/4', cls: 'multicast', purpose: 'multicast' },
  { cidr: '255.255.255.255/32', cls: 'reserved', purpose: 'the limited broadcast address' },
  { cidr: '240.0.0.0/4', cls: 'reserved', purpose: 'reserved for future use' },
  { cidr: '::1/128', cls: 'loopback', purpose: 'loopback' },
  { cidr: '::/128', cls: 'unspecified', purpose: 'the unspecified address' },
  { cidr: '64:ff9b:1::/48', cls: 'reserved', purpose: 'local-use IPv4/IPv6 translation' },
  { cidr: '100::/64', cls: 'reserved', purpose: 'discard-only' },
  { cidr: '100:0:0:1::/64', cls: 'reserved', purpose: 'the dummy IPv6 prefix' },
  { cidr: '2001:2::/48', cls: 'reserved', purpose: 'reserved for benchmarking' },
  { cidr: '2001::/32', cls: 'reserved', purpose: 'Teredo' },
  { cidr: '2001:10::/28', cls: 'reserved', purpose: 'the deprecated ORCHID' },
  { cidr: '2001::/23', cls: 'reserved', purpose: 'reserved for IETF protocol assignments' },
  { cidr: '2001:db8::/32', cls: 'reserved', purpose: 'reserved for documentation' },
  { cidr: '3fff::/20', cls: 'reserved', purpose: 'reserved for documentation' },
  { cidr: '5f00::/16', cls: 'reserved', purpose: 'segment routing (SRv6) SIDs' },
  { cidr: 'fc00::/7', cls: 'private', purpose: 'unique local' },
  { cidr: 'fe80::/10', cls: 'link-local', purpose: 'link-local' },
  { cidr: 'fec0::/10', cls: 'private', purpose: 'the deprecated site-local' },
  { cidr: 'ff00::/8', cls: 'multicast', purpose: 'multicast' },
];

/**
 * Globally reachable sub-blocks of the blocks above (the registries say so): allowed although a
 * block containing them is not.
 */
const GLOBAL_EXCEPTIONS: readonly string[] = [
  '192.0.0.9/32', // Port Control Protocol anycast
  '192.0.0.10/32', // TURN anycast
  '2001:1::1/128', // Port Control Protocol anycast
  '2001:1::2/128', // TURN anycast
  '2001:1::3/128', // DNS-SD service registration protocol anycast
  '2001:3::/32', // AMT
  '2001:4:112::/48', // AS112-v6
  '2001:20::/28', // ORCHIDv2
  '2001:30::/28', // drone remote ID entity tags
];

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

interface ParsedBlock {
  bytes: number[];
  bits: number;
}

function parseCidr(cidr: string): ParsedBlock {
  const [net = '', bits = ''] = cidr.split('/');
  const bytes = net.includes(':') ? v6Bytes(net) : v4Bytes(net);
  if (!bytes) throw new Error(`bad block ${cidr}`);
  return { bytes, bits: Number(bits) };
}

function inBlock(bytes: number[], block: ParsedBlock): boolean {
  if (bytes.length !== block.bytes.length) return false;
  for (let bit = 0; bit < block.bits; bit += 8) {
    const i = bit / 8;
    const mask = block.bits - bit >= 8 ? 0xff : (0xff << (8 - (block.bits - bit))) & 0xff;
    if (((bytes[i] ?? 0) & mask) !== ((block.bytes[i] ?? 0) & mask)) return false;
  }
  return true;
}

const BLOCKS = SPECIAL_PURPOSE.map((b) => ({ ...b, parsed: parseCidr(b.cidr) }));
const EXCEPTIONS = GLOBAL_EXCEPTIONS.map(parseCidr);
const GLOBAL_UNICAST_V6 = parseCidr('2000::/3');

/** A refused target: its class and the block (with what it is for) or "this machine" it lies in. */
export interface TargetRefusal {
  class: ForbiddenClass | 'this-machine';
  /** What the refusal says after "is" / "resolves to". */
  what: string;
}

function fromBlock(b: Block): TargetRefusal {
  return { class: b.cls, what: `${b.cls === 'unspecified' ? 'an' : 'a'} ${b.cls} address (in ${b.cidr}, ${b.purpose})` };
}

function blockRefusal(bytes: number[]): TargetRefusal | null {
  if (EXCEPTIONS.some((e) => inBlock(bytes, e))) return null;
  const b = BLOCKS.find((x) => inBlock(bytes, x.parsed));
  return b ? fromBlock(b) : null;
}

/** The IPv4 address an IPv6 address reaches (mapped, NAT64, IPv4-compatible, 6to4), or null. */
function embeddedV4(b: number[]): number[] | null {
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  // IPv4-mapped (::ffff:a.b.c.d): the socket connects to the IPv4 address itself.
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return b.slice(12, 16);
  // NAT64's well-known prefix (64:ff9b::/96) reaches the embedded IPv4 address through the gateway.
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return b.slice(12, 16);
  // IPv4-compatible (::a.b.c.d, deprecated); :: and ::1 are not this form.
  if (zeros(0, 12) && !(zeros(12, 15) && (b[15] === 0 || b[15] === 1))) return b.slice(12, 16);
  // 6to4 (2002:V4ADDR::/48): reaches the site behind the embedded IPv4 address.
  if (b[0] === 0x20 && b[1] === 0x02) return b.slice(2, 6);
  return null;
}

function classifyV6(b: number[]): TargetRefusal | null {
  const v4 = embeddedV4(b);
  if (v4) {
    const inner = blockRefusal(v4);
    if (inner) return inner;
    // IPv4-compatible addresses are deprecated: never a legitimate target, whatever they embed.
    if (b.slice(0, 12).every((x) => x === 0)) return { class: 'reserved', what: 'a reserved address (in ::/96, the deprecated IPv4-compatible addresses)' };
    return null;
  }
  const special = blockRefusal(b);
  if (special) return special;
  if (!inBlock(b, GLOBAL_UNICAST_V6)) return { class: 'reserved', what: 'a reserved address (outside 2000::/3, the global unicast space)' };
  return null;
}

/** The bytes of an address literal (brackets and an IPv6 zone allowed), or null for anything else. */
function bytesOf(address: string): number[] | null {
  const a = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const kind = isIP(a.split('%')[0] ?? '');
  if (kind === 4) return v4Bytes(a);
  if (kind === 6) return v6Bytes(a) ?? [];
  return null;
}

function rangeRefusal(address: string): TargetRefusal | null {
  const bytes = bytesOf(address);
  if (bytes === null) return null;
  // isIP said IPv6 but it did not parse: refuse rather than guess.
  if (bytes.length === 0) return { class: 'reserved', what: 'a reserved address (unparsable)' };
  return bytes.length === 4 ? blockRefusal(bytes) : classifyV6(bytes);
}

/**
 * The class that makes `address` (an IPv4 or IPv6 literal, brackets allowed) a forbidden webhook
 * target by the special-purpose registries, or null when it is globally reachable. Anything that
 * is not an address literal is null: names are judged by what they resolve to. (The machine's own
 * addresses are judged by {@link targetRefusal}.)
 */
export function forbiddenAddressClass(address: string): ForbiddenClass | null {
  const r = rangeRefusal(address);
  return r === null ? null : (r.class as ForbiddenClass);
}

const key = (bytes: number[]) => bytes.join('.');

/** The keys an own-address set is matched on: the address itself and the IPv4 address it embeds. */
function keysOf(address: string): string[] {
  const bytes = bytesOf(address);
  if (bytes === null || bytes.length === 0) return [];
  if (bytes.length === 4) return [key(bytes)];
  const v4 = embeddedV4(bytes);
  return v4 ? [key(bytes), key(v4)] : [key(bytes)];
}

/** Key sets of the lists already seen (the system's list is one object while it is reused). */
const keysOfList = new WeakMap<object, Set<string>>();

/** This machine's addresses, read now, as keys (see {@link keysOf}). */
function ownKeys(ownAddresses: OwnAddresses): Set<string> {
  const list = ownAddresses();
  const known = keysOfList.get(list);
  if (known) return known;
  const keys = new Set<string>();
  for (const a of list) for (const k of keysOf(a)) keys.add(k);
  keysOfList.set(list, keys);
  return keys;
}

const THIS_MACHINE: TargetRefusal = { class: 'this-machine', what: 'an address of this machine (one of its own network interfaces)' };

function refusalWith(address: string, own: Set<string>): TargetRefusal | null {
  const range = rangeRefusal(address);
  // Loopback and unspecified say already that the target is this machine.
  if (range && (range.class === 'loopback' || range.class === 'unspecified')) return range;
  if (keysOf(address).some((k) => own.has(k))) return THIS_MACHINE;
  return range;
}

/**
 * Why `address` (a literal) may not be a webhook target, or null when it may be one: the machine's
 * own interface addresses (read now) and every address that is not globally reachable.
 */
export function targetRefusal(address: string, ownAddresses: OwnAddresses = systemOwnAddresses): TargetRefusal | null {
  if (bytesOf(address) === null) return null;
  return refusalWith(address, ownKeys(ownAddresses));
}

/** The refusal sentence for a forbidden address, or null when it is allowed. */
export function forbiddenTargetReason(address: string, ownAddresses: OwnAddresses = systemOwnAddresses): string | null {
  const r = targetRefusal(address, ownAddresses);
  return r === null ? null : `${address} is ${r.what}`;
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
 * The response names the class and the block (or "this machine"), never the addresses a name
 * resolved to (staff should not get a map of internal DNS from it).
 */
export async function checkWebhookTarget(u: URL, resolveHost: ResolveHost = systemResolveHost, ownAddresses: OwnAddresses = systemOwnAddresses): Promise<void> {
  const host = hostOf(u);
  if (isIP(host) !== 0) {
    const r = targetRefusal(host, ownAddresses);
    if (r !== null) throw new EngineError('WEBHOOK_TARGET_FORBIDDEN', `url's host ${host} is ${r.what}; ${ALLOWANCE_HINT}`, { host, class: r.class });
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
  const own = ownKeys(ownAddresses);
  for (const { address } of addresses) {
    const r = refusalWith(address, own);
    if (r !== null) throw new EngineError('WEBHOOK_TARGET_FORBIDDEN', `url's host ${host} resolves to ${r.what}; ${ALLOWANCE_HINT}`, { host, class: r.class });
  }
}

/** The error a refused delivery fails with; its message starts with the stable code. */
export function targetForbiddenError(detail: string): Error & { code: string } {
  return Object.assign(new Error(`${TARGET_FORBIDDEN}: ${detail} (${ALLOWANCE_HINT})`), { code: TARGET_FORBIDDEN });
}

/**
 * A `lookup` for the delivery's socket (`http.request({ lookup })`): resolves the name now, at
 * connect time, and hands the socket only the allowed addresses (this machine's own read now),
 * so whatever the name resolves to by then, the connection can only go to an allowed address.
 * None allowed: the connect fails with {@link TARGET_FORBIDDEN}. (An address literal never
 * reaches a lookup; the caller checks it.)
 */
export function guardedLookup(resolveHost: ResolveHost = systemResolveHost, ownAddresses: OwnAddresses = systemOwnAddresses): LookupFunction {
  return (hostname, options, callback) => {
    const family = typeof options.family === 'number' ? options.family : options.family === 'IPv6' ? 6 : options.family === 'IPv4' ? 4 : 0;
    resolveHost(hostname).then(
      (found) => {
        const own = ownKeys(ownAddresses);
        const usable = found.filter((a) => family === 0 || a.family === family);
        const judged = usable.map((a) => ({ ...a, refusal: refusalWith(a.address, own) }));
        const allowed = judged.filter((a) => a.refusal === null).map(({ address, family: f }) => ({ address, family: f }));
        if (allowed.length === 0) {
          const refused = judged.flatMap((a) => (a.refusal ? [`${a.address} is ${a.refusal.what}`] : []));
          const err = refused.length > 0 ? targetForbiddenError(`${hostname} resolves only to refused addresses: ${refused.join('; ')}`) : Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' });
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
