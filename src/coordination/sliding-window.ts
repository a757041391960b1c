import type { WindowLimit, WindowVerdict } from './types.js';

/**
 * In-process sliding windows: per key, the times of the events still inside the window (oldest
 * first). The same arithmetic as the Redis script in redis.ts, so both stores answer alike.
 * Keys are bounded (`maxKeys`, oldest key dropped first) so a flood of distinct ids or addresses
 * cannot grow memory without limit; each key holds at most its limit's number of events.
 */
export class SlidingWindows {
  private readonly windows = new Map<string, number[]>();
  private lastSweep = 0;

  constructor(
    private readonly now: () => number,
    private readonly maxKeys = 200_000,
  ) {}

  get size(): number {
    return this.windows.size;
  }

  private live(key: string, windowMs: number, nowMs: number): number[] | undefined {
    const w = this.windows.get(key);
    if (w === undefined) return undefined;
    let drop = 0;
    while (drop < w.length && (w[drop] as number) <= nowMs - windowMs) drop++;
    if (drop > 0) w.splice(0, drop);
    if (w.length === 0) {
      this.windows.delete(key);
      return undefined;
    }
    return w;
  }

  private verdict(l: WindowLimit, nowMs: number): WindowVerdict {
    const w = this.live(l.key, l.windowMs, nowMs);
    const n = w?.length ?? 0;
    if (n < l.limit) return { allowed: true, retryAfterMs: 0 };
    // Room again once the (n - limit + 1) oldest events have left the window.
    const t = (w as number[])[n - l.limit] as number;
    return { allowed: false, retryAfterMs: Math.max(1, t + l.windowMs - nowMs) };
  }

  check(limits: readonly WindowLimit[]): WindowVerdict {
    const nowMs = this.now();
    let worst: WindowVerdict = { allowed: true, retryAfterMs: 0 };
    for (const l of limits) {
      const v = this.verdict(l, nowMs);
      if (!v.allowed && v.retryAfterMs > worst.retryAfterMs) worst = v;
    }
    return worst;
  }

  private add(l: WindowLimit, nowMs: number): void {
    let w = this.live(l.key, l.windowMs, nowMs);
    if (w === undefined) {
      this.sweep(nowMs, l.windowMs);
      if (this.windows.size >= this.maxKeys) {
        const oldest = this.windows.keys().next();
        if (oldest.done !== true) this.windows.delete(oldest.value);
      }
      w = [];
      this.windows.set(l.key, w);
    }
    w.push(nowMs);
    // A key never holds more than its limit needs to answer (plus one): bounded memory per key.
    if (w.length > l.limit + 1) w.splice(0, w.length - l.limit - 1);
  }

  record(limits: readonly WindowLimit[]): void {
    const nowMs = this.now();
    for (const l of limits) this.add(l, nowMs);
  }

  take(l: WindowLimit): WindowVerdict {
    const nowMs = this.now();
    const v = this.verdict(l, nowMs);
    if (v.allowed) this.add(l, nowMs);
    return v;
  }

  clear(keys: readonly string[]): void {
    for (const k of keys) this.windows.delete(k);
  }

  /** Drops keys whose newest event has left the window, at most once per window length. */
  private sweep(nowMs: number, windowMs: number): void {
    if (nowMs - this.lastSweep < Math.max(windowMs, 1000)) return;
    this.lastSweep = nowMs;
    for (const [k, w] of this.windows) if (w.length === 0 || (w[w.length - 1] as number) <= nowMs - windowMs) this.windows.delete(k);
  }
}
