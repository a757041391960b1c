import { createServer, type Server } from 'node:http';
import type { Logger } from '../logger.js';
import { renderMetrics } from './registry.js';

/**
 * The Prometheus listener (`METRICS_PORT`): `GET /metrics` without a token, on its own port so it
 * can stay on a private network (compose: reachable by Prometheus only, not published) while the
 * API's `/metrics` asks for a staff token. Anything else is a 404.
 */
export async function startMetricsServer(opts: { host: string; port: number; logger: Logger }): Promise<Server> {
  const log = opts.logger.child({ module: 'metrics' });
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    renderMetrics().then(
      ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
      (err: unknown) => {
        log.error({ err }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  log.info({ address: addr }, 'metrics listener for Prometheus');
  return server;
}
