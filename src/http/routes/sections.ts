import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import { encodeClassTime, isValidClassTime } from '../../actors/class-time.js';
import type { SectionInfo } from '../../actors/types.js';
import type { Engine, SectionPatch } from '../../engine/engine.js';
import { EngineError, isEngineError } from '../../errors.js';
import { requestMeta } from '../auth.js';
import type { RouteContext } from '../context.js';
import { toCourseData, toTransition } from '../course-data.js';
import { createCourseListRenderer, JSON_TYPE } from '../course-list.js';
import {
  bearer,
  ClassSlot,
  CourseData,
  errorResponses,
  Id,
  SectionParams,
  sectionFields,
  SectionStudents,
  Transition,
} from '../schemas.js';
import { sectionStudents } from './staff.js';

/**
 * Resource-style section routes: browsing for everyone logged in, and creating, editing,
 * closing and reopening for staff. Sections created here are live at once (SPEC section 4).
 */

type Slot = Static<typeof ClassSlot>;

/**
 * One packed class time from either input form, validated: the packed `class_time` the Go schema
 * stores, or a readable `class_slot`. Returns undefined when neither was given.
 */
export function resolveClassTime(packed: number | null | undefined, slot: Slot | null | undefined): number | null | undefined {
  if (packed !== undefined && slot !== undefined) {
    throw new EngineError('BAD_REQUEST', 'give class_time or class_slot, not both');
  }
  if (slot !== undefined) {
    if (slot === null) return null;
    if (slot.start_minute >= slot.end_minute) {
      throw new EngineError('BAD_REQUEST', 'class_slot.start_minute must be before class_slot.end_minute');
    }
    const days = slot.days.reduce((mask, d) => mask | (1 << d), 0);
    return encodeClassTime({ days, startMinute: slot.start_minute, endMinute: slot.end_minute });
  }
  if (packed === undefined || packed === null) return packed;
  // 0 is how the Go schema (class_time NOT NULL) says "no class time": a tool copying Go rows sends it.
  if (packed === 0) return null;
  if (!isValidClassTime(packed)) {
    throw new EngineError(
      'BAD_REQUEST',
      'class_time does not decode to a valid slot (needs a weekday bit and start_minute < end_minute <= 1440)',
    );
  }
  return packed;
}

/**
 * A field the database declares NOT NULL (the Go service's schema) must be given: without it the
 * record could never be written, and the change would be acknowledged and then stop the batcher.
 */
export function assertRequired(required: boolean, value: unknown, field: string): void {
  if (required && (value === undefined || value === null)) {
    throw new EngineError('BAD_REQUEST', `${field} is required: this database (the Go service's schema) does not allow it to be empty`);
  }
}

/** Sections and students reference departments; an unknown one could never be written to the database. */
export function assertDepartment(engine: Engine, id: number | null | undefined, field: string): void {
  if (id === undefined || id === null) return;
  if (!engine.listDepartments().some((d) => d.id === id)) {
    throw new EngineError('BAD_REQUEST', `${field}: department ${id} does not exist`);
  }
}

const examMs = (s: number | null): number | null => (s === null ? null : s * 1000);

const NewSectionBody = Type.Object(
  {
    course_id: Id(),
    group_id: Id(),
    for_department: Type.Optional(sectionFields.for_department),
    name: sectionFields.name,
    lecturer: Type.Optional(sectionFields.lecturer),
    units: sectionFields.units,
    capacity: sectionFields.capacity,
    reserve_capacity: sectionFields.reserve_capacity,
    exam_time: Type.Optional(sectionFields.exam_time),
    class_time: Type.Optional(sectionFields.class_time),
    class_slot: Type.Optional(sectionFields.class_slot),
    sex_lock: Type.Optional(sectionFields.sex_lock),
    notes: Type.Optional(sectionFields.notes),
    closed: Type.Optional(Type.Boolean({ description: 'Create the section closed (default false)' })),
  },
  { additionalProperties: false },
);

const SectionPatchBody = Type.Object(
  {
    capacity: Type.Optional(sectionFields.capacity),
    reserve_capacity: Type.Optional(sectionFields.reserve_capacity),
    sex_lock: Type.Optional(sectionFields.sex_lock),
    name: Type.Optional(sectionFields.name),
    lecturer: Type.Optional(sectionFields.lecturer),
    notes: Type.Optional(sectionFields.notes),
    units: Type.Optional(sectionFields.units),
    exam_time: Type.Optional(sectionFields.exam_time),
    class_time: Type.Optional(sectionFields.class_time),
    class_slot: Type.Optional(sectionFields.class_slot),
    for_department: Type.Optional(sectionFields.for_department),
    force: Type.Optional(
      Type.Boolean({
        description:
          'Apply a change of units, exam time or class time even where it puts a member over their units limit or into an ' +
          'exam or class clash (refused with MEMBER_RULES_CONFLICT without it). Default false.',
      }),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
);

/** Registers the /sections routes; see the module comment for who may call what. */
export const sectionRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, requirements }) => {
  const anyUser = tokens.requireRole('any');
  const staffOnly = tokens.requireRole('staff');
  const sectionList = createCourseListRenderer();

  app.get(
    '/sections',
    {
      onRequest: anyUser,
      schema: {
        tags: ['sections'],
        summary: 'List sections with live seat counts; filter by department and search text',
        security: bearer,
        querystring: Type.Object({
          department: Type.Optional(Id('Only sections offered for this department')),
          q: Type.Optional(Type.String({ maxLength: 200, description: 'Case-insensitive match on name, lecturer or course id' })),
        }),
        response: { 200: Type.Object({ sections: Type.Array(CourseData) }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const q = request.query.q?.trim().toLowerCase() ?? '';
      const department = request.query.department;
      const all = engine.listSections({ department });
      const body =
        q === ''
          ? sectionList.render('sections', all, department === undefined ? 'all' : String(department))
          : sectionList.render(
              'sections',
              all.filter((s) => s.info.name.toLowerCase().includes(q) || s.info.lecturer.toLowerCase().includes(q) || String(s.info.courseId).includes(q)),
              null,
            );
      // Already the schema's JSON (see course-list.ts): sent as it is, not serialised again.
      return reply.type(JSON_TYPE).send(body as never);
    },
  );

  app.get(
    '/sections/:courseId/:groupId',
    {
      onRequest: anyUser,
      schema: {
        tags: ['sections'],
        summary: 'One section with live seat counts and its machine state',
        security: bearer,
        params: SectionParams,
        response: { 200: CourseData, ...errorResponses },
      },
    },
    async (request) => {
      return toCourseData(engine.getSection(request.params.courseId, request.params.groupId));
    },
  );

  app.get(
    '/sections/:courseId/:groupId/students',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['sections'],
        summary: 'Registered students and the reserve queue in order (as GET /staff/course-students)',
        security: bearer,
        params: SectionParams,
        response: { 200: SectionStudents, ...errorResponses },
      },
    },
    async (request) => {
      return sectionStudents(engine, request.params.courseId, request.params.groupId);
    },
  );

  app.post(
    '/sections',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['sections'],
        summary: 'Create a section; it takes enrollments at once',
        security: bearer,
        body: NewSectionBody,
        response: { 201: CourseData, ...errorResponses },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const classTime = resolveClassTime(b.class_time, b.class_slot) ?? null;
      assertRequired(requirements.sectionDepartment, b.for_department, 'for_department');
      assertDepartment(engine, b.for_department, 'for_department');
      const info: SectionInfo = {
        courseId: b.course_id,
        groupId: b.group_id,
        forDepartment: b.for_department ?? null,
        name: b.name,
        lecturer: b.lecturer ?? '',
        units: b.units,
        examTime: examMs(b.exam_time ?? null),
        classTime,
        notes: b.notes ?? '',
      };
      const view = await engine.createSection(
        {
          info,
          capacity: b.capacity,
          reserveCapacity: b.reserve_capacity,
          sexLock: b.sex_lock ?? null,
          closed: b.closed ?? false,
        },
        requestMeta(request),
      );
      return reply.code(201).send(toCourseData(view));
    },
  );

  app.patch(
    '/sections/:courseId/:groupId',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['sections'],
        summary: 'Edit a section: capacity, reserve capacity, sex lock and descriptive fields',
        description:
          'Refusals (capacity below the registered count, reserve capacity below the queue as the same change leaves it, ' +
          'a sex lock that would exclude a member, new units, exam or class time that would break a member\'s units limit ' +
          'or clash with their other sections unless `force` is true) are checked before anything changes.',
        security: bearer,
        params: SectionParams,
        body: SectionPatchBody,
        response: { 200: CourseData, ...errorResponses },
      },
    },
    async (request) => {
      const { courseId, groupId } = request.params;
      const b = request.body;
      const classTime = resolveClassTime(b.class_time, b.class_slot);
      engine.getSection(courseId, groupId); // an unknown section is a 404 before any other complaint
      if (b.for_department === null) assertRequired(requirements.sectionDepartment, null, 'for_department');
      assertDepartment(engine, b.for_department, 'for_department');
      const info: NonNullable<SectionPatch['info']> = {};
      if (b.name !== undefined) info.name = b.name;
      if (b.lecturer !== undefined) info.lecturer = b.lecturer;
      if (b.notes !== undefined) info.notes = b.notes;
      if (b.units !== undefined) info.units = b.units;
      if (b.exam_time !== undefined) info.examTime = examMs(b.exam_time);
      if (classTime !== undefined) info.classTime = classTime;
      if (b.for_department !== undefined) info.forDepartment = b.for_department;
      // One engine step for the whole patch: all of it or (refused) none of it, atomically.
      const patch: SectionPatch = { info };
      if (b.capacity !== undefined) patch.capacity = b.capacity;
      if (b.reserve_capacity !== undefined) patch.reserveCapacity = b.reserve_capacity;
      if (b.sex_lock !== undefined) patch.sexLock = b.sex_lock;
      if (b.force === true) patch.force = true;
      return toCourseData(await engine.updateSection(courseId, groupId, patch, requestMeta(request)));
    },
  );

  for (const [action, closed] of [
    ['close', true],
    ['reopen', false],
  ] as const) {
    app.post(
      `/sections/:courseId/:groupId/${action}`,
      {
        onRequest: staffOnly,
        schema: {
          tags: ['sections'],
          summary: closed
            ? 'Close a section to enrollment (members keep their places)'
            : 'Reopen a closed section to enrollment',
          security: bearer,
          params: SectionParams,
          response: { 200: CourseData, ...errorResponses },
        },
      },
      async (request) => {
        const { courseId, groupId } = request.params;
        await engine.setClosed(courseId, groupId, closed, requestMeta(request));
        return toCourseData(engine.getSection(courseId, groupId));
      },
    );
  }

  app.get(
    '/sections/:courseId/:groupId/transitions',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['sections'],
        summary: "The section's most recent transitions, newest first",
        description:
          'At most `limit` (500) per page; the next page back is `before_seq=<the last seq of this page>`, so the whole history ' +
          'of a busy section can be read.',
        security: bearer,
        params: SectionParams,
        querystring: Type.Object({
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
          before_seq: Type.Optional(Type.Integer({ minimum: 1, maximum: 9_007_199_254_740_991, description: 'Only transitions before this sequence number (paging back)' })),
        }),
        response: { 200: Type.Object({ transitions: Type.Array(Transition) }), ...errorResponses },
      },
    },
    async (request) => {
      const { courseId, groupId } = request.params;
      const records = await engine.recentTransitions(courseId, groupId, request.query.limit ?? 50, request.query.before_seq).catch((err: unknown) => {
        if (isEngineError(err)) throw err;
        // A storage read failing is an outage (503), not a bug in this route (500).
        request.log.warn({ err }, 'reading transitions failed');
        throw new EngineError('UNAVAILABLE', 'the transition history cannot be read right now; try again shortly');
      });
      return { transitions: records.map(toTransition) };
    },
  );
};
