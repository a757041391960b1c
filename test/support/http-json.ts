import { createConnection } from 'node:net';

/**
 * One HTTP request to a running engine with fetch: a JSON body if given, a bearer token if given;
 * the reply's status and parsed JSON body (null when empty). For tests that start real processes.
 */
export async function json(base: string, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/**
 * A HEAD request written on a raw TCP socket (`Connection: close`), read until the server closes
 * it: the status, the headers (lower-case names) and whatever bytes followed the head, which must be
 * none. Rejects when nothing complete arrives within `timeoutMs`. A client library would hide a
 * body sent after a HEAD's head, and app.inject does not go through Node's HTTP server.
 */
export async function rawHead(base: string, path: string, headers: Record<string, string> = {}, timeoutMs = 3000): Promise<{ status: number; headers: Record<string, string>; rest: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: url.hostname, port: Number(url.port) });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`HEAD ${path}: no complete answer within ${timeoutMs} ms; got ${JSON.stringify(data)}`));
    }, timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (data += c));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`HEAD ${path}: the connection closed without a head; got ${JSON.stringify(data)}`));
      const [statusLine, ...lines] = data.slice(0, end).split('\r\n');
      const h: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status: Number(statusLine!.split(' ')[1]), headers: h, rest: data.slice(end + 4) });
    });
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.write(`HEAD ${path} HTTP/1.1\r\nhost: ${url.host}\r\n${extra}connection: close\r\n\r\n`);
  });
}
