import { Type, type ObjectOptions, type Static, type TProperties, type TSchema } from '@sinclair/typebox';

/**
 * TypeBox schemas shared by the routes. They do three jobs at once: validate requests (so a
 * malformed request is a 400 before it reaches the engine), serialize responses (fast-json-stringify
 * drops anything not declared, so a password hash can never leak through a reply), and document
 * the API in the OpenAPI document. Field names follow the Go service (snake_case) so its clients
 * keep working.
 *
 * Response-only nullable fields use `Type.Unsafe` with JSON-schema type arrays: fast-json-stringify
 * serializes those with a cheap type test, where a `Type.Union` would run a validator per value.
 */

/** Largest id the Go schema's `integer` columns hold; larger ids could never be written. */
export const MAX_ID = 2_147_483_647;

/**
 * A JSON body of one of the Go service's routes (SPEC section 5 table). Members it does not declare
 * are ignored, as the Go service's `encoding/json` ignored them, so a client that sends one more
 * member than needed keeps working unchanged. The project's own routes declare their bodies with
 * `additionalProperties: false` instead: there a misspelt optional field is refused, not dropped.
 */
export const GoBody = <T extends TProperties>(properties: T, options: ObjectOptions = {}) =>
  Type.Object(properties, { ...options, additionalProperties: true });

/** A database id: a non-negative 32-bit integer. */
export const Id = (description?: string) =>
  Type.Integer({ minimum: 0, maximum: MAX_ID, ...(description ? { description } : {}) });

/** The Go schema's `sex` enum. */
export const Sex = Type.Union([Type.Literal('male'), Type.Literal('female')]);
/** A section's sex lock as clients send it: one sex, or null for none. */
export const SexLock = Type.Union([Sex, Type.Null()], { description: 'null: open to everyone' });

/** The error body of every non-2xx reply: `reason` for people, `code` for programs, plus details. */
export const ErrorBody = Type.Object(
  {
    reason: Type.String({ description: 'Human-readable explanation' }),
    code: Type.String({ description: 'Stable machine-readable code, e.g. SECTION_FULL' }),
  },
  { additionalProperties: true, title: 'Error', description: 'Error: {reason, code, ...details}' },
);
/** The static type of {@link ErrorBody}, for the error handler. */
export type ErrorBodyT = Static<typeof ErrorBody>;

/** Spread into every route's `response`, so error replies are documented and serialized too. */
export const errorResponses = { '4xx': ErrorBody, '5xx': ErrorBody } as const;

/** The Go routes answer 204 with no body; documented as such. */
export const NoContent = Type.Null({ description: 'No content' });

const nullableInteger = (description: string) =>
  Type.Unsafe<number | null>({ type: ['integer', 'null'], description });

/** One weekday of a class slot, as the Go API's CourseData lists them. */
export const ClassTimeEntry = Type.Object({
  day: Type.Integer({ minimum: 0, maximum: 6, description: '0 = Sunday' }),
  start_minute: Type.Integer({ minimum: 0, maximum: 1440 }),
  end_minute: Type.Integer({ minimum: 0, maximum: 1440 }),
});

/** The Go service's CourseData plus live numbers and the section's machine state. */
export const CourseData = Type.Object(
  {
    course_id: Type.Integer(),
    group_id: Type.Integer(),
    name: Type.String(),
    units: Type.Integer(),
    capacity: Type.Integer(),
    registered_count: Type.Integer(),
    reserve_capacity: Type.Integer(),
    reserved_count: Type.Integer({ description: 'Length of the reserve queue' }),
    exam_time: nullableInteger('Exam start, unix seconds; null when there is no exam'),
    class_time: Type.Array(ClassTimeEntry, { description: 'One entry per weekday the class meets' }),
    lecturer: Type.String(),
    sex_lock: Type.Unsafe<'male' | 'female' | null>({
      type: ['string', 'null'],
      enum: ['male', 'female', null],
      description: 'null: open to everyone',
    }),
    closed: Type.Boolean(),
    state: Type.String({ description: 'Machine state, e.g. open.seatsAvailable, open.reserveOnly, open.full, closed' }),
    for_department: nullableInteger('Department the section is offered for'),
    notes: Type.String(),
  },
  { title: 'CourseData' },
);
/** The static type of {@link CourseData}. */
export type CourseDataT = Static<typeof CourseData>;

/** One held section of `GET /student/course`. */
export const HeldCourse = Type.Object({
  course: CourseData,
  reserve_queue_position: Type.Optional(Type.Integer({ minimum: 1, description: '1-based; only when queued' })),
});

/** `GET /student/course` and `GET /staff/student-courses`: the Go service's `{data: [...]}`. */
export const StudentCourses = Type.Object({ data: Type.Array(HeldCourse) });

/** `GET /staff/course-students`, with the Go service's field names. */
export const SectionStudents = Type.Object({
  registered_students: Type.Array(Type.Integer(), { description: 'In the order they got their seat' }),
  reserved_queue_students: Type.Array(Type.Integer(), { description: 'Reserve queue, head first' }),
});

/** The reply of `/login` and `/refresh`. */
export const Token = Type.Object({ token: Type.String({ description: 'HS256 JWT; send as `Authorization: Bearer <token>`' }) });

/** Route params of a section resource; coerced from the path's strings. */
export const SectionParams = Type.Object({ courseId: Id('course_id'), groupId: Id('group_id') });

/** A readable class slot, the alternative to the packed `class_time` integer. */
export const ClassSlot = Type.Object(
  {
    days: Type.Array(Type.Integer({ minimum: 0, maximum: 6 }), {
      minItems: 1,
      maxItems: 7,
      uniqueItems: true,
      description: 'Weekdays, 0 = Sunday',
    }),
    start_minute: Type.Integer({ minimum: 0, maximum: 1439 }),
    end_minute: Type.Integer({ minimum: 1, maximum: 1440 }),
  },
  { additionalProperties: false, description: 'One weekly slot; an alternative to the packed class_time' },
);

/** Field schemas shared by POST and PATCH /sections, so both validate and document them alike. */
export const sectionFields = {
  for_department: Type.Union([Id(), Type.Null()]),
  name: Type.String({ minLength: 1, maxLength: 200 }),
  lecturer: Type.String({ maxLength: 200 }),
  notes: Type.String({ maxLength: 2000 }),
  units: Type.Integer({ minimum: 0, maximum: 100 }),
  capacity: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
  reserve_capacity: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
  exam_time: Type.Union([Type.Integer({ minimum: 0, maximum: 253_402_300_799 }), Type.Null()], {
    description: 'Exam start, unix seconds, or null',
  }),
  class_time: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], {
    description: 'Packed slot: start_minute + 1440 * end_minute, weekday bits from bit 22 (0 = Sunday); 0 or null: no class time (0 is the Go schema\'s value)',
  }),
  class_slot: Type.Union([ClassSlot, Type.Null()]),
  sex_lock: SexLock,
} satisfies Record<string, TSchema>;

/** One durable transition, for staff inspecting a section's history. */
export const Transition = Type.Object({
  seq: Type.Integer(),
  type: Type.String(),
  student_id: nullableInteger('Student the transition is about, if any'),
  request_id: Type.String(),
  actor: Type.String({ description: 'student:<id>, staff:<id> or system' }),
  at: Type.String({ description: 'ISO 8601' }),
  payload: Type.Object({}, { additionalProperties: true }),
});

/** `GET /ready`: the persistence layer's own report, passed through. */
export const Readiness = Type.Object({
  ready: Type.Boolean(),
  checks: Type.Record(
    Type.String(),
    Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.String()) }),
  ),
});

/** Security requirement for routes that need a bearer token (OpenAPI). */
export const bearer = [{ bearerAuth: [] as string[] }];
