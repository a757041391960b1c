import type { Server, ServerResponse } from 'node:http';
import { Server as NetServer } from 'node:net';

/**
 * Graceful shutdown of the HTTP server, so that a rolling restart on registration day costs no
 * client a connection reset. Closing at once (Node's `server.close()`) closes every idle keep-alive
 * connection on the spot; a client that writes its next request on one at that moment gets a reset
 * with the outcome unknown (41 of them in the fault test's SIGTERM under load). Instead:
 *
 * 1. `begin()`: `/ready` says 503 (load balancers stop sending new clients) and every response
 *    carries `Connection: close`, so each client leaves its connection after its next answer;
 * 2. `close()`: waits until no connection is open (or the drain deadline), then the listener
 *    stops, what is idle is closed, requests in flight are answered, and a request still arriving
 *    is given {@link CLOSING_RECEIVE_MS} from its first byte, then answered 408 (see below).
 *
 * Only a connection left idle through the whole drain can still meet the old race; every other
 * client sees an answer, or a refused connection (nothing was sent: safe to retry anywhere).
 *
 * A request still arriving when the listener stops (its headers or its body incomplete): Node
 * enforces `headersTimeout` and `requestTimeout` (server-options.ts) from a timer that its
 * `http.Server.close()` stops, and Fastify's close then waits for every connection, so a client that
 * never finished its body held the shutdown until main.ts's 30 s deadline (exit code 1). The drain
 * therefore stops the listener itself (net's close, which leaves that timer running) and shortens
 * both limits to {@link CLOSING_RECEIVE_MS}; Node answers what is past it 408 in the one error shape
 * (the app's clientErrorHandler) and closes the connection. A request is decided only once it has
 * arrived, so nothing of one cut off is done: the client sends it again, to another instance. A
 * request that has arrived is not touched: it is answered, however long its decision or its
 * durability takes. Fastify's close runs once no connection is left.
 */
export interface Drain {
  /** True once the shutdown began: responses say `Connection: close`, readiness says 503. */
  readonly active: boolean;
  begin(): void;
  /**
   * Runs `fn` when the drain begins (at once if it has). Event streams end there: they never end by
   * themselves, so waiting for them would only hold the shutdown until the drain deadline; their
   * clients reconnect (a header-authenticated client by itself; a browser page that opened the
   * stream with a one-use ticket with a new ticket and `last_event_id`, docs/notices.md) and resume
   * where they were.
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

/**
 * Once the listener has stopped, how long a request may take to arrive, from its first byte (from
 * its connection's opening while not one byte came), when the configured limits are not shorter.
 * The drain has already given connections `SHUTDOWN_DRAIN_MS`; a request sent at network speed
 * arrives in milliseconds (bodies here are small JSON), so one still arriving a second after it
 * began is a slow or stalled client, and waiting for it would only push the exit towards an
 * orchestrator's kill (docker stop: 10 s). Node checks the limits every `checkIntervalMs` (at most
 * 1 s), so such a request is answered within 2 s of the listener's stop.
 */
export const CLOSING_RECEIVE_MS = 1_000;

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
      if (server.listening) {
        const bound = (ms: number) => (ms > 0 ? Math.min(ms, CLOSING_RECEIVE_MS) : CLOSING_RECEIVE_MS);
        server.headersTimeout = bound(server.headersTimeout);
        server.requestTimeout = bound(server.requestTimeout);
        // net's close, not http's: no new connection, and Node keeps checking the limits above.
        // Its callback comes once no connection is left. What is idle is closed now, as http's close
        // does, and so is a connection that becomes idle once its answer is out (one whose request
        // came before the drain began: its answer did not say Connection: close, and it would
        // otherwise hold the close for the keep-alive timeout).
        await new Promise<void>((resolve) => {
          const idle = setInterval(() => server.closeIdleConnections(), 50);
          NetServer.prototype.close.call(server, () => {
            clearInterval(idle);
            resolve();
          });
          server.closeIdleConnections();
        });
      }
      await app.close();
    },
  };
}
