import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { hashPassword } from '../../password.js';
import { checkNewPassword } from '../../password-rules.js';
import type { StudentChanges, StudentRecord } from '../../actors/student-rules.js';
import { EngineError } from '../../errors.js';
import { principalOf, requestMeta } from '../auth.js';
import type { RouteContext } from '../context.js';
import { bearer, errorResponses, Id, NoContent, Sex } from '../schemas.js';
import { assertDepartment, assertRequired } from './sections.js';

/**
 * Students, staff, departments and the caller's own profile. Staff add people while the engine
 * runs and they can log in at once; passwords are hashed here with bcrypt (cost 10, as the Go
 * service did) and the hash never leaves the server.
 */

/** bcrypt's cost for every password the engine hashes (the Go service's). */
export const BCRYPT_COST = 10;
const ISO_WITH_ZONE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/;
const MAX_UNIX_SECONDS = 253_402_300_799;

export const Password = Type.String({
  minLength: 1,
  maxLength: 200,
  description: 'At least 10 characters (configurable), at most 72 bytes (bcrypt); not a demo password',
});

/**
 * The date part names a day that exists: `Date.parse` takes 2026-02-30 and moves it to 2 March, and
 * a registrar's typo would then open a window on another day without a word.
 */
function isCalendarDay(iso: string): boolean {
  const year = Number(iso.slice(0, 4));
  const month = Number(iso.slice(5, 7));
  const day = Number(iso.slice(8, 10));
  return month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** Unix seconds, or an ISO 8601 date-time with an explicit zone (a zone-less time would be ambiguous). */
export function parseInstant(value: number | string, field: string): number {
  if (typeof value === 'number') return value * 1000;
  const ms = ISO_WITH_ZONE.test(value) && isCalendarDay(value) ? Date.parse(value) : NaN;
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_UNIX_SECONDS * 1000) {
    throw new EngineError('BAD_REQUEST', `${field} must be unix seconds or an ISO 8601 date-time with a zone, e.g. 2025-09-01T08:00:00Z`);
  }
  return ms;
}

const nullableInt = (description: string) => Type.Unsafe<number | null>({ type: ['integer', 'null'], description });

const Me = Type.Object({
  id: Type.Integer(),
  role: Type.Unsafe<'student' | 'staff'>({ type: 'string', enum: ['student', 'staff'] }),
  department_id: nullableInt('Department, if any'),
  max_units: Type.Optional(Type.Integer()),
  remaining_actions: Type.Optional(Type.Integer({ description: 'Drops and group changes left' })),
  enrollment_start_time: Type.Optional(Type.String({ description: 'ISO 8601' })),
  gender: Type.Optional(Type.Unsafe<'male' | 'female'>({ type: 'string', enum: ['male', 'female'] })),
  entry_year: Type.Optional(nullableInt('Year of entry')),
});

const StudentView = Type.Object({
  id: Type.Integer(),
  department_id: nullableInt('Department, if any'),
  max_units: Type.Integer(),
  remaining_actions: Type.Integer({ description: 'Drops and group changes left' }),
  enrollment_start_time: Type.String({ description: 'Start of the enrollment window, ISO 8601' }),
  gender: Type.Unsafe<'male' | 'female'>({ type: 'string', enum: ['male', 'female'] }),
  entry_year: nullableInt('Year of entry'),
});

/** A student's record as staff see it (never the password hash). */
function studentView(s: StudentRecord) {
  return {
    id: s.id,
    department_id: s.departmentId,
    max_units: s.maxUnits,
    remaining_actions: s.remainingActions,
    enrollment_start_time: new Date(s.enrollmentStart).toISOString(),
    gender: s.gender,
    entry_year: s.entryYear,
  };
}

/** Registers /students (add, read, correct), /staff, /departments (list and add) and /me. */
export const peopleRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, accounts, requirements }) => {
  const anyUser = tokens.requireRole('any');
  const staffOnly = tokens.requireRole('staff');
  /** Creating staff accounts is for admins only: any staff member could otherwise mint more staff. */
  const adminOnly = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    staffOnly(request, reply);
    const p = principalOf(request);
    if (!accounts.adminStaffIds.has(p.id)) throw new EngineError('ADMIN_REQUIRED', 'only admin staff may create staff accounts or reset their passwords');
  };

  app.post(
    '/students',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['people'],
        summary: 'Add a student; they can log in and enroll at once',
        security: bearer,
        body: Type.Object(
          {
            id: Id('Student id'),
            password: Password,
            enrollment_start_time: Type.Union(
              [Type.Integer({ minimum: 0, maximum: MAX_UNIX_SECONDS }), Type.String({ maxLength: 40 })],
              { description: 'Start of the enrollment window: unix seconds or ISO 8601 with a zone' },
            ),
            max_units: Type.Integer({ minimum: 0, maximum: 1000 }),
            remaining_actions: Type.Integer({ minimum: 0, maximum: 32_767, description: 'SMALLINT in the Go schema' }),
            department_id: Type.Optional(Type.Union([Id(), Type.Null()])),
            entry_year: Type.Optional(
              Type.Union([
                Type.Integer({
                  minimum: 1000,
                  maximum: 9999,
                  description: 'Year of entry in the university\'s own calendar (the Go service\'s data holds solar hijri years such as 1400); SMALLINT',
                }),
                Type.Null(),
              ]),
            ),
            gender: Sex,
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ id: Type.Integer() }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const b = request.body;
      checkNewPassword(b.password, accounts);
      const enrollmentStart = parseInstant(b.enrollment_start_time, 'enrollment_start_time');
      // Cheap refusals first, before spending a bcrypt hash on them.
      if (engine.getStudent(b.id)) throw new EngineError('ALREADY_EXISTS', `student ${b.id} already exists`);
      assertRequired(requirements.studentDepartment, b.department_id, 'department_id');
      assertRequired(requirements.studentEntryYear, b.entry_year, 'entry_year');
      assertDepartment(engine, b.department_id, 'department_id');
      const passwordHash = await hashPassword(b.password, BCRYPT_COST);
      await engine.createStudent(
        {
          id: b.id,
          passwordHash,
          enrollmentStart,
          maxUnits: b.max_units,
          remainingActions: b.remaining_actions,
          departmentId: b.department_id ?? null,
          entryYear: b.entry_year ?? null,
          gender: b.gender,
        },
        requestMeta(request),
      );
      return reply.code(201).send({ id: b.id });
    },
  );

  app.get(
    '/students/:id',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['people'],
        summary: "A student's record (staff): window, unit limit, actions left, department, entry year",
        security: bearer,
        params: Type.Object({ id: Id('Student id') }),
        response: { 200: StudentView, ...errorResponses },
      },
    },
    async (request) => {
      const s = engine.getStudent(request.params.id);
      if (!s) throw new EngineError('STUDENT_NOT_FOUND', `student ${request.params.id} does not exist`);
      return studentView(s);
    },
  );

  app.patch(
    '/students/:id',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['people'],
        summary: "Correct a student's record (staff): window, unit limit, actions left, department, entry year, password",
        description:
          'Only the fields sent change; at least one is required. Decided between the student\'s own requests (never beside ' +
          'one), durable before the reply, and in the student\'s history. Places the student holds stay: a lower unit limit ' +
          'or a later window applies to their next request. A new password ends every session of the student (their ' +
          'tokens are revoked, as `POST /students/{id}/revoke-tokens` does). The sex is not editable here: sections ' +
          'locked to one sex decided on it.',
        security: bearer,
        params: Type.Object({ id: Id('Student id') }),
        body: Type.Object(
          {
            password: Type.Optional(Password),
            enrollment_start_time: Type.Optional(
              Type.Union([Type.Integer({ minimum: 0, maximum: MAX_UNIX_SECONDS }), Type.String({ maxLength: 40 })], {
                description: 'Start of the enrollment window: unix seconds or ISO 8601 with a zone',
              }),
            ),
            max_units: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
            remaining_actions: Type.Optional(Type.Integer({ minimum: 0, maximum: 32_767, description: 'Drops and group changes left (set, not added); SMALLINT in the Go schema' })),
            department_id: Type.Optional(Type.Union([Id(), Type.Null()])),
            entry_year: Type.Optional(Type.Union([Type.Integer({ minimum: 1000, maximum: 9999 }), Type.Null()])),
          },
          { additionalProperties: false, minProperties: 1 },
        ),
        response: { 200: StudentView, ...errorResponses },
      },
    },
    async (request) => {
      const id = request.params.id;
      const b = request.body;
      // Cheap refusals first, before spending a bcrypt hash on them.
      if (!engine.getStudent(id)) throw new EngineError('STUDENT_NOT_FOUND', `student ${id} does not exist`);
      if (b.password !== undefined) checkNewPassword(b.password, accounts);
      const changes: StudentChanges = {};
      if (b.enrollment_start_time !== undefined) changes.enrollmentStart = parseInstant(b.enrollment_start_time, 'enrollment_start_time');
      if (b.max_units !== undefined) changes.maxUnits = b.max_units;
      if (b.remaining_actions !== undefined) changes.remainingActions = b.remaining_actions;
      if (b.department_id !== undefined) {
        assertRequired(requirements.studentDepartment, b.department_id, 'department_id');
        assertDepartment(engine, b.department_id, 'department_id');
        changes.departmentId = b.department_id;
      }
      if (b.entry_year !== undefined) {
        assertRequired(requirements.studentEntryYear, b.entry_year, 'entry_year');
        changes.entryYear = b.entry_year;
      }
      if (b.password !== undefined) changes.passwordHash = await hashPassword(b.password, BCRYPT_COST);
      const record = await engine.updateStudent(id, changes, requestMeta(request));
      const by = principalOf(request).id;
      request.log.info({ student: id, by, fields: Object.keys(b) }, 'student record changed by staff');
      if (b.password !== undefined) {
        await tokens.revokeSessionsOf(`student:${id}`);
      }
      return studentView(record);
    },
  );

  app.post(
    '/staff',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['people'],
        summary: 'Add a staff member (admin staff only); they can log in at once',
        security: bearer,
        body: Type.Object(
          { id: Id('Staff id'), password: Password, department_id: Type.Optional(Type.Union([Id(), Type.Null()])) },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ id: Type.Integer() }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const b = request.body;
      checkNewPassword(b.password, accounts);
      if (engine.getStaff(b.id)) throw new EngineError('ALREADY_EXISTS', `staff ${b.id} already exists`);
      assertRequired(requirements.staffDepartment, b.department_id, 'department_id');
      assertDepartment(engine, b.department_id, 'department_id');
      const passwordHash = await hashPassword(b.password, BCRYPT_COST);
      await engine.createStaff({ id: b.id, passwordHash, departmentId: b.department_id ?? null }, requestMeta(request));
      return reply.code(201).send({ id: b.id });
    },
  );

  app.patch(
    '/staff/:id',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['people'],
        summary: "Reset a staff member's password (admin staff only); every session of theirs ends",
        description:
          'For a forgotten or leaked staff password: the new password holds once the reply is sent, on every instance, and every ' +
          'token of that staff member issued before it is refused 401 TOKEN_REVOKED (as `POST /staff/{id}/revoke-tokens` does). ' +
          'Staff change their own password with `POST /me/password` (it asks for the current one): an admin\'s own id here is ' +
          '400 BAD_REQUEST, so a stolen admin token cannot take the account over without knowing its password.',
        security: bearer,
        params: Type.Object({ id: Id('Staff id') }),
        body: Type.Object({ password: Password }, { additionalProperties: false }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const id = request.params.id;
      if (!engine.getStaff(id)) throw new EngineError('STAFF_NOT_FOUND', `staff ${id} does not exist`);
      // Probe S: without this an admin token alone (a stolen one) reset its own account's password,
      // skipping the current-password check of /me/password and locking the owner out.
      if (id === principalOf(request).id) {
        throw new EngineError('BAD_REQUEST', 'change your own password with POST /me/password, which asks for the current one; nothing was changed');
      }
      checkNewPassword(request.body.password, accounts);
      const passwordHash = await hashPassword(request.body.password, BCRYPT_COST);
      await engine.updateStaff(id, { passwordHash }, requestMeta(request));
      request.log.info({ staff: id, by: principalOf(request).id }, 'staff password reset');
      await tokens.revokeSessionsOf(`staff:${id}`);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/departments',
    {
      onRequest: staffOnly,
      schema: {
        tags: ['people'],
        summary: 'Add a department, so sections (for_department) and students (department_id) can name it',
        description:
          'A new deployment starts with no departments (the Go service\'s database had them loaded by hand); without this, ' +
          'every for_department and department_id would be refused. Ids are never reused: an existing id is 409 ALREADY_EXISTS.',
        security: bearer,
        body: Type.Object(
          {
            // SMALLINT (SMALLSERIAL) in the Go schema, as students' department_id and sections' for_department:
            // a larger id was accepted, then could not be stored (the batcher stopped on it).
            id: Type.Integer({ minimum: 0, maximum: 32_767, description: 'Department id (SMALLINT in the Go schema)' }),
            name: Type.String({ minLength: 1, maxLength: 200 }),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ id: Type.Integer(), name: Type.String() }), ...errorResponses },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const name = b.name.trim();
      if (name === '') throw new EngineError('BAD_REQUEST', 'name must not be blank');
      await engine.createDepartment({ id: b.id, name }, requestMeta(request));
      return reply.code(201).send({ id: b.id, name });
    },
  );

  app.get(
    '/departments',
    {
      onRequest: anyUser,
      schema: {
        tags: ['people'],
        summary: 'All departments',
        security: bearer,
        response: {
          200: Type.Object({ departments: Type.Array(Type.Object({ id: Type.Integer(), name: Type.String() })) }),
          ...errorResponses,
        },
      },
    },
    async () => {
      const departments = engine.listDepartments().sort((a, b) => a.id - b.id);
      return { departments: departments.map((d) => ({ id: d.id, name: d.name })) };
    },
  );

  app.get(
    '/me',
    {
      onRequest: anyUser,
      schema: {
        tags: ['people'],
        summary: 'Who the token belongs to; for students, their limits and enrollment window start',
        security: bearer,
        response: { 200: Me, ...errorResponses },
      },
    },
    async (request) => {
      const p = principalOf(request);
      if (p.role === 'staff') {
        const s = engine.getStaff(p.id);
        if (!s) throw new EngineError('NOT_FOUND', `staff ${p.id} does not exist`);
        return { id: s.id, role: p.role, department_id: s.departmentId };
      }
      const s = engine.getStudent(p.id);
      if (!s) throw new EngineError('STUDENT_NOT_FOUND', `student ${p.id} does not exist`);
      const { id, ...rest } = studentView(s);
      return { id, role: p.role, ...rest };
    },
  );
};
