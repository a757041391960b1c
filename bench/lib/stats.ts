/** Latency samples in milliseconds, growable without boxing every number. */
export class Samples {
  private data = new Float64Array(1024);
  private n = 0;

  push(v: number): void {
    if (this.n === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.n++] = v;
  }

  get count(): number {
    return this.n;
  }

  summary(): LatencySummary {
    if (this.n === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
    const s = this.data.slice(0, this.n).sort();
    let sum = 0;
    for (const v of s) sum += v;
    const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] as number;
    return {
      count: this.n,
      mean: round(sum / this.n, 3),
      p50: round(q(0.5), 3),
      p90: round(q(0.9), 3),
      p99: round(q(0.99), 3),
      p999: round(q(0.999), 3),
      max: round(s[s.length - 1] as number, 3),
    };
  }
}

export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/**
 * The median of several runs' results, figure by figure: numbers become their median, objects are
 * merged key by key, anything else (strings, booleans, arrays) is taken from the first run.
 */
export function medianDeep<T>(runs: T[]): T {
  const first = runs[0];
  if (runs.length <= 1) return first as T;
  if (typeof first === 'number') {
    const nums = runs.filter((r): r is T & number => typeof r === 'number');
    return round(median(nums), 3) as T;
  }
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) {
    const keys = new Set<string>();
    for (const r of runs) if (r && typeof r === 'object') for (const k of Object.keys(r)) keys.add(k);
    const out: Record<string, unknown> = {};
    for (const k of keys) {
      const vals = runs.map((r) => (r as Record<string, unknown>)[k]).filter((v) => v !== undefined);
      // A count that is missing from some runs (a rejection code seen once) is 0 there.
      if (vals.length > 0 && typeof vals[0] === 'number') {
        while (vals.length < runs.length) vals.push(0);
      }
      out[k] = medianDeep(vals);
    }
    return out as T;
  }
  return first as T;
}

/** 12345.6 -> "12,346" */
export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return String(n);
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
