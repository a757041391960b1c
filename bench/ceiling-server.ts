/**
 * The ceiling: a bare Fastify server with one route answering `{"ok":true}` to any method and
 * path (JSON bodies are parsed, as the engine parses them). Whatever the engine does per request
 * costs on top of this; every scenario reports its throughput as a ratio of this server's,
 * measured with the same load generator and connection count in the same run.
 *
 * Keep this file free of TypeScript syntax: unless the engine runs under tsx, the harness runs a
 * copy of it with plain node (as .mjs), so both are measured without a TypeScript loader.
 */
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.route({ method: ['GET', 'PUT', 'POST', 'PATCH', 'DELETE'], url: '/*', handler: async () => ({ ok: true }) });
await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) });
const stop = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
