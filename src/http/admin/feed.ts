import type { Engine, SectionView } from '../../engine/engine.js';
import type { DomainEvent } from '../../persistence/types.js';
import type { AdminSectionT } from './schemas.js';

/**
 * The admin page's live feed: which sections changed, as server-sent events.
 *
 * Under a registration rush a section can change hundreds of times a second; the page only needs
 * its latest numbers. So the feed listens to the engine's durable batches, remembers which
 * sections changed (coalescing any number of changes to one entry per section), and at most once
 * per `flushMs` sends every connected page one `sections` event with the current row of each. The
 * cost is therefore bounded by the number of sections and pages, not by the request rate, and a
 * page that cannot keep up is disconnected (it reconnects and reloads the list) rather than
 * buffered without bound in the server's memory.
 */

/** One connected page. `write` returns false when the client is too far behind and was dropped. */
export interface FeedClient {
  write(chunk: string): boolean;
  end(): void;
  /** The staff member the stream is for: one person may hold only `maxClientsPerUser` streams. */
  owner?: number;
}

/** The feed's limits; fixed by the admin routes, smaller in tests if they need it. */
export interface SectionFeedOptions {
  /** Least time between two flushes, in milliseconds. */
  flushMs: number;
  /** A comment line is sent this often so proxies do not close an idle stream. */
  keepAliveMs: number;
  /** More pages than this at once are refused (each costs a socket and a share of every flush). */
  maxClients: number;
  /** More pages than this for one staff member are refused, so one token cannot take every slot. */
  maxClientsPerUser?: number;
}

/** The list row of a section; shared by the list endpoint and the feed so both say the same. */
export function toAdminSection(v: SectionView): AdminSectionT {
  return {
    course_id: v.info.courseId,
    group_id: v.info.groupId,
    name: v.info.name,
    lecturer: v.info.lecturer,
    department: v.info.forDepartment,
    capacity: v.capacity,
    registered_count: v.registeredCount,
    reserve_capacity: v.reserveCapacity,
    reserved_count: v.queueLength,
    sex_lock: v.sexLock,
    closed: v.closed,
    state: v.state,
    seq: v.seq,
  };
}

/** Formats one server-sent event; `data` is JSON, which never contains a newline. */
export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** See the module comment. One per app; started with the app, closed before the server closes. */
export class SectionFeed {
  private readonly clients = new Set<FeedClient>();
  private readonly perOwner = new Map<number, number>();
  private readonly dirty = new Map<string, [number, number]>();
  private flushTimer: NodeJS.Timeout | null = null;
  private keepAliveTimer: NodeJS.Timeout | null = null;
  private lastFlush = 0;
  private unsubscribe: (() => void) | null = null;

  constructor(
    private readonly engine: Engine,
    private readonly opts: SectionFeedOptions,
  ) {}

  /** Pages connected now (for diagnostics and tests). */
  get clientCount(): number {
    return this.clients.size;
  }

  /** Starts listening to the engine. */
  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.engine.onTransitions((events) => this.onEvents(events));
  }

  /** Whether another page may connect now. */
  hasRoom(): boolean {
    return this.clients.size < this.opts.maxClients;
  }

  /** Whether `owner` may open another page (under the per-user cap). */
  hasRoomFor(owner: number): boolean {
    const max = this.opts.maxClientsPerUser;
    return max === undefined || (this.perOwner.get(owner) ?? 0) < max;
  }

  /** Adds a page; returns the function that removes it (idempotent). */
  add(client: FeedClient): () => void {
    if (this.clients.has(client)) return () => this.remove(client);
    this.clients.add(client);
    if (client.owner !== undefined) this.perOwner.set(client.owner, (this.perOwner.get(client.owner) ?? 0) + 1);
    if (!this.keepAliveTimer) {
      this.keepAliveTimer = setInterval(() => this.broadcast(': keep-alive\n\n'), this.opts.keepAliveMs);
      this.keepAliveTimer.unref();
    }
    return () => this.remove(client);
  }

  /** Ends every stream and stops listening; called before the server closes, or it would wait for them. */
  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    for (const c of [...this.clients]) {
      this.remove(c);
      c.end();
    }
    this.dirty.clear();
  }

  private remove(client: FeedClient): void {
    if (!this.clients.delete(client)) return;
    if (client.owner !== undefined) {
      const n = (this.perOwner.get(client.owner) ?? 1) - 1;
      if (n <= 0) this.perOwner.delete(client.owner);
      else this.perOwner.set(client.owner, n);
    }
    if (this.clients.size === 0) {
      if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
      this.keepAliveTimer = null;
      // Nobody to tell: forget pending changes (a page that connects loads the list first).
      this.dirty.clear();
    }
  }

  private onEvents(events: DomainEvent[]): void {
    if (this.clients.size === 0) return;
    for (const e of events) {
      if (!('courseId' in e)) continue;
      this.dirty.set(`${e.courseId}:${e.groupId}`, [e.courseId, e.groupId]);
    }
    if (this.dirty.size === 0 || this.flushTimer) return;
    const wait = Math.max(0, this.lastFlush + this.opts.flushMs - Date.now());
    this.flushTimer = setTimeout(() => this.flush(), wait);
    this.flushTimer.unref();
  }

  private flush(): void {
    this.flushTimer = null;
    this.lastFlush = Date.now();
    const rows: AdminSectionT[] = [];
    for (const [courseId, groupId] of this.dirty.values()) {
      try {
        rows.push(toAdminSection(this.engine.getSection(courseId, groupId)));
      } catch {
        // The section is gone (a reload after a failed write dropped it): nothing to show.
      }
    }
    this.dirty.clear();
    if (rows.length > 0) this.broadcast(sseEvent('sections', { sections: rows }));
  }

  private broadcast(chunk: string): void {
    for (const c of [...this.clients]) {
      if (!c.write(chunk)) this.remove(c);
    }
  }
}
