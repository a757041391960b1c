import type { Server, ServerResponse } from 'node:http';

/**
 * Graceful shutdown of the HTTP server, so that a rolling restart on registration day costs no
 * client a connection reset. Closing at once (Node's `server.close()`) closes every idle keep-alive
 * connection on the spot; a client that writes its next request on one at that moment gets a reset
 * with the outcome unknown (41 of them in the fault test's SIGTERM under load). Instead:
 *
 * 1. `begin()`: `/ready` says 503 (load balancers stop sending new clients) and every response
 *    carries `Connection: close`, so each client leaves its connection after its next answer;
 * 2. `close()`: waits until no connection is open (or the drain deadline), then closes as before:
 *    the listener stops, what is idle is closed, event streams end, requests in flight are answered.
 *
 * Only a connection left idle through the whole drain can still meet the old race; every other
 * client sees an answer, or a refused connection (nothing was sent: safe to retry anywhere).
 */
export interface Drain {
  /** True once the shutdown began: responses say `Connection: close`, readiness says 503. */
  readonly active: boolean;
  begin(): void;
  /**
   * Runs `fn` when the drain begins (at once if it has). Event streams end there: they never end by
   * themselves, so waiting for them would only hold the shutdown until the drain deadline; their
   * clients reconnect (EventSource does so by itself) and resume where they were.
   */
  onBegin(fn: () => void): void;
  /** Closes the app's server as above; resolves once Fastify's close has (every connection ended). */
  close(app: { server: Server; close(): Promise<unknown> }, opts: { deadline: number }): Promise<void>;
}

/**
 * Ends an event stream because the server is shutting down, and its connection with it: the
 * stream's headers promised keep-alive, and an idle kept-alive connection would hold the drain
 * until the client's next request or the keep-alive timeout.
 */
export function endForShutdown(res: ServerResponse): void {
  if (res.writableEnded) return;
  const socket = res.socket;
  res.end();
  // After the stream's last chunk; Node decided keep-alive when it wrote the headers.
  socket?.end();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

function openConnections(server: Server): Promise<number> {
  return new Promise((resolve) => server.getConnections((err, n) => resolve(err ? 0 : n)));
}

export function createDrain(): Drain {
  let active = false;
  const listeners: (() => void)[] = [];
  const begin = () => {
    if (active) return;
    active = true;
    for (const fn of listeners.splice(0)) fn();
  };
  return {
    get active() {
      return active;
    },
    begin,
    onBegin(fn) {
      if (active) fn();
      else listeners.push(fn);
    },
    async close(app, opts) {
      begin();
      const server = app.server;
      // `deadline` is a performance.now() instant; 0 or past: no waiting.
      while (server.listening && performance.now() < opts.deadline && (await openConnections(server)) > 0) await sleep(50);
      await app.close();
    },
  };
}
