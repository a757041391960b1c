import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { classSlot, classTimeEntries } from '../../actors/class-time.js';
import type { Engine, SectionView } from '../../engine/engine.js';
import { EngineError, isEngineError } from '../../errors.js';
import type { RouteContext } from '../context.js';
import { bySection } from '../course-data.js';
import { bearer, errorResponses, Id, SectionParams } from '../schemas.js';
import { toCsv } from './csv.js';
import { describeActor, describeStudentTransition } from './describe.js';
import { AdminFill, AdminStudent, AdminSummary, textResponse } from './schemas.js';

/**
 * The registrar's reads behind the admin page (issue 16): totals, a student's timetable and
 * history, fill over time, and CSV exports. Staff only, like every admin data endpoint; the edits
 * the page makes go through the ordinary staff routes, so the same rules and errors apply.
 */

/** Which sections a list or export shows; `full` means open with no free seat. */
const SectionFilter = Type.Union([Type.Literal('all'), Type.Literal('full'), Type.Literal('closed'), Type.Literal('waitlisted')], {
  default: 'all',
  description: 'full: open with no free seat; closed; waitlisted: at least one student in the reserve queue',
});
type SectionFilterT = 'all' | 'full' | 'closed' | 'waitlisted';

export function matchesFilter(v: SectionView, filter: SectionFilterT): boolean {
  switch (filter) {
    case 'full':
      return !v.closed && v.registeredCount >= v.capacity;
    case 'closed':
      return v.closed;
    case 'waitlisted':
      return v.queueLength > 0;
    default:
      return true;
  }
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const hhmm = (m: number): string => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;

/** `Mon Wed 08:00-09:30`, or empty when the section has no class time (or one that does not decode). */
function classTimeText(packed: number | null): string {
  const slot = classSlot(packed);
  if (slot === null) return '';
  const days = classTimeEntries(packed).map((e) => DAYS[e.day]);
  return `${days.join(' ')} ${hhmm(slot.startMinute)}-${hhmm(slot.endMinute)}`;
}

const DEFAULT_BUCKETS = 120;
const csvHeaders = (name: string) => ({
  'content-type': 'text/csv; charset=utf-8',
  'content-disposition': `attachment; filename="${name}"`,
  'cache-control': 'no-store',
});

/** Reads of the transition log fail as 503 with a reason, never as a 500. */
async function fromLog<T>(read: Promise<T>): Promise<T> {
  try {
    return await read;
  } catch (err) {
    if (isEngineError(err)) throw err;
    throw new EngineError('UNAVAILABLE', 'the transition history cannot be read right now; try again shortly');
  }
}

function sectionLabel(engine: Engine, courseId: number | null, groupId: number | null): string {
  if (courseId === null || groupId === null) return '';
  try {
    return `${courseId}-${groupId} ${engine.getSection(courseId, groupId).info.name}`;
  } catch {
    return `${courseId}-${groupId}`;
  }
}

export const registrarRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens }) => {
  app.addHook('onRequest', tokens.requireRole('staff'));
  const tags = ['admin'];

  app.get(
    '/admin/api/summary',
    {
      schema: {
        tags,
        summary: 'Totals for the registrar: students holding a seat or queued, sections full, closed and waitlisted',
        security: bearer,
        response: { 200: AdminSummary, ...errorResponses },
      },
    },
    async () => {
      const s = engine.registrarSummary();
      return {
        sections: s.sections,
        students: s.students,
        students_holding: s.studentsHolding,
        students_queued: s.studentsQueued,
        sections_full: s.sectionsFull,
        sections_closed: s.sectionsClosed,
        sections_waitlisted: s.sectionsWaitlisted,
      };
    },
  );

  app.get(
    '/admin/api/students/:studentId',
    {
      schema: {
        tags,
        summary: "A student's record, timetable (seats and queue places) and history in words",
        security: bearer,
        params: Type.Object({ studentId: Id() }),
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })) }),
        response: { 200: AdminStudent, ...errorResponses },
      },
    },
    async (request) => {
      const id = request.params.studentId;
      const record = engine.getStudent(id);
      if (!record) throw new EngineError('STUDENT_NOT_FOUND', `student ${id} does not exist`);
      const held = engine.studentSections(id);
      const firstClass = (packed: number | null): number => {
        if (packed === null) return Number.MAX_SAFE_INTEGER;
        const e = classTimeEntries(packed)[0];
        return e ? e.day * 1440 + e.start_minute : Number.MAX_SAFE_INTEGER;
      };
      const timetable = held
        .sort((a, b) => firstClass(a.section.info.classTime) - firstClass(b.section.info.classTime) || bySection(a.section, b.section))
        .map((h) => ({
          course_id: h.section.info.courseId,
          group_id: h.section.info.groupId,
          name: h.section.info.name,
          lecturer: h.section.info.lecturer,
          units: h.section.info.units,
          status: h.status,
          queue_position: h.queuePosition ?? null,
          class_time: classTimeEntries(h.section.info.classTime),
          exam_time: h.section.info.examTime === null ? null : new Date(h.section.info.examTime).toISOString(),
        }));
      const records = await fromLog(engine.studentTransitions(id, request.query.limit ?? 100));
      const history = records.map((t) => ({
        at: t.at,
        type: t.type,
        text: describeStudentTransition(t.type, sectionLabel(engine, t.courseId, t.groupId), t.payload, t.actor),
        by: describeActor(t.actor),
        course_id: t.courseId,
        group_id: t.groupId,
      }));
      return {
        student: {
          id: record.id,
          gender: record.gender,
          department: record.departmentId,
          entry_year: record.entryYear,
          max_units: record.maxUnits,
          units_held: held.reduce((n, h) => n + h.section.info.units, 0),
          remaining_actions: record.remainingActions,
          window_opens: new Date(record.enrollmentStart).toISOString(),
        },
        timetable,
        history,
      };
    },
  );

  const Buckets = Type.Object({
    buckets: Type.Optional(Type.Integer({ minimum: 2, maximum: 1000, default: DEFAULT_BUCKETS, description: 'Points at most' })),
  });

  app.get(
    '/admin/api/fill',
    {
      schema: {
        tags,
        summary: 'Seats taken and queue places held over the whole term, from the transition log',
        description: 'In full mode the database is written by the batcher, a moment behind the engine.',
        security: bearer,
        querystring: Buckets,
        response: { 200: AdminFill, ...errorResponses },
      },
    },
    async (request) => {
      const points = await fromLog(engine.fillHistory(request.query.buckets ?? DEFAULT_BUCKETS));
      let capacity = 0;
      let reserve = 0;
      for (const v of engine.listSections()) {
        if (v.closed) continue;
        capacity += v.capacity;
        reserve += v.reserveCapacity;
      }
      return { points, capacity, reserve_capacity: reserve };
    },
  );

  app.get(
    '/admin/api/sections/:courseId/:groupId/fill',
    {
      schema: {
        tags,
        summary: "One section's seats taken and queue places held over time, from its transitions",
        security: bearer,
        params: SectionParams,
        querystring: Buckets,
        response: { 200: AdminFill, ...errorResponses },
      },
    },
    async (request) => {
      const { courseId, groupId } = request.params;
      const v = engine.getSection(courseId, groupId);
      const points = await fromLog(engine.fillHistory(request.query.buckets ?? DEFAULT_BUCKETS, { courseId, groupId }));
      return { points, capacity: v.capacity, reserve_capacity: v.reserveCapacity };
    },
  );

  app.get(
    '/admin/api/sections.csv',
    {
      schema: {
        tags,
        summary: 'The section list as CSV (all, or only full, closed or waitlisted sections)',
        security: bearer,
        querystring: Type.Object({ filter: Type.Optional(SectionFilter) }),
        response: { 200: textResponse('text/csv', 'One row per section, RFC 4180'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const filter = request.query.filter ?? 'all';
      const departments = new Map(engine.listDepartments().map((d) => [d.id, d.name]));
      const rows = engine
        .listSections()
        .filter((v) => matchesFilter(v, filter))
        .sort(bySection)
        .map((v) => [
          v.info.courseId,
          v.info.groupId,
          v.info.name,
          v.info.lecturer,
          v.info.forDepartment === null ? '' : (departments.get(v.info.forDepartment) ?? String(v.info.forDepartment)),
          v.info.units,
          v.capacity,
          v.registeredCount,
          v.reserveCapacity,
          v.queueLength,
          v.sexLock ?? '',
          v.closed ? 'closed' : 'open',
          v.state,
          classTimeText(v.info.classTime),
          v.info.examTime === null ? '' : new Date(v.info.examTime).toISOString(),
        ]);
      const header = [
        'course_id', 'group_id', 'name', 'lecturer', 'department', 'units', 'capacity', 'registered',
        'reserve_capacity', 'queued', 'sex_lock', 'status', 'state', 'class_time', 'exam_time_utc',
      ];
      const name = filter === 'all' ? 'sections.csv' : `sections-${filter}.csv`;
      return reply.headers(csvHeaders(name)).send(toCsv(header, rows));
    },
  );

  app.get(
    '/admin/api/sections/:courseId/:groupId/roster.csv',
    {
      schema: {
        tags,
        summary: "A section's roster as CSV: registered students in seat order, then the reserve queue in order",
        security: bearer,
        params: SectionParams,
        response: { 200: textResponse('text/csv', 'One row per student, RFC 4180'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const { courseId, groupId } = request.params;
      const members = engine.sectionMembers(courseId, groupId);
      const departments = new Map(engine.listDepartments().map((d) => [d.id, d.name]));
      const row = (id: number, status: string, position: number): (string | number | null)[] => {
        const s = engine.getStudent(id);
        const dept = s?.departmentId ?? null;
        return [id, status, position, s?.gender ?? '', dept === null ? '' : (departments.get(dept) ?? String(dept)), s?.entryYear ?? null];
      };
      const rows = [
        ...members.registered.map((id, i) => row(id, 'registered', i + 1)),
        ...members.queue.map((id, i) => row(id, 'queued', i + 1)),
      ];
      const header = ['student_id', 'status', 'position', 'gender', 'department', 'entry_year'];
      return reply.headers(csvHeaders(`roster-${courseId}-${groupId}.csv`)).send(toCsv(header, rows));
    },
  );
};
