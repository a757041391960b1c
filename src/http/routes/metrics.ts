import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { renderMetrics } from '../../metrics/registry.js';
import type { RouteContext } from '../context.js';
import { bearer, errorResponses } from '../schemas.js';

/**
 * `GET /metrics` on the API port, for staff with a token (an operator's curl). Prometheus scrapes
 * the separate `METRICS_PORT` listener instead, which needs no token and stays on a private network.
 */
export const metricsRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { tokens }) => {
  app.get(
    '/metrics',
    {
      onRequest: tokens.requireRole('staff'),
      schema: {
        tags: ['health'],
        summary: 'Prometheus metrics (text format; staff token). Prometheus itself scrapes METRICS_PORT, without a token',
        security: bearer,
        produces: ['text/plain'],
        response: { 200: Type.String({ description: 'Prometheus text exposition format' }), ...errorResponses },
      },
    },
    async (_request, reply) => {
      const { contentType, body } = await renderMetrics();
      return reply.type(contentType).send(body);
    },
  );
};
