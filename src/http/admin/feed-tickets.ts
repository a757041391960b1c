import { randomBytes } from 'node:crypto';
import type { Principal, TokenSession } from '../auth.js';

/**
 * One-use tickets for the admin live feed. A browser's EventSource cannot send an Authorization
 * header, and a bearer token in a URL ends up in browser history, proxy and server logs. So the
 * page trades its token (sent in the header of an authenticated POST) for a random ticket that
 * opens one stream, once, within a few seconds, and is worth nothing afterwards. The stream keeps
 * the token's session, so it still ends at the token's expiry and on its revocation.
 */

export interface FeedTicketGrant {
  principal: Principal;
  session: TokenSession;
}

export interface FeedTickets {
  /** A new ticket for this caller, valid for `ttlMs`. */
  issue(grant: FeedTicketGrant): { ticket: string; expiresInSeconds: number };
  /** The grant behind a ticket, or null if unknown, used or stale; a ticket is removed on first use. */
  redeem(ticket: string): FeedTicketGrant | null;
  /** Tickets outstanding (bounded; for tests and diagnostics). */
  readonly size: number;
}

/**
 * `max` bounds the store (past it the oldest ticket of anyone is forgotten). `maxPerPrincipal`
 * bounds one caller's outstanding tickets: past it that caller's own oldest is forgotten, so one
 * account asking in a loop (2,000 tickets in a row, probe) replaces only its own tickets instead of
 * pushing every other user's unused ones out of the shared store.
 */
export function createFeedTickets(opts: { ttlMs: number; max: number; maxPerPrincipal?: number; now?: () => number }): FeedTickets {
  const now = opts.now ?? Date.now;
  const perPrincipal = Math.max(1, opts.maxPerPrincipal ?? Number.POSITIVE_INFINITY);
  const tickets = new Map<string, FeedTicketGrant & { expiresAt: number }>();
  /** Each caller's outstanding tickets, oldest first (an entry only while it has one). */
  const byPrincipal = new Map<string, string[]>();
  const keyOf = (p: Principal): string => `${p.role}:${p.id}`;
  const forget = (ticket: string, grant: FeedTicketGrant): void => {
    tickets.delete(ticket);
    const key = keyOf(grant.principal);
    const mine = byPrincipal.get(key);
    if (mine === undefined) return;
    const i = mine.indexOf(ticket);
    if (i >= 0) mine.splice(i, 1);
    if (mine.length === 0) byPrincipal.delete(key);
  };
  const prune = (): void => {
    const t = now();
    // Insertion order is expiry order (one ttl for all): stop at the first live one.
    for (const [k, v] of tickets) {
      if (v.expiresAt > t) break;
      forget(k, v);
    }
  };
  return {
    get size() {
      return tickets.size;
    },
    issue(grant) {
      prune();
      const key = keyOf(grant.principal);
      // This caller holds its bound already: its own oldest ticket stops working.
      const mine = byPrincipal.get(key);
      while (mine !== undefined && mine.length >= perPrincipal) {
        const oldest = mine[0] as string;
        const g = tickets.get(oldest);
        if (g === undefined) mine.shift();
        else forget(oldest, g);
      }
      // Still full of live tickets: forget the oldest (its page simply asks again).
      if (tickets.size >= opts.max) {
        const oldest = tickets.entries().next();
        if (oldest.done !== true) forget(oldest.value[0], oldest.value[1]);
      }
      const ticket = randomBytes(24).toString('base64url');
      tickets.set(ticket, { ...grant, expiresAt: now() + opts.ttlMs });
      const list = byPrincipal.get(key);
      if (list === undefined) byPrincipal.set(key, [ticket]);
      else list.push(ticket);
      return { ticket, expiresInSeconds: Math.ceil(opts.ttlMs / 1000) };
    },
    redeem(ticket) {
      const found = tickets.get(ticket);
      if (found === undefined) return null;
      forget(ticket, found);
      if (found.expiresAt <= now()) return null;
      return { principal: found.principal, session: found.session };
    },
  };
}
