import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { principalOf, requestMeta } from '../auth.js';
import type { RouteContext } from '../context.js';
import { bearer, errorResponses, Id } from '../schemas.js';

/**
 * The conditional swap ("drop A only if B succeeds", issue 16). Not a Go service route, so its
 * refusals keep their own status (403, 404, 409) instead of the Go routes' blanket 400. The student
 * is always the token's subject.
 */
export const swapRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens }) => {
  app.addHook('onRequest', tokens.requireRole('student'));

  const CourseGroup = (description: string) =>
    Type.Object({ course_id: Id(), group_id: Id() }, { additionalProperties: false, description });

  app.post(
    '/student/swap',
    {
      schema: {
        tags: ['student'],
        summary: 'Drop one section only if a place in another is granted (atomic; uses one action)',
        description:
          'The enroll is decided first, with every rule of PUT /student/course, while the dropped section\'s units and ' +
          'class and exam times count as free. Only if it gives a seat (or, with queue_ok, a reserve-queue place) is ' +
          'the dropped section left and its reserve queue promoted; otherwise nothing changes and the refusing rule\'s ' +
          'code is the answer (NO_SEAT when only a queue place was left and queue_ok was not set). Both halves and the ' +
          'action used are written as one change: a 200 means all of it is durable. The two sections may be of the ' +
          'same course (then it is a change of group) or of different courses.',
        security: bearer,
        body: Type.Object(
          {
            drop: CourseGroup('The section you hold and want to leave'),
            enroll: CourseGroup('The section you want a place in'),
            queue_ok: Type.Optional(Type.Boolean({ default: false, description: 'Accept a reserve-queue place in `enroll`' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object(
            {
              status: Type.Union([Type.Literal('registered'), Type.Literal('queued')], {
                description: 'Where you landed in `enroll`',
              }),
              remaining_actions: Type.Integer({ description: 'Drop/change actions you have left' }),
            },
            { title: 'SwapResult' },
          ),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const p = principalOf(request);
      const b = request.body;
      const status = await engine.swap(
        p.id,
        {
          drop: { courseId: b.drop.course_id, groupId: b.drop.group_id },
          enroll: { courseId: b.enroll.course_id, groupId: b.enroll.group_id },
          queueOk: b.queue_ok === true,
        },
        requestMeta(request),
      );
      return { status, remaining_actions: engine.getStudent(p.id)?.remainingActions ?? 0 };
    },
  );
};
