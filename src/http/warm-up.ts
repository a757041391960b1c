import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import { TokenService } from './auth.js';

/**
 * The start-up warm-up's client: drives a throw-away app (its own engine over a store that keeps
 * nothing, built by src/main.ts) through the students' request path over real loopback sockets,
 * before the real server listens. V8 compiles a function's optimised code only after it has run
 * hot; a cold engine spent about a third of its CPU in the first seconds of a connection storm on
 * compiling (the storm bench: 7,000 enrolls took 3.0-3.2 s cold and 1.7-2.2 s on an engine that
 * had served one storm before), and the first seconds of registration are when it matters. The
 * code is shared by every app in the process, so what this app warms, the real one runs warm.
 *
 * Half the clients open a new connection per request (`Connection: close`, as a connection storm
 * does), half keep one connection; each sends, in turn, enrolls, its list and drops.
 */
export interface WarmUpOptions {
  /** The throw-away app (not listening yet); closed when the warm-up ends. */
  app: FastifyInstance;
  /** The secret the throw-away app verifies tokens with. */
  jwtSecret: string;
  /** Students of the throw-away engine, each with an open enrollment window and actions to spare. */
  studentIds: readonly number[];
  /** Clients at once, each sending one request at a time. */
  clients: number;
  /** Sections of the throw-away engine (enough seats that most enrolls are accepted). */
  sections: readonly { courseId: number; groupId: number }[];
  /** Requests to send in all. */
  requests: number;
  /** Stop early after this long (ms), whatever is left: a slow machine must not wait long to start. */
  maxMs: number;
}

export interface WarmUpResult {
  requests: number;
  /** Answered 2xx: the path ran to the end (decided, made durable, answered), not only refusals. */
  accepted: number;
  /** Answers that should not happen (401, 5xx; 0: no answer), by status. */
  unexpected: Record<string, number>;
  ms: number;
}

/** A request of the warm-up that takes longer than this is given up (its socket destroyed). */
const EXCHANGE_TIMEOUT_MS = 5_000;

/** One HTTP/1.1 exchange on a socket; resolves with the status once the whole answer is read. */
function exchange(socket: net.Socket, raw: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      done();
      socket.destroy();
      reject(new Error('no answer in time'));
    }, EXCHANGE_TIMEOUT_MS);
    let buf: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const m = /content-length:\s*(\d+)/i.exec(head);
      if (buf.length < end + 4 + (m ? Number(m[1]) : 0)) return;
      done();
      resolve(Number(head.slice(9, 12)));
    };
    const onEnd = () => {
      done();
      reject(new Error('connection closed before the answer'));
    };
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onEnd);
      socket.off('close', onEnd);
    };
    socket.on('data', onData);
    socket.once('error', onEnd);
    socket.once('close', onEnd);
    socket.write(raw);
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true, timeout: EXCHANGE_TIMEOUT_MS }, () => {
      s.off('error', reject);
      s.setTimeout(0);
      resolve(s);
    });
    s.once('error', reject);
    s.once('timeout', () => s.destroy(new Error('no connection in time')));
  });
}

function request(method: string, path: string, token: string, body: object | null, close: boolean): string {
  const text = body === null ? '' : JSON.stringify(body);
  return (
    `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n` +
    (body === null ? '' : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n`) +
    (close ? 'connection: close\r\n' : '') +
    `\r\n${text}`
  );
}

/** Runs the warm-up and closes the app; never throws for a refused or failed request (it is only a warm-up). */
export async function warmUpRequestPath(opts: WarmUpOptions): Promise<WarmUpResult> {
  const t0 = performance.now();
  const { app } = opts;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const tokens = new TokenService({ secret: opts.jwtSecret, ttlSeconds: 3600 });
  let sent = 0;
  let accepted = 0;
  const unexpected: Record<string, number> = {};
  const count = (status: number) => void (unexpected[status] = (unexpected[status] ?? 0) + 1);
  const deadline = t0 + opts.maxMs;
  // Each client acts for one student after another, so a first sight of a token (its signature
  // checked) is as common as on registration day.
  const clients = Array.from({ length: Math.min(opts.clients, opts.studentIds.length) }, async (_, i) => {
    let token = '';
    const fresh = i % 2 === 0;
    const conn: { kept: net.Socket | null } = { kept: null };
    const send = async (method: string, path: string, body: object | null): Promise<void> => {
      if (sent >= opts.requests || performance.now() >= deadline) return;
      sent += 1;
      try {
        let status: number;
        if (fresh) {
          const s = await connect(port);
          try {
            status = await exchange(s, request(method, path, token, body, true));
          } finally {
            s.destroy();
          }
        } else {
          conn.kept ??= await connect(port);
          status = await exchange(conn.kept, request(method, path, token, body, false));
        }
        // A refusal (400 on the Go routes, 409) is part of the path; a 401 or 5xx is not.
        if (status >= 500 || status === 401) count(status);
        else if (status < 300) accepted += 1;
      } catch {
        count(0);
        conn.kept?.destroy();
        conn.kept = null;
      }
    };
    for (let round = 0; sent < opts.requests && performance.now() < deadline; round++) {
      token = tokens.issue({ id: opts.studentIds[(i + round * opts.clients) % opts.studentIds.length] as number, role: 'student' });
      const held: { courseId: number; groupId: number }[] = [];
      for (let k = 0; k < 3; k++) {
        const s = opts.sections[(i * 7 + round * 3 + k) % opts.sections.length] as { courseId: number; groupId: number };
        await send('PUT', '/student/course', { course_id: s.courseId, group_id: s.groupId });
        held.push(s);
      }
      await send('GET', '/student/course', null);
      for (const s of held) await send('DELETE', `/student/course?course_id=${s.courseId}`, null);
    }
    conn.kept?.destroy();
  });
  await Promise.all(clients);
  await app.close();
  return { requests: sent, accepted, unexpected, ms: performance.now() - t0 };
}
