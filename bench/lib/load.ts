import { errorCode, HttpConnection, type Reply } from './http.js';
import { isInterrupted } from './cleanup.js';
import { Progress } from './progress.js';
import { fmt, round, Samples, type LatencySummary } from './stats.js';

/**
 * The load generator: a set of keep-alive connections, each sending one request at a time, fed
 * by a `next(connection)` function. Fixed work (every job done once, the seed and rush workloads)
 * and timed work (loop until a deadline, the steady workload) share it.
 */

export interface Job {
  /** Complete request bytes. */
  raw: Buffer;
  /** Label for per-operation figures, e.g. "enroll". */
  op: string;
  wantBody?: boolean;
  /** Called with the reply before the connection sends its next job (client-side state). */
  onReply?: (r: Reply) => void;
}

/**
 * Rejections the rules of SPEC section 4 give for a well-formed request: expected under load,
 * counted, not errors.
 */
export const RULE_CODES = new Set([
  'ENROLLMENT_WINDOW_CLOSED',
  'SECTION_CLOSED',
  'SEX_LOCK',
  'UNITS_EXCEEDED',
  'SAME_COURSE',
  'EXAM_CONFLICT',
  'CLASS_CONFLICT',
  'SECTION_FULL',
  'NO_ACTIONS_LEFT',
  'NOT_ENROLLED',
  'ALREADY_IN_SECTION',
]);

export interface LoadResult {
  requests: number;
  /** From the release of the first request to the last reply. */
  wallMs: number;
  reqPerSec: number;
  /** 2xx replies. */
  ok: number;
  /** Rule rejections by code (expected, not errors). */
  rejections: Record<string, number>;
  /** Everything else that was not 2xx: "<status> <code>", or "network: <message>". */
  errors: Record<string, number>;
  errorCount: number;
  status5xx: number;
  byStatus: Record<string, number>;
  latencyMs: LatencySummary;
  perOp: Record<string, { count: number; ok: number; reqPerSec: number; latencyMs: LatencySummary }>;
}

export class LoadStats {
  requests = 0;
  ok = 0;
  errorCount = 0;
  status5xx = 0;
  readonly rejections = new Map<string, number>();
  readonly errors = new Map<string, number>();
  readonly byStatus = new Map<number, number>();
  readonly latency = new Samples();
  readonly perOp = new Map<string, { ok: number; latency: Samples }>();
  startedAt = 0;
  lastReplyAt = 0;

  record(op: string, r: Reply): void {
    this.requests += 1;
    this.lastReplyAt = performance.now();
    this.latency.push(r.latencyMs);
    let o = this.perOp.get(op);
    if (!o) this.perOp.set(op, (o = { ok: 0, latency: new Samples() }));
    o.latency.push(r.latencyMs);
    this.byStatus.set(r.status, (this.byStatus.get(r.status) ?? 0) + 1);
    if (r.status < 300) {
      this.ok += 1;
      o.ok += 1;
      return;
    }
    const code = errorCode(r.body);
    if (r.status >= 400 && r.status < 500 && RULE_CODES.has(code)) {
      this.rejections.set(code, (this.rejections.get(code) ?? 0) + 1);
      return;
    }
    if (r.status >= 500) this.status5xx += 1;
    this.errorCount += 1;
    const key = `${r.status} ${code}`;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  recordNetworkError(err: Error): void {
    this.requests += 1;
    this.errorCount += 1;
    this.lastReplyAt = performance.now();
    const key = `network: ${err.message}`;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  result(): LoadResult & { lastReplyAt: number } {
    const wallMs = Math.max(0, this.lastReplyAt - this.startedAt);
    const perOp: LoadResult['perOp'] = {};
    for (const [op, o] of this.perOp) {
      perOp[op] = {
        count: o.latency.count,
        ok: o.ok,
        reqPerSec: wallMs > 0 ? round((o.latency.count * 1000) / wallMs, 0) : 0,
        latencyMs: o.latency.summary(),
      };
    }
    return {
      lastReplyAt: this.lastReplyAt,
      requests: this.requests,
      wallMs: round(wallMs, 1),
      reqPerSec: wallMs > 0 ? round((this.requests * 1000) / wallMs, 0) : 0,
      ok: this.ok,
      rejections: Object.fromEntries(this.rejections),
      errors: Object.fromEntries(this.errors),
      errorCount: this.errorCount,
      status5xx: this.status5xx,
      byStatus: Object.fromEntries([...this.byStatus].map(([k, v]) => [String(k), v])),
      latencyMs: this.latency.summary(),
      perOp,
    };
  }
}

function progressFor(label: string, stats: LoadStats, total?: number): Progress {
  return new Progress({
    label,
    total,
    done: () => stats.requests,
    errors: () => stats.errorCount,
    extra: () => {
      const rej = [...stats.rejections].map(([k, v]) => `${k} ${fmt(v)}`).join(', ');
      return rej ? `rejections: ${rej}` : '';
    },
  });
}

async function reconnect(c: HttpConnection): Promise<HttpConnection | null> {
  c.close();
  const fresh = new HttpConnection(c.host, c.port);
  try {
    await fresh.connect();
    return fresh;
  } catch {
    return null;
  }
}

/**
 * Every connection takes jobs from `next` until it returns null. All connections start at once
 * (the barrier: connections are open and every job is built before this is called).
 */
export async function runFixed(opts: {
  label: string;
  conns: HttpConnection[];
  next: (conn: number) => Job | null;
  total?: number;
}): Promise<LoadResult & { lastReplyAt: number }> {
  const stats = new LoadStats();
  const progress = progressFor(opts.label, stats, opts.total);
  stats.startedAt = performance.now();
  try {
    await Promise.all(
      opts.conns.map(async (first, i) => {
        let c: HttpConnection | null = first;
        for (let job = opts.next(i); job !== null && c !== null && !isInterrupted(); job = opts.next(i)) {
          try {
            const r = await c.request(job.raw, job.wantBody);
            stats.record(job.op, r);
            job.onReply?.(r);
          } catch (err) {
            stats.recordNetworkError(err as Error);
            c = await reconnect(c);
            if (c) opts.conns[i] = c;
          }
        }
      }),
    );
  } finally {
    progress.stop();
  }
  return stats.result();
}

/** Every connection sends jobs from `next` until `durationMs` has passed; replies in flight finish. */
export async function runTimed(opts: {
  label: string;
  conns: HttpConnection[];
  durationMs: number;
  next: (conn: number) => Job;
}): Promise<LoadResult & { lastReplyAt: number }> {
  const stats = new LoadStats();
  const progress = progressFor(opts.label, stats);
  stats.startedAt = performance.now();
  const deadline = stats.startedAt + opts.durationMs;
  try {
    await Promise.all(
      opts.conns.map(async (first, i) => {
        let c: HttpConnection | null = first;
        while (c !== null && performance.now() < deadline && !isInterrupted()) {
          const job = opts.next(i);
          try {
            const r = await c.request(job.raw, job.wantBody);
            stats.record(job.op, r);
            job.onReply?.(r);
          } catch (err) {
            stats.recordNetworkError(err as Error);
            c = await reconnect(c);
            if (c) opts.conns[i] = c;
          }
        }
      }),
    );
  } finally {
    progress.stop();
  }
  return stats.result();
}
