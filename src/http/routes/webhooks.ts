import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { NOTICE_KINDS } from '../../notices/notices.js';
import type { WebhookService } from '../../notices/webhooks.js';
import { principalOf } from '../auth.js';
import type { RouteContext } from '../context.js';
import { bearer, errorResponses, Id, NoContent } from '../schemas.js';

/**
 * Webhooks (issue 16), staff only: register an endpoint and a secret, list them, stop one, and
 * see each delivery with its attempts. The signature scheme is in docs/webhooks.md.
 */

export interface WebhookRouteOptions extends RouteContext {
  webhooks: WebhookService;
}

const Kind = Type.Union(NOTICE_KINDS.map((k) => Type.Literal(k)));

const WebhookSchema = Type.Object({
  id: Type.Integer(),
  url: Type.String(),
  kinds: Type.Unsafe<string[] | null>({ type: ['array', 'null'], items: { type: 'string' }, description: 'null: every kind' }),
  created_by: Type.Integer(),
  created_at: Type.String({ format: 'date-time' }),
  active: Type.Boolean(),
});

const nullable = (type: 'string' | 'integer', description?: string) =>
  Type.Unsafe<string | number | null>({ type: [type, 'null'], ...(description ? { description } : {}) });

/** A delivery's status (the values of `webhook_deliveries.status`). */
const DeliveryStatusSchema = Type.Union([Type.Literal('pending'), Type.Literal('retrying'), Type.Literal('delivered'), Type.Literal('dead'), Type.Literal('cancelled')]);

const DeliverySchema = Type.Object({
  id: Type.Integer({ description: 'Also sent as X-Enrollment-Delivery: receivers dedupe on it' }),
  notice_key: Type.String(),
  kind: Type.String(),
  student_id: Type.Integer(),
  status: DeliveryStatusSchema,
  attempts: Type.Integer(),
  next_attempt_at: Type.String({ format: 'date-time' }),
  created_at: Type.String({ format: 'date-time' }),
  finished_at: nullable('string'),
  attempt_log: Type.Array(
    Type.Object({
      attempt: Type.Integer(),
      at: Type.String({ format: 'date-time' }),
      status_code: nullable('integer', 'HTTP status, null when no answer came'),
      error: nullable('string'),
      duration_ms: Type.Integer(),
    }),
  ),
});

const toWire = (w: { id: number; url: string; kinds: string[] | null; createdBy: number; createdAt: string; active: boolean }) => ({
  id: w.id,
  url: w.url,
  kinds: w.kinds,
  created_by: w.createdBy,
  created_at: w.createdAt,
  active: w.active,
});

export const webhookRoutes: FastifyPluginAsyncTypebox<WebhookRouteOptions> = async (app, { webhooks, tokens }) => {
  app.addHook('onRequest', tokens.requireRole('staff'));
  const IdParams = Type.Object({ id: Id('webhook id') });

  app.post(
    '/webhooks',
    {
      schema: {
        tags: ['notices'],
        summary: 'Register a webhook endpoint: every student notice (or the kinds listed) is POSTed to it, signed',
        description:
          'Deliveries are signed with HMAC-SHA256 over `<timestamp>.<body>` (headers X-Enrollment-Timestamp and ' +
          'X-Enrollment-Signature: v1=<hex>; see docs/webhooks.md), retried with exponential backoff and dead-lettered ' +
          `after ${webhooks.maxAttempts} attempts. The secret is never returned. At most ${webhooks.maxActive} webhooks are active at once ` +
          '(WEBHOOK_MAX_ACTIVE): one more is refused with 429 TOO_MANY_WEBHOOKS and nothing is stored; deleted ones do not count.',
        security: bearer,
        body: Type.Object(
          {
            url: Type.String({
              minLength: 8,
              maxLength: 2000,
              description:
                'http or https URL. Its host must not be (or resolve to) an address that is not globally reachable (loopback, private, ' +
                'link-local, CGNAT, multicast, unspecified, documentation, benchmarking or otherwise reserved by the IANA special-purpose ' +
                'registries) nor an address of the server itself (400 WEBHOOK_TARGET_FORBIDDEN) unless the server runs with ' +
                'WEBHOOK_ALLOW_PRIVATE_TARGETS=true',
            }),
            secret: Type.String({ minLength: 16, maxLength: 256, description: 'Shared secret that signs every delivery' }),
            kinds: Type.Optional(Type.Array(Kind, { minItems: 1, uniqueItems: true, description: 'Omit for every kind' })),
          },
          { additionalProperties: false },
        ),
        response: { 201: WebhookSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const w = await webhooks.create({
        url: request.body.url,
        secret: request.body.secret,
        kinds: request.body.kinds ?? null,
        createdBy: principalOf(request).id,
      });
      return reply.code(201).send(toWire(w));
    },
  );

  app.get(
    '/webhooks',
    {
      schema: {
        tags: ['notices'],
        summary: 'Registered webhooks (without their secrets)',
        security: bearer,
        response: { 200: Type.Object({ webhooks: Type.Array(WebhookSchema) }), ...errorResponses },
      },
    },
    async () => ({ webhooks: (await webhooks.list()).map(toWire) }),
  );

  app.delete(
    '/webhooks/:id',
    {
      schema: {
        tags: ['notices'],
        summary: 'Stop a webhook (its delivery history is kept)',
        security: bearer,
        params: IdParams,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      await webhooks.deactivate(request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/webhooks/:id/deliveries',
    {
      schema: {
        tags: ['notices'],
        summary: "A webhook's latest deliveries, newest first, each with its attempts",
        description:
          'Pages back with `before` (the smallest delivery id of the page read: deliveries older than it); ' +
          '`status` lists one status only, e.g. `dead` for what a receiver never got after every attempt.',
        security: bearer,
        params: IdParams,
        querystring: Type.Object({
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
          before: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'only deliveries with a smaller id (the next page)' })),
          status: Type.Optional(DeliveryStatusSchema),
        }),
        response: { 200: Type.Object({ deliveries: Type.Array(DeliverySchema) }), ...errorResponses },
      },
    },
    async (request) => {
      const { before, status } = request.query;
      const list = await webhooks.deliveries(request.params.id, request.query.limit ?? 100, {
        ...(before === undefined ? {} : { before }),
        ...(status === undefined ? {} : { status }),
      });
      return {
        deliveries: list.map((d) => ({
          id: d.id,
          notice_key: d.noticeKey,
          kind: d.kind,
          student_id: d.studentId,
          status: d.status,
          attempts: d.attempts,
          next_attempt_at: d.nextAttemptAt,
          created_at: d.createdAt,
          finished_at: d.finishedAt,
          attempt_log: d.attemptLog.map((a) => ({
            attempt: a.attempt,
            at: a.at,
            status_code: a.statusCode,
            error: a.error,
            duration_ms: a.durationMs,
          })),
        })),
      };
    },
  );
};
