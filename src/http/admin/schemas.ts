import { Type, type Static } from '@sinclair/typebox';
import { Transition } from '../schemas.js';

/**
 * TypeBox schemas of the admin page's data endpoints. As everywhere in the API they validate,
 * serialize (nothing undeclared leaves the server) and document the routes in the OpenAPI
 * document at once.
 */

const nullableInteger = (description: string) => Type.Unsafe<number | null>({ type: ['integer', 'null'], description });

/**
 * One section as the admin list shows it: only what the list and the live feed need, so that
 * 1,500 rows (and the feed's bursts of them) stay small.
 */
export const AdminSection = Type.Object(
  {
    course_id: Type.Integer(),
    group_id: Type.Integer(),
    name: Type.String(),
    lecturer: Type.String(),
    department: nullableInteger('Department the section is offered for; null: any'),
    capacity: Type.Integer(),
    registered_count: Type.Integer(),
    reserve_capacity: Type.Integer(),
    reserved_count: Type.Integer({ description: 'Length of the reserve queue' }),
    sex_lock: Type.Unsafe<'male' | 'female' | null>({ type: ['string', 'null'], enum: ['male', 'female', null] }),
    closed: Type.Boolean(),
    state: Type.String({ description: 'Machine state path, e.g. open.reserveOnly' }),
    seq: Type.Integer({ description: 'Sequence number of the last transition; a row with a higher seq is newer' }),
  },
  { title: 'AdminSection' },
);
/** The static type of {@link AdminSection}. */
export type AdminSectionT = Static<typeof AdminSection>;

/** `GET /admin/api/sections`. */
export const AdminSectionList = Type.Object({
  sections: Type.Array(AdminSection),
  departments: Type.Array(Type.Object({ id: Type.Integer(), name: Type.String() })),
  flush_ms: Type.Integer({ description: 'The live feed sends changed sections at most this often' }),
});

/** `GET /admin/api/sections/:courseId/:groupId`. */
export const AdminSectionDetail = Type.Object({
  section: AdminSection,
  registered: Type.Array(Type.Integer(), { description: 'In the order they got their seat' }),
  queue: Type.Array(Type.Integer(), { description: 'Reserve queue, head first' }),
  transitions: Type.Array(
    Type.Object({
      ...Transition.properties,
      text: Type.String({ description: 'What happened, in words' }),
      by: Type.String({ description: 'Who asked: "student 5", "staff 1" or "system"' }),
    }),
    { description: 'Most recent first' },
  ),
});

const StateNode = Type.Object({
  id: Type.String(),
  path: Type.String({ description: "Dotted path below the root ('' for the root)" }),
  key: Type.String(),
  parent: Type.Unsafe<string | null>({ type: ['string', 'null'] }),
  type: Type.String({ description: 'atomic, compound, parallel, final or history' }),
  initial: Type.Unsafe<string | null>({ type: ['string', 'null'], description: 'Id of the initial child' }),
  depth: Type.Integer(),
  choice: Type.Boolean({ description: 'A choice pseudostate: left at once by guarded eventless branches' }),
});

const MachineTransition = Type.Object({
  id: Type.String(),
  kind: Type.String({ description: 'event, always (eventless) or initial' }),
  source: Type.String(),
  target: Type.Unsafe<string | null>({ type: ['string', 'null'], description: 'null: targetless (state unchanged)' }),
  event: Type.String(),
  guard: Type.Unsafe<string | null>({ type: ['string', 'null'] }),
  actions: Type.Array(Type.String()),
  label: Type.String(),
});

const Point = Type.Object({ x: Type.Number(), y: Type.Number() });

/** `GET /admin/api/machine`: the machine graph and its elkjs layout, ready to draw. */
export const MachineLayoutSchema = Type.Object(
  {
    machine: Type.String(),
    width: Type.Number(),
    height: Type.Number(),
    states: Type.Array(StateNode),
    transitions: Type.Array(MachineTransition),
    nodes: Type.Array(
      Type.Object({
        id: Type.String(),
        kind: Type.String({ description: 'root, compound, state, choice or initial' }),
        state_id: Type.String(),
        path: Type.String(),
        label: Type.String(),
        x: Type.Number(),
        y: Type.Number(),
        width: Type.Number(),
        height: Type.Number(),
        items: Type.Array(Type.Object({ transition_id: Type.String(), text: Type.String() })),
      }),
    ),
    edges: Type.Array(
      Type.Object({
        id: Type.String({ description: 'The transition id' }),
        kind: Type.String({ description: 'event, always (a choice branch) or initial' }),
        source: Type.String(),
        target: Type.String(),
        label: Type.String(),
        points: Type.Array(Point),
        label_box: Type.Union([
          Type.Object({ x: Type.Number(), y: Type.Number(), width: Type.Number(), height: Type.Number() }),
          Type.Null(),
        ]),
      }),
    ),
  },
  { title: 'MachineLayout' },
);

/** Response schema of a route answering with a text document of the given media type. */
export const textResponse = (mediaType: string, description: string) => ({
  description,
  content: { [mediaType]: { schema: Type.String() } },
});

/** `GET /admin/api/summary`: the totals at the top of the admin page. */
export const AdminSummary = Type.Object(
  {
    sections: Type.Integer(),
    students: Type.Integer(),
    students_holding: Type.Integer({ description: 'Students registered (holding a seat) in at least one section' }),
    students_queued: Type.Integer({ description: 'Students waiting in at least one reserve queue' }),
    sections_full: Type.Integer({ description: 'Open sections with no free seat (their reserve queue may still have room)' }),
    sections_closed: Type.Integer(),
    sections_waitlisted: Type.Integer({ description: 'Sections with at least one student in their reserve queue' }),
  },
  { title: 'AdminSummary' },
);

/** A point of a fill-over-time series. */
const FillPointSchema = Type.Object({
  at: Type.String({ description: 'Last transition of the span, ISO 8601' }),
  registered: Type.Integer({ description: 'Seats taken after the span' }),
  queued: Type.Integer({ description: 'Reserve-queue places held after the span' }),
});

/** `GET /admin/api/fill` and `GET /admin/api/sections/:courseId/:groupId/fill`. */
export const AdminFill = Type.Object(
  {
    points: Type.Array(FillPointSchema, { description: 'Oldest first; empty before the first seat or queue change' }),
    capacity: Type.Integer({ description: 'Seats now (for the term: of every open section)' }),
    reserve_capacity: Type.Integer({ description: 'Reserve places now (for the term: of every open section)' }),
  },
  { title: 'AdminFill' },
);

/** A transition as the admin page shows it: a sentence, who did it and when. */
export const AdminHistoryEntry = Type.Object({
  at: Type.String({ description: 'ISO 8601' }),
  type: Type.String({ description: 'The event type, for filtering; `text` is what people read' }),
  text: Type.String({ description: 'What happened, in words' }),
  by: Type.String({ description: 'Who asked: "student 5", "staff 1" or "system"' }),
  course_id: nullableInteger('Section the transition happened in (null for registry events)'),
  group_id: nullableInteger('Section the transition happened in (null for registry events)'),
});

/** `GET /admin/api/students/:studentId`: a student's record, timetable and history. */
export const AdminStudent = Type.Object(
  {
    student: Type.Object({
      id: Type.Integer(),
      gender: Type.String(),
      department: nullableInteger('Department id'),
      entry_year: nullableInteger('Entry year'),
      max_units: Type.Integer(),
      units_held: Type.Integer({ description: 'Units of every section held, registered or queued' }),
      remaining_actions: Type.Integer(),
      window_opens: Type.String({ description: 'Start of the enrollment window, ISO 8601' }),
    }),
    timetable: Type.Array(
      Type.Object({
        course_id: Type.Integer(),
        group_id: Type.Integer(),
        name: Type.String(),
        lecturer: Type.String(),
        units: Type.Integer(),
        status: Type.Union([Type.Literal('registered'), Type.Literal('queued')]),
        queue_position: nullableInteger('1-based, when queued'),
        class_time: Type.Array(
          Type.Object({ day: Type.Integer({ description: '0 = Sunday' }), start_minute: Type.Integer(), end_minute: Type.Integer() }),
        ),
        exam_time: Type.Unsafe<string | null>({ type: ['string', 'null'], description: 'Exam start, ISO 8601' }),
      }),
      { description: 'By weekday and start time of the first class' },
    ),
    history: Type.Array(AdminHistoryEntry, { description: 'Newest first' }),
  },
  { title: 'AdminStudent' },
);
