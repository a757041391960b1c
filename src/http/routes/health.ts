import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ReadinessReport } from '../../persistence/types.js';
import type { RouteContext } from '../context.js';
import { errorResponses, Readiness } from '../schemas.js';

/**
 * Liveness and readiness, without auth, for load balancers and orchestrators. Liveness says only
 * that the process answers; readiness asks the persistence layer whether writes can be made
 * durable, so traffic is steered away while they cannot. Both are public: their reasons are short
 * and fixed, the details are in the logs.
 */
export const healthRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { readiness }) => {
  // The address printed at start should answer: it says where the API's documentation and the admin page are.
  app.get(
    '/',
    {
      schema: {
        tags: ['health'],
        summary: 'Where to go from here: the API documentation, the admin page, health and readiness',
        response: {
          200: Type.Object({
            service: Type.String(),
            docs: Type.String(),
            openapi: Type.String(),
            admin: Type.String(),
            health: Type.String(),
            ready: Type.String(),
          }),
          ...errorResponses,
        },
      },
    },
    async () => ({
      service: 'course-enrollment engine',
      docs: '/docs',
      openapi: '/docs/json',
      admin: '/admin',
      health: '/health',
      ready: '/ready',
    }),
  );

  app.get(
    '/health',
    {
      schema: {
        tags: ['health'],
        summary: 'Liveness: the process is up',
        response: { 200: Type.Object({ status: Type.Literal('ok') }), ...errorResponses },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/ready',
    {
      schema: {
        tags: ['health'],
        summary: 'Readiness: storage can make writes durable (200), or not (503)',
        response: { 200: Readiness, 503: Readiness, ...errorResponses },
      },
    },
    async (request, reply) => {
      let report: ReadinessReport;
      try {
        report = await readiness();
      } catch (err) {
        // The details (a driver's message may name hosts or users) go to the log, not to the public.
        request.log.warn({ err }, 'readiness check failed');
        report = { ready: false, checks: { readiness: { ok: false, detail: 'the readiness check failed' } } };
      }
      return reply.code(report.ready ? 200 : 503).send(report);
    },
  );
};
