import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { RouteContext } from '../context.js';
import { markGoCompatible } from '../error-handler.js';
import { principalOf, requestMeta } from '../auth.js';
import { isEngineError } from '../../errors.js';
import { countEnrollOutcome } from '../request-metrics.js';
import { bySection, toHeldCourse } from '../course-data.js';
import { createCourseListRenderer, JSON_TYPE } from '../course-list.js';
import { bearer, CourseData, errorResponses, GoBody, Id, NoContent, StudentCourses } from '../schemas.js';

/**
 * The Go service's student routes, unchanged in path, body, status and field names. The student
 * is always the token's subject: a student can only ever act on their own schedule.
 */
/** Methods that change nothing: never counted against the write limit (HEAD is a GET without its body). */
const READ_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

export const studentRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, throttle }) => {
  markGoCompatible(app);
  app.addHook('onRequest', tokens.requireRole('student'));
  const courseList = createCourseListRenderer();
  // The per-student write limit: counted before the body is validated, as a click is, and in
  // preValidation so that it runs after the app-level forwarder: a write forwarded to its shard's
  // owner is counted once, by the instance that decides it, not by both.
  if (throttle.policy.studentWriteLimit > 0) {
    app.addHook('preValidation', async (request) => {
      if (!READ_METHODS.has(request.method) && request.principal !== null) await throttle.studentWrite(request.principal.id);
    });
  }

  const CourseGroup = GoBody({ course_id: Id(), group_id: Id() });

  app.put(
    '/student/course',
    {
      schema: {
        tags: ['student'],
        summary: 'Enroll in a section (registered, or appended to its reserve queue)',
        description:
          'Rules are checked in order: enrollment window, section open, sex lock, units, same course, exam and class ' +
          'conflicts, then a seat or a reserve-queue place. The first failure is the answer.',
        security: bearer,
        body: CourseGroup,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const p = principalOf(request);
      try {
        await engine.enroll(p.id, request.body.course_id, request.body.group_id, requestMeta(request));
      } catch (err) {
        countEnrollOutcome(isEngineError(err) ? err.code : 'INTERNAL');
        throw err;
      }
      countEnrollOutcome('OK');
      return reply.code(204).send(null);
    },
  );

  app.patch(
    '/student/course',
    {
      schema: {
        tags: ['student'],
        summary: 'Move to another group of a course you hold (atomic; uses one action)',
        description:
          'As on the Go service (SPEC): the new group is enrolled in as a new enroll would be, so when it has no free seat ' +
          'but room in its reserve queue the student is queued there and gives up the seat they held. To move only into a ' +
          'seat, use `POST /student/swap`, whose default is a seat or nothing.',
        security: bearer,
        body: GoBody({ course_id: Id(), group_id: Id('The new group') }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const p = principalOf(request);
      await engine.changeGroup(p.id, request.body.course_id, request.body.group_id, requestMeta(request));
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/student/course',
    {
      schema: {
        tags: ['student'],
        summary: 'Drop the group you hold of a course (uses one action; promotes the reserve queue)',
        security: bearer,
        querystring: Type.Object({ course_id: Id() }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const p = principalOf(request);
      await engine.drop(p.id, request.query.course_id, requestMeta(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/student/course',
    {
      schema: {
        tags: ['student'],
        summary: 'Your sections, with your reserve-queue position where queued',
        security: bearer,
        response: { 200: StudentCourses, ...errorResponses },
      },
    },
    async (request) => {
      const p = principalOf(request);
      const held = engine.studentSections(p.id).sort((a, b) => bySection(a.section, b.section));
      return { data: held.map(toHeldCourse) };
    },
  );

  app.get(
    '/student/courses',
    {
      schema: {
        tags: ['student'],
        summary: 'All sections, optionally only those offered for one department',
        security: bearer,
        querystring: Type.Object({ department: Type.Optional(Id('Department id')) }),
        response: { 200: Type.Object({ courses: Type.Array(CourseData) }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const department = request.query.department;
      const body = courseList.render('courses', engine.listSections({ department }), department === undefined ? 'all' : String(department));
      // Already the schema's JSON (see course-list.ts): sent as it is, not serialised again.
      return reply.type(JSON_TYPE).send(body as never);
    },
  );
};
