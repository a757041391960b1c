import net from 'node:net';

/**
 * A minimal HTTP/1.1 keep-alive client: one socket, one request at a time, requests given as
 * ready-made bytes. It exists because the load generator shares the machine with the engine: an
 * `http.Agent` costs several times more CPU per request than writing bytes and reading a status
 * line, and every cycle the generator burns is one the server under test does not get. The
 * `ceiling` scenario checks it against autocannon on the same server.
 *
 * It understands what the servers under test send: a status line, headers, and a body framed by
 * Content-Length or chunked encoding (none for 204/304).
 */

export interface Reply {
  status: number;
  /** The body, only when the request asked for it or the status is 4xx/5xx (for the error code). */
  body: Buffer | null;
  /** Milliseconds from write to the last byte of the reply. */
  latencyMs: number;
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (err: Error) => void;
  start: number;
  wantBody: boolean;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

export class HttpConnection {
  private socket: net.Socket | null = null;
  private buf: Buffer = Buffer.alloc(0);
  private pending: Pending | null = null;
  private closedError: Error | null = null;

  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: this.host, port: this.port, noDelay: true });
      const onError = (err: Error) => reject(err);
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        s.on('error', (err) => this.fail(err));
        s.on('close', () => this.fail(new Error('connection closed by the server')));
        s.on('data', (chunk: Buffer) => this.onData(chunk));
        this.socket = s;
        resolve();
      });
    });
  }

  /** Sends one request (complete HTTP/1.1 bytes) and resolves with its reply. */
  request(raw: Buffer, wantBody = false): Promise<Reply> {
    if (this.pending) return Promise.reject(new Error('a request is already in flight on this connection'));
    if (!this.socket || this.closedError) return Promise.reject(this.closedError ?? new Error('not connected'));
    return new Promise<Reply>((resolve, reject) => {
      this.pending = { resolve, reject, start: performance.now(), wantBody };
      this.socket!.write(raw);
    });
  }

  close(): void {
    this.closedError ??= new Error('closed');
    this.socket?.destroy();
    this.socket = null;
  }

  private fail(err: Error): void {
    this.closedError ??= err;
    const p = this.pending;
    this.pending = null;
    p?.reject(err);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const p = this.pending;
    if (!p) {
      if (this.buf.length > 0) this.fail(new Error('bytes received with no request in flight'));
      return;
    }
    const parsed = parseReply(this.buf, p.wantBody);
    if (parsed === null) return;
    this.buf = parsed.consumed >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(parsed.consumed);
    this.pending = null;
    p.resolve({ status: parsed.status, body: parsed.body, latencyMs: performance.now() - p.start });
  }
}

/** Parses one complete reply from the start of `buf`, or returns null if more bytes are needed. */
export function parseReply(buf: Buffer, wantBody: boolean): { status: number; body: Buffer | null; consumed: number } | null {
  const headEnd = buf.indexOf(CRLFCRLF);
  if (headEnd < 0) return null;
  // "HTTP/1.1 204 No Content"
  const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
  const head = buf.toString('latin1', 0, headEnd).toLowerCase();
  const bodyStart = headEnd + 4;
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
    return { status, body: null, consumed: bodyStart };
  }
  const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
  if (cl) {
    const len = Number(cl[1]);
    if (buf.length < bodyStart + len) return null;
    const keep = wantBody || status >= 400;
    return { status, body: keep ? Buffer.from(buf.subarray(bodyStart, bodyStart + len)) : null, consumed: bodyStart + len };
  }
  if (/\r\ntransfer-encoding:\s*chunked/.test(head)) {
    const parts: Buffer[] = [];
    let pos = bodyStart;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
      if (lineEnd < 0) return null;
      const size = parseInt(buf.toString('latin1', pos, lineEnd), 16);
      if (Number.isNaN(size)) throw new Error('malformed chunked body');
      const dataStart = lineEnd + 2;
      if (buf.length < dataStart + size + 2) return null;
      if (size === 0) {
        // No trailers from the servers under test: "0\r\n\r\n".
        const keep = wantBody || status >= 400;
        return { status, body: keep ? Buffer.concat(parts) : null, consumed: dataStart + 2 };
      }
      parts.push(buf.subarray(dataStart, dataStart + size));
      pos = dataStart + size + 2;
    }
  }
  // No framing: the reply has no body (the servers under test always frame bodies).
  return { status, body: null, consumed: bodyStart };
}

/** Builds the bytes of one request. */
export function buildRequest(opts: {
  method: string;
  path: string;
  host: string;
  token?: string;
  body?: unknown;
}): Buffer {
  const lines = [`${opts.method} ${opts.path} HTTP/1.1`, `Host: ${opts.host}`];
  if (opts.token) lines.push(`Authorization: Bearer ${opts.token}`);
  let payload = '';
  if (opts.body !== undefined) {
    payload = JSON.stringify(opts.body);
    lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(payload)}`);
  }
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${payload}`);
}

/** Opens `n` connections, at most `parallel` handshakes at a time. */
export async function openConnections(host: string, port: number, n: number, parallel = 200): Promise<HttpConnection[]> {
  const conns: HttpConnection[] = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = Array.from({ length: Math.min(parallel, n - i) }, () => new HttpConnection(host, port));
    await Promise.all(batch.map((c) => c.connect()));
    conns.push(...batch);
  }
  return conns;
}

export function closeAll(conns: HttpConnection[]): void {
  for (const c of conns) c.close();
}

/** The JSON `code` of an error reply, or a placeholder when the body has none. */
export function errorCode(body: Buffer | null): string {
  if (!body || body.length === 0) return '-';
  try {
    const j = JSON.parse(body.toString('utf8')) as { code?: unknown };
    return typeof j.code === 'string' ? j.code : '-';
  } catch {
    return 'unparsable';
  }
}
