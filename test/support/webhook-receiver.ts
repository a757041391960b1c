import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request a webhook receiver got, as it arrived. */
export interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A notice as delivered, if its signature checks out with `secret`; null when it does not. */
export interface SignedNotice {
  delivery: string;
  notice: { kind: string; student_id: number; queue_position?: number; course_id: number };
}

/**
 * A local HTTP receiver for webhook tests: records every request; `status(path)` decides the reply
 * (default 204), so a test can make one path fail.
 */
export async function startWebhookReceiver(status: (path: string) => number = () => 204): Promise<{
  url: string;
  got: Received[];
  close: () => Promise<void>;
}> {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      got.push({ path: req.url ?? '', headers: req.headers, body, at: performance.now() });
      res.statusCode = status(req.url ?? '');
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    got,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** The signature the engine must send: HMAC-SHA256 over "<timestamp>.<body>" with the shared secret. */
export function expectedSignature(secret: string, r: Received): string {
  return `v1=${createHmac('sha256', secret).update(`${String(r.headers['x-enrollment-timestamp'])}.${r.body}`).digest('hex')}`;
}

/** The delivery's notice when it is signed with `secret`, else null. */
export function signedNotice(secret: string, r: Received): SignedNotice | null {
  if (r.headers['x-enrollment-signature'] !== expectedSignature(secret, r)) return null;
  return { delivery: String(r.headers['x-enrollment-delivery']), notice: (JSON.parse(r.body) as { notice: SignedNotice['notice'] }).notice };
}
