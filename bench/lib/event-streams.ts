import http from 'node:http';

/**
 * Open student event streams (`GET /me/events`, issue 16) held during a bench run: each on its own
 * TCP connection with its own student token, read continuously as a real EventSource would, and
 * counted (notices received, streams that failed or ended early).
 */
export interface EventStreams {
  requested: number;
  /** Streams that answered 200 and sent `ready`. */
  readonly open: number;
  /** `notice` events received over all streams. */
  readonly notices: number;
  /** Streams refused or ended before `close()`. */
  readonly failed: number;
  close(): void;
}

export async function openEventStreams(target: { host: string; port: number }, tokens: string[], n: number, parallel = 50): Promise<EventStreams> {
  const reqs: http.ClientRequest[] = [];
  let open = 0;
  let notices = 0;
  let failed = 0;
  let closing = false;
  const one = (token: string): Promise<void> =>
    new Promise((resolve) => {
      let ready = false;
      const req = http.get(
        { host: target.host, port: target.port, path: '/me/events', agent: false, headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } },
        (res) => {
          if (res.statusCode !== 200) {
            failed++;
            res.resume();
            resolve();
            return;
          }
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            if (!ready && chunk.includes('event: ready')) {
              ready = true;
              open++;
              resolve();
            }
            let i = -1;
            while ((i = chunk.indexOf('event: notice', i + 1)) >= 0) notices++;
          });
          res.on('close', () => {
            if (!closing) failed++;
            if (!ready) resolve();
          });
        },
      );
      req.on('error', () => {
        if (!closing) failed++;
        resolve();
      });
      reqs.push(req);
    });
  for (let i = 0; i < n; i += parallel) {
    const batch: Promise<void>[] = [];
    for (let j = i; j < Math.min(n, i + parallel); j++) batch.push(one(tokens[j % tokens.length] as string));
    await Promise.all(batch);
  }
  return {
    requested: n,
    get open() {
      return open;
    },
    get notices() {
      return notices;
    },
    get failed() {
      return failed;
    },
    close() {
      closing = true;
      for (const r of reqs) r.destroy();
    },
  };
}
