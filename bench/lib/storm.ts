import { readFileSync } from 'node:fs';
import net from 'node:net';
import { isInterrupted } from './cleanup.js';
import type { Reply } from './http.js';
import { LoadStats, type Job, type LoadResult } from './load.js';
import { Progress } from './progress.js';
import { fmt } from './stats.js';

/**
 * A connection storm, the way real clients make one on registration day: every request on a new
 * TCP connection (`Connection: close`), and an error reply closed as soon as its status line is
 * in, without reading its body (the Go service's own benchmark client does exactly this, as do
 * browsers behind proxies and students' scripts). The latency of a request includes the TCP
 * handshake, so a SYN dropped by a full listen queue and retried by the kernel 1 s later shows up
 * here, as it does for a student.
 */

/** A client that gives up after this long, as a browser or script eventually does. */
const REQUEST_TIMEOUT_MS = 30_000;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const CONNECTION_CLOSE = Buffer.from('Connection: close\r\n');

/**
 * Adds `Connection: close` to ready-made request bytes (after the request line), so the server
 * closes the connection after answering, as it would for an HTTP/1.0-style or pool-less client.
 */
export function withConnectionClose(raw: Buffer): Buffer {
  const lineEnd = raw.indexOf('\r\n');
  return Buffer.concat([raw.subarray(0, lineEnd + 2), CONNECTION_CLOSE, raw.subarray(lineEnd + 2)]);
}

/**
 * One request on its own connection. Resolves with the status and, for a 2xx, the body when
 * asked; for an error only the body bytes that happened to arrive with the headers (the client
 * does not wait for the rest). Rejects on a connection-level failure or timeout.
 */
export function stormRequest(host: string, port: number, raw: Buffer, wantBody: boolean): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const s = net.connect({ host, port, noDelay: true });
    const finish = (err: Error | null, reply?: Reply) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new Error(`no reply within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS);
    s.once('connect', () => s.write(raw));
    s.on('error', (err) => finish(err));
    s.on('close', () => finish(new Error(buf.length > 0 ? 'connection closed mid-reply' : 'connection closed before a reply')));
    s.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const headEnd = buf.indexOf(CRLFCRLF);
      if (headEnd < 0) return;
      const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
      const latencyMs = performance.now() - start;
      const bodyStart = headEnd + 4;
      const len = /\r\ncontent-length:\s*(\d+)/i.exec(buf.toString('latin1', 0, headEnd));
      const bodyLen = len ? Number(len[1]) : 0;
      if (status >= 300 || !wantBody || status === 204) {
        // Error bodies are not read: whatever arrived with the headers is all the client looks at.
        const have = buf.length >= bodyStart + bodyLen && bodyLen > 0 ? Buffer.from(buf.subarray(bodyStart, bodyStart + bodyLen)) : null;
        finish(null, { status, body: status >= 400 ? have : null, latencyMs });
        return;
      }
      if (buf.length < bodyStart + bodyLen) return;
      finish(null, { status, body: Buffer.from(buf.subarray(bodyStart, bodyStart + bodyLen)), latencyMs: performance.now() - start });
    });
  });
}

/** Storm figures: the load figures plus what a student notices and what the kernel counted. */
export interface StormResult extends LoadResult {
  /** Requests (handshake included) that took longer than one second. */
  slowerThan1s: number;
  /** Error replies whose body had not arrived with the headers (classified by status only). */
  unreadErrorBodies: number;
  kernel: KernelDeltas;
}

/** Deltas of the kernel's TCP counters over the run (`nstat` names). */
export interface KernelDeltas {
  TcpExtListenOverflows: number;
  TcpExtListenDrops: number;
  TcpExtTCPSynRetrans: number;
}

const COUNTERS = ['ListenOverflows', 'ListenDrops', 'TCPSynRetrans'] as const;

/** Reads the TcpExt counters from /proc/net/netstat (what `nstat` shows, without needing it installed). */
export function readKernelCounters(): Record<(typeof COUNTERS)[number], number> {
  const out = { ListenOverflows: 0, ListenDrops: 0, TCPSynRetrans: 0 };
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      if (!lines[i]!.startsWith('TcpExt:')) continue;
      const names = lines[i]!.split(/\s+/).slice(1);
      const values = lines[i + 1]!.split(/\s+/).slice(1).map(Number);
      for (const c of COUNTERS) {
        const k = names.indexOf(c);
        if (k >= 0) out[c] = values[k] ?? 0;
      }
    }
  } catch {
    // Not Linux: the deltas stay 0 and the report says the counters were unavailable.
  }
  return out;
}

/** The kernel's listen-queue cap and this process's open-file limit: both bound any server. */
export function connectionLimits(pid: number = process.pid): { somaxconn: number | null; tcpMaxSynBacklog: number | null; nofile: number | null } {
  const num = (path: string): number | null => {
    try {
      return Number(readFileSync(path, 'utf8').trim());
    } catch {
      return null;
    }
  };
  let nofile: number | null = null;
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    if (m) nofile = m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    nofile = null;
  }
  return { somaxconn: num('/proc/sys/net/core/somaxconn'), tcpMaxSynBacklog: num('/proc/sys/net/ipv4/tcp_max_syn_backlog'), nofile };
}

/**
 * Releases every client at once; client i sends `next(i)`'s jobs one after another, each on a
 * new connection, until it returns null. A connection-level failure is counted and the client
 * moves on to its next request (a student would press the button again; the harness does not
 * retry, so every failure stays visible).
 */
export async function runStorm(opts: {
  label: string;
  host: string;
  port: number;
  clients: number;
  next: (client: number) => Job | null;
  total?: number;
}): Promise<StormResult & { lastReplyAt: number }> {
  const stats = new LoadStats();
  let slow = 0;
  let unread = 0;
  const progress = new Progress({ label: opts.label, total: opts.total, done: () => stats.requests, errors: () => stats.errorCount, extra: () => (slow ? `> 1 s: ${fmt(slow)}` : '') });
  const k0 = readKernelCounters();
  stats.startedAt = performance.now();
  try {
    await Promise.all(
      Array.from({ length: opts.clients }, async (_, i) => {
        for (let job = opts.next(i); job !== null && !isInterrupted(); job = opts.next(i)) {
          const raw = withConnectionClose(job.raw);
          try {
            const r = await stormRequest(opts.host, opts.port, raw, job.wantBody ?? false);
            if (r.latencyMs > 1000) slow += 1;
            if (r.status >= 400 && r.body === null) unread += 1;
            stats.record(job.op, r.status >= 400 && r.body === null ? { ...r, body: UNREAD } : r);
            job.onReply?.(r);
          } catch (err) {
            stats.recordNetworkError(err as Error);
          }
        }
      }),
    );
  } finally {
    progress.stop();
  }
  const k1 = readKernelCounters();
  return {
    ...stats.result(),
    slowerThan1s: slow,
    unreadErrorBodies: unread,
    kernel: {
      TcpExtListenOverflows: k1.ListenOverflows - k0.ListenOverflows,
      TcpExtListenDrops: k1.ListenDrops - k0.ListenDrops,
      TcpExtTCPSynRetrans: k1.TCPSynRetrans - k0.TCPSynRetrans,
    },
  };
}

/** Stands in for an error body that was not read, so the reply is counted under its status alone. */
const UNREAD = Buffer.from('{"code":"(body not read)"}');
