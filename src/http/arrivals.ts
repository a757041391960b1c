import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * What the server has on its way to the store: write requests it is handling and connections that
 * have not sent their first request yet. The group commit asks it whether a lingering batch can go
 * out now (src/persistence/group-commit.ts, `settled`): when every write being handled already
 * waits in the batch and no new connection is about to send one, lingering only adds idle time.
 * Keep-alive clients (all of them waiting in the batch) then get their answers a linger sooner,
 * while a connection storm (new connections arriving all the time) still fills its batches.
 */
export interface ArrivalGauge {
  /** True when no write request is being handled beyond the `waiting` appends, and no new connection is pending. */
  settled(waiting: number): boolean;
  /** Counts the server's new connections until their first request (or their close). */
  watch(server: Server): void;
  /** Called for every request as it starts: a write is counted until its answer is sent (or its connection is gone). */
  request(req: IncomingMessage, res: ServerResponse): void;
}

const kFresh = Symbol('freshConnection');

/** Creates the gauge main.ts hands both to the HTTP layer (which feeds it) and to the store (which asks it). */
export function createArrivalGauge(): ArrivalGauge {
  /** Connections accepted whose first request has not arrived. */
  let fresh = 0;
  /** Write requests started and not answered. */
  let writes = 0;
  const writeDone = () => {
    writes -= 1;
  };
  const onSocketClose = function (this: Socket & { [kFresh]?: boolean }) {
    if (this[kFresh]) {
      this[kFresh] = false;
      fresh -= 1;
    }
  };
  return {
    settled: (waiting) => fresh === 0 && writes <= waiting,
    watch(server) {
      server.on('connection', (socket: Socket & { [kFresh]?: boolean }) => {
        socket[kFresh] = true;
        fresh += 1;
        socket.once('close', onSocketClose);
      });
    },
    request(req, res) {
      const socket = req.socket as Socket & { [kFresh]?: boolean };
      if (socket[kFresh]) {
        socket[kFresh] = false;
        fresh -= 1;
      }
      const m = req.method;
      if (m === 'GET' || m === 'HEAD' || m === 'OPTIONS') return;
      writes += 1;
      res.once('close', writeDone);
    },
  };
}
