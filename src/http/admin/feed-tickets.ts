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

export function createFeedTickets(opts: { ttlMs: number; max: number; now?: () => number }): FeedTickets {
  const now = opts.now ?? Date.now;
  const tickets = new Map<string, FeedTicketGrant & { expiresAt: number }>();
  const prune = (): void => {
    const t = now();
    // Insertion order is expiry order (one ttl for all): stop at the first live one.
    for (const [k, v] of tickets) {
      if (v.expiresAt > t) break;
      tickets.delete(k);
    }
  };
  return {
    get size() {
      return tickets.size;
    },
    issue(grant) {
      prune();
      // Still full of live tickets: forget the oldest (its page simply asks again).
      if (tickets.size >= opts.max) {
        const oldest = tickets.keys().next();
        if (oldest.done !== true) tickets.delete(oldest.value);
      }
      const ticket = randomBytes(24).toString('base64url');
      tickets.set(ticket, { ...grant, expiresAt: now() + opts.ttlMs });
      return { ticket, expiresInSeconds: Math.ceil(opts.ttlMs / 1000) };
    },
    redeem(ticket) {
      const found = tickets.get(ticket);
      if (found === undefined) return null;
      tickets.delete(ticket);
      if (found.expiresAt <= now()) return null;
      return { principal: found.principal, session: found.session };
    },
  };
}
