import type { RevocationEntry, RevocationSubject } from './types.js';

export type { RevocationEntry } from './types.js';

/** Turns a revoke request into the entries to record. */
export function revocationEntries(
  e: { jti?: string; sid?: string; subject?: string; at?: number; until: number },
  nowMs: number,
): RevocationEntry[] {
  const out: RevocationEntry[] = [];
  if (e.jti !== undefined) out.push({ key: `j:${e.jti}`, until: e.until });
  if (e.sid !== undefined) out.push({ key: `s:${e.sid}`, until: e.until });
  if (e.subject !== undefined) out.push({ key: `u:${e.subject}`, until: e.until, at: e.at ?? nowMs });
  return out;
}

/** Two revocations of one key as one: the later `until` and the later `at` (a new entry when `old` is undefined). */
export function mergeRevocation(old: RevocationEntry | undefined, e: RevocationEntry): RevocationEntry {
  return {
    key: e.key,
    until: Math.max(e.until, old?.until ?? 0),
    ...(e.at !== undefined || old?.at !== undefined ? { at: Math.max(e.at ?? 0, old?.at ?? 0) } : {}),
  };
}

/**
 * The local copy of the revocation list every request consults: three map lookups at most, and
 * none at all while the list is empty (the usual case). Entries past `until` are swept once a minute.
 */
export class RevocationMirror {
  private readonly entries = new Map<string, RevocationEntry>();
  private lastSweep = 0;

  constructor(private readonly now: () => number) {}

  get size(): number {
    return this.entries.size;
  }

  apply(e: RevocationEntry): void {
    const nowSeconds = Math.floor(this.now() / 1000);
    if (nowSeconds - this.lastSweep >= 60) {
      this.lastSweep = nowSeconds;
      for (const [k, v] of this.entries) if (v.until <= nowSeconds) this.entries.delete(k);
    }
    this.entries.set(e.key, mergeRevocation(this.entries.get(e.key), e));
  }

  isRevoked(t: RevocationSubject): boolean {
    if (this.entries.size === 0) return false;
    const nowSeconds = Math.floor(this.now() / 1000);
    const live = (key: string): RevocationEntry | undefined => {
      const e = this.entries.get(key);
      return e !== undefined && e.until > nowSeconds ? e : undefined;
    };
    if (live(`j:${t.jti}`) || live(`s:${t.sid}`)) return true;
    const u = live(`u:${t.subject}`);
    return u !== undefined && u.at !== undefined && t.authTimeMs <= u.at;
  }
}
