import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { DOCS_CSP } from './security-headers.js';

/**
 * One OpenAPI document for the whole API, generated from the same TypeBox schemas that validate
 * requests and serialize replies, so the document cannot drift from the behaviour. It is served as
 * JSON at `/docs/json` and browsable at `/docs`; the UI's assets ship in the package and are served
 * locally (no CDN), so the docs work offline and behind strict firewalls.
 *
 * Must be registered before any route, because it collects routes as they are added.
 */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Course enrollment engine',
        version,
        description:
          'Go-service-compatible enrollment API (`/login`, `/student/*`, `/staff/*`) plus resource-style routes ' +
          'for sections, people, health and readiness. Errors are `{"reason", "code"}`; `code` is stable.',
      },
      components: {
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      },
      tags: [
        { name: 'auth', description: 'Tokens' },
        { name: 'student', description: 'Go-compatible student routes' },
        { name: 'staff', description: 'Go-compatible staff routes' },
        { name: 'sections', description: 'Sections as resources' },
        { name: 'people', description: 'Students, staff, departments, the caller' },
        { name: 'health', description: 'Liveness and readiness' },
        { name: 'notices', description: "A student's own notices (SSE), seat watches, and webhooks for integrations" },
        { name: 'admin', description: 'Staff admin page: live section list, statechart (also as Mermaid at /admin/machine.mmd), live feed' },
      ],
    },
  });
  // The docs pages get their own policy (swagger-ui needs its scripts and styles), over the API's.
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: DOCS_CSP });
}
