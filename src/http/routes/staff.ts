import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Engine } from '../../engine/engine.js';
import { requestMeta } from '../auth.js';
import type { RouteContext } from '../context.js';
import { markGoCompatible } from '../error-handler.js';
import { bySection, toHeldCourse } from '../course-data.js';
import { bearer, errorResponses, GoBody, Id, NoContent, SectionStudents, StudentCourses } from '../schemas.js';

/** `GET /staff/course-students` and `GET /sections/:c/:g/students` share this reply. */
export function sectionStudents(engine: Engine, courseId: number, groupId: number) {
  const m = engine.sectionMembers(courseId, groupId);
  return { registered_students: m.registered, reserved_queue_students: m.queue };
}

/**
 * The Go service's staff routes, unchanged. Staff act on any student; their commands skip the
 * student rules (force enroll grows a full section by one seat) as SPEC section 4 allows.
 */
export const staffRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens }) => {
  markGoCompatible(app);
  app.addHook('onRequest', tokens.requireRole('staff'));

  app.put(
    '/staff/force-std',
    {
      schema: {
        tags: ['staff'],
        summary: 'Force-enroll a student (skips student rules; a full section grows by one seat)',
        security: bearer,
        body: GoBody({ std_id: Id('Student id'), course_id: Id(), group_id: Id() }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { std_id, course_id, group_id } = request.body;
      await engine.forceEnroll(std_id, course_id, group_id, requestMeta(request));
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/staff/force-std',
    {
      schema: {
        tags: ['staff'],
        summary: 'Force-drop a student (uses none of their actions; promotes the reserve queue)',
        security: bearer,
        querystring: Type.Object({ std_id: Id('Student id'), course_id: Id(), group_id: Id() }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { std_id, course_id, group_id } = request.query;
      await engine.forceDrop(std_id, course_id, group_id, requestMeta(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/staff/student-courses',
    {
      schema: {
        tags: ['staff'],
        summary: "A student's sections, as GET /student/course shows them",
        security: bearer,
        querystring: Type.Object({ std_id: Id('Student id') }),
        response: { 200: StudentCourses, ...errorResponses },
      },
    },
    async (request) => {
      const held = engine.studentSections(request.query.std_id).sort((a, b) => bySection(a.section, b.section));
      return { data: held.map(toHeldCourse) };
    },
  );

  app.get(
    '/staff/course-students',
    {
      schema: {
        tags: ['staff'],
        summary: "A section's registered students and its reserve queue in order",
        security: bearer,
        querystring: Type.Object({ course_id: Id(), group_id: Id() }),
        response: { 200: SectionStudents, ...errorResponses },
      },
    },
    async (request) => {
      return sectionStudents(engine, request.query.course_id, request.query.group_id);
    },
  );

  app.patch(
    '/staff/capacity',
    {
      schema: {
        tags: ['staff'],
        summary: 'Change capacity (never below the registered count; growth promotes the queue in order)',
        security: bearer,
        body: GoBody({ course_id: Id(), group_id: Id(), capacity: Type.Integer({ minimum: 0, maximum: 1_000_000 }) }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { course_id, group_id, capacity } = request.body;
      await engine.changeCapacity(course_id, group_id, capacity, requestMeta(request));
      return reply.code(204).send(null);
    },
  );
};
