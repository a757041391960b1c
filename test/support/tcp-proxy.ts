import net from 'node:net';

/**
 * A small TCP proxy for fault tests: put it between a process and a shared service (RabbitMQ,
 * PostgreSQL) and cut the link without touching the service itself, which other test runs and
 * other users may be sharing.
 *
 * - `cut()` resets every open connection and refuses new ones (accepted and reset at once, so a
 *   client learns within milliseconds, as when a broker or database host goes away);
 * - `resume()` lets new connections through again (the cut ones stay dead: clients must reconnect);
 * - `stall()` stops moving bytes either way on every connection (open or new) without closing any,
 *   as a link that hangs does; `flow()` moves them again (nothing is lost);
 * - `blackhole()` reads and throws away the bytes of the open connections, either way, without
 *   closing them (a middlebox that loses them); `flow()` moves them again (what was lost is lost);
 * - `close()` stops listening and resets everything.
 */
/** Listens on 127.0.0.1 at a free port (every test proxy does). */
export function listenOnLoopback(server: net.Server): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
}

/** `url` with its host and port replaced by those of a proxy listening on `server`. */
export function throughProxy(url: string, server: net.Server): string {
  const u = new URL(url);
  u.hostname = '127.0.0.1';
  u.port = String((server.address() as net.AddressInfo).port);
  return u.toString();
}

const discard = (): void => undefined;

export class TcpProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private refusing = false;
  private stalled = false;
  /** Each open connection's [client, upstream] pair, to stall and restart their pipes. */
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  /** Connections accepted and forwarded since start (a reconnect shows up here). */
  accepted = 0;

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.server = net.createServer((client) => this.onClient(client));
  }

  /** Listens on 127.0.0.1 at a free port and forwards to `targetHost:targetPort`. */
  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const p = new TcpProxy(targetHost, targetPort);
    await listenOnLoopback(p.server);
    return p;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** `url` with its host and port replaced by the proxy's. */
  rewrite(url: string): string {
    return throughProxy(url, this.server);
  }

  get isCut(): boolean {
    return this.refusing;
  }

  /** Open forwarded connections right now (each counts its two sockets once). */
  get openConnections(): number {
    return Math.floor(this.sockets.size / 2);
  }

  cut(): void {
    this.refusing = true;
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
  }

  resume(): void {
    this.refusing = false;
  }

  stall(): void {
    this.stalled = true;
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  blackhole(): void {
    this.stall();
    for (const [client, upstream] of this.pairs) {
      for (const s of [client, upstream]) {
        s.on('data', discard);
        s.resume();
      }
    }
  }

  flow(): void {
    this.stalled = false;
    for (const [client, upstream] of this.pairs) {
      client.off('data', discard);
      upstream.off('data', discard);
      client.pipe(upstream);
      upstream.pipe(client);
    }
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onClient(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    this.accepted += 1;
    client.setNoDelay(true);
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    upstream.setNoDelay(true);
    upstream.on('error', () => undefined);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const drop = () => {
      this.sockets.delete(client);
      this.sockets.delete(upstream);
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', drop);
    upstream.on('close', drop);
    if (this.stalled) {
      client.pause();
      upstream.pause();
      return;
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
