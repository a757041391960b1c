import { sectionKey } from '../actors/section-logic.js';
import type { SectionContext, SectionInfo, Sex } from '../actors/types.js';
import type { SqlExecutor } from './sql-client.js';
import {
  assertKnownEvent,
  streamOf,
  type DomainEvent,
  type FillPoint,
  type LoadedState,
  type LoadedStudent,
  type StorageRequirements,
  type StoredInfinity,
  type StudentTransitionRecord,
  type TransitionRecord,
} from './types.js';

/**
 * Applies events to the Go service's tables and reads them back. Shared by the embedded store and
 * the full-mode batcher, so both write exactly the same rows.
 *
 * A batch is applied set-based: the events are recorded in `transitions` (whose unique
 * (stream, seq) makes redelivered events no-ops), then folded into their net effect per row and
 * written with a fixed number of statements, whatever the batch size.
 */

interface EnrollmentRow {
  courseId: number;
  groupId: number;
  studentId: number;
  /** null: the row must not exist after the batch. */
  reserved: boolean | null;
  placedSeq: number;
}

type CoursePatch = Record<string, unknown>;

const INFO_COLUMNS: Record<string, string> = {
  forDepartment: 'for_department',
  name: 'name',
  lecturer: 'lecturer',
  units: 'units',
  examTime: 'exam_time',
  classTime: 'class_time',
  notes: 'notes',
};

function toDate(ms: number | null): Date | null {
  return ms === null ? null : new Date(ms);
}

function columnValue(field: string, value: unknown): unknown {
  if (field === 'classTime') return value ?? 0;
  return field === 'examTime' ? toDate(value as number | null) : value;
}

/** What is stored in the log's payload: the event without secrets. */
function payloadOf(e: DomainEvent): string {
  if (e.type === 'studentCreated') {
    const { passwordHash: _h, ...student } = e.student;
    return JSON.stringify({ ...e, student });
  }
  if ((e.type === 'studentUpdated' || e.type === 'staffUpdated') && e.changes.passwordHash !== undefined) {
    const { passwordHash: _h, ...changes } = e.changes;
    return JSON.stringify({ ...e, changes: { ...changes, passwordChanged: true } });
  }
  if (e.type === 'staffCreated') {
    const { passwordHash: _h, ...staff } = e.staff;
    return JSON.stringify({ ...e, staff });
  }
  return JSON.stringify(e);
}

type ReplacedRow = { id: string | number; replaced: boolean };

/**
 * Records the rows a creation replaced: a row with that id was already in the table although the
 * engine did not know it (an operator inserted it while the engine ran; it is read at the next
 * start). The engine acknowledged its own record, so its record is written over it (before, the
 * insert did nothing and a restart silently brought back the operator's values); the caller warns.
 */
function noteReplaced(r: { rows: ReplacedRow[] }, what: string, replaced: string[] | undefined): void {
  if (replaced === undefined) return;
  for (const row of r.rows) if (row.replaced) replaced.push(`${what} ${String(row.id)}`);
}

/** Applies a batch in order, idempotently. Returns how many events were new. */
export async function applyEvents(
  tx: SqlExecutor,
  batch: DomainEvent[],
  onFresh?: (fresh: DomainEvent[]) => Promise<void>,
  replaced?: string[],
): Promise<number> {
  // 1. Record in the log; keep only events not seen before.
  const seen = new Set<string>();
  const events: DomainEvent[] = [];
  for (const e of batch) {
    assertKnownEvent(e);
    const k = `${streamOf(e)}#${e.seq}`;
    if (seen.has(k)) continue;
    seen.add(k);
    events.push(e);
  }
  if (events.length === 0) return 0;
  // The batch travels as one JSON document (one text parameter, serialised natively, each payload
  // embedded as it is): `pg` turning nine JS arrays into array literals, element by element with two
  // regular expressions each, was most of the batcher's allocation (3.8 KB per event, storm bench).
  const logRows: string[] = [];
  for (const e of events) {
    const section = 'courseId' in e;
    const student = 'studentId' in e ? e.studentId : e.type === 'studentCreated' ? e.student.id : null;
    logRows.push(
      `{"s":${JSON.stringify(streamOf(e))},"q":${e.seq},"t":${JSON.stringify(e.type)},` +
        `"c":${section ? e.courseId : null},"g":${section ? e.groupId : null},"u":${student},` +
        `"r":${JSON.stringify(e.cause.requestId)},"a":${JSON.stringify(e.cause.actor)},"at":${jsonTime(e.cause.at)},"p":${payloadOf(e)}}`,
    );
  }
  const inserted = await tx.query<{ stream: string; seq: number }>(
    `INSERT INTO transitions (stream, seq, type, course_id, group_id, student_id, request_id, actor, at, payload)
     SELECT r.s, r.q, r.t, r.c, r.g, r.u, r.r, r.a, timestamptz 'epoch' + r.at * interval '1 millisecond', r.p
     FROM ROWS FROM (json_to_recordset($1::json)
            AS (s text, q bigint, t text, c bigint, g bigint, u bigint, r text, a text, at bigint, p jsonb))
          WITH ORDINALITY AS r(s, q, t, c, g, u, r, a, at, p, n)
     ORDER BY r.n
     ON CONFLICT (stream, seq) DO NOTHING
     RETURNING stream, seq`,
    [`[${logRows.join(',')}]`],
  );
  const fresh = new Set(inserted.rows.map((r) => `${r.stream}#${Number(r.seq)}`));
  const todo = events.filter((e) => fresh.has(`${streamOf(e)}#${e.seq}`));
  if (todo.length === 0) return 0;
  // The events new to the database, before the tables are changed (the webhook outbox reads the
  // state before the batch from them when it starts).
  if (onFresh) await onFresh(todo);

  // 2. Fold into net effects.
  let departments: { id: number; name: string }[] = [];
  let staff: { id: number; hash: string; dep: number | null }[] = [];
  let students: DomainEvent[] = [];
  let sections: Extract<DomainEvent, { type: 'sectionCreated' }>[] = [];
  const remaining = new Map<number, number>();
  /** A student's changed columns (but remaining_actions, which `remaining` holds in event order with the actions used). */
  const studentPatches = new Map<number, Record<string, unknown>>();
  /** Staff members' new password hashes, the last of the batch. */
  const staffPasswords = new Map<number, string>();
  const enrollments = new Map<string, EnrollmentRow>();
  const patches = new Map<string, { courseId: number; groupId: number; set: CoursePatch }>();
  const heads = new Map<string, number>();
  const patch = (courseId: number, groupId: number): CoursePatch => {
    const k = sectionKey(courseId, groupId);
    let p = patches.get(k);
    if (!p) patches.set(k, (p = { courseId, groupId, set: {} }));
    return p.set;
  };
  const place = (courseId: number, groupId: number, studentId: number, reserved: boolean | null, placedSeq: number) => {
    enrollments.set(`${courseId}:${groupId}:${studentId}`, { courseId, groupId, studentId, reserved, placedSeq });
  };

  for (const e of todo) {
    const stream = streamOf(e);
    heads.set(stream, Math.max(heads.get(stream) ?? 0, e.seq));
    switch (e.type) {
      case 'departmentCreated':
        departments.push(e.department);
        break;
      case 'staffCreated':
        staff.push({ id: e.staff.id, hash: e.staff.passwordHash, dep: e.staff.departmentId });
        break;
      case 'studentCreated':
        students.push(e);
        break;
      case 'actionUsed':
        remaining.set(e.studentId, e.remainingActions);
        break;
      case 'staffUpdated':
        if (e.changes.passwordHash !== undefined) staffPasswords.set(e.staffId, e.changes.passwordHash);
        break;
      case 'studentUpdated': {
        const c = e.changes;
        if (c.remainingActions !== undefined) remaining.set(e.studentId, c.remainingActions);
        let p = studentPatches.get(e.studentId);
        if (!p) studentPatches.set(e.studentId, (p = {}));
        if (c.passwordHash !== undefined) p.password = c.passwordHash;
        if (c.enrollmentStart !== undefined) p.enrollment_start_time = new Date(c.enrollmentStart);
        if (c.maxUnits !== undefined) p.max_units = c.maxUnits;
        if (c.departmentId !== undefined) p.department_id = c.departmentId;
        if (c.entryYear !== undefined) p.entry_year = c.entryYear;
        break;
      }
      case 'sectionCreated':
        sections.push(e);
        break;
      case 'studentEnrolled':
      case 'studentPromoted':
        place(e.courseId, e.groupId, e.studentId, false, e.seq);
        break;
      case 'studentQueued':
        place(e.courseId, e.groupId, e.studentId, true, e.seq);
        break;
      case 'studentDropped':
        place(e.courseId, e.groupId, e.studentId, null, e.seq);
        break;
      case 'capacityChanged':
        patch(e.courseId, e.groupId).capacity = e.capacity;
        break;
      case 'reserveCapacityChanged':
        patch(e.courseId, e.groupId).reserve_capacity = e.reserveCapacity;
        break;
      case 'sexLockChanged':
        patch(e.courseId, e.groupId).sex_lock = e.sexLock;
        break;
      case 'sectionClosed':
        patch(e.courseId, e.groupId).closed = true;
        break;
      case 'sectionReopened':
        patch(e.courseId, e.groupId).closed = false;
        break;
      case 'infoUpdated': {
        const p = patch(e.courseId, e.groupId);
        for (const [field, value] of Object.entries(e.info)) {
          const col = INFO_COLUMNS[field];
          if (col && value !== undefined) p[col] = columnValue(field, value);
        }
        break;
      }
    }
  }

  // A creation writes the whole row over one already there (noteReplaced), and one statement may
  // not touch a row twice: the last creation of an id in the batch is the one written.
  const lastOf = <T>(rows: T[], key: (r: T) => string | number): T[] => [...new Map(rows.map((r) => [key(r), r] as const)).values()];
  departments = lastOf(departments, (d) => d.id);
  staff = lastOf(staff, (x) => x.id);
  students = lastOf(students, (e) => (e as Extract<DomainEvent, { type: 'studentCreated' }>).student.id);
  sections = lastOf(sections, (e) => sectionKey(e.courseId, e.groupId));

  // 3. Write, parents before children, deletes before upserts (a change of group deletes one row
  //    of the course and inserts another).
  if (departments.length > 0) {
    const r = await tx.query<ReplacedRow>(
      `INSERT INTO departments (id, name) SELECT * FROM unnest($1::bigint[], $2::text[])
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name
       RETURNING id, (xmax <> 0) AS replaced`,
      [departments.map((d) => d.id), departments.map((d) => d.name)],
    );
    noteReplaced(r, 'department', replaced);
  }
  if (staff.length > 0) {
    const r = await tx.query<ReplacedRow>(
      `INSERT INTO staff (id, password, department_id) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])
       ON CONFLICT (id) DO UPDATE SET password = EXCLUDED.password, department_id = EXCLUDED.department_id
       RETURNING id, (xmax <> 0) AS replaced`,
      [staff.map((s) => s.id), staff.map((s) => s.hash), staff.map((s) => s.dep)],
    );
    noteReplaced(r, 'staff member', replaced);
  }
  if (students.length > 0) {
    const rows = students.map((e) => (e as Extract<DomainEvent, { type: 'studentCreated' }>).student);
    const r = await tx.query<ReplacedRow>(
      `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
       SELECT id, pw, st, mu, ra, dep, ey, g::sex
       FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::int[], $6::bigint[], $7::int[], $8::text[])
            AS t(id, pw, st, mu, ra, dep, ey, g)
       ON CONFLICT (id) DO UPDATE SET password = EXCLUDED.password, enrollment_start_time = EXCLUDED.enrollment_start_time,
         max_units = EXCLUDED.max_units, remaining_actions = EXCLUDED.remaining_actions, department_id = EXCLUDED.department_id,
         entry_year = EXCLUDED.entry_year, gender = EXCLUDED.gender
       RETURNING id, (xmax <> 0) AS replaced`,
      [
        rows.map((s) => s.id),
        rows.map((s) => s.passwordHash),
        rows.map((s) => new Date(s.enrollmentStart)),
        rows.map((s) => s.maxUnits),
        rows.map((s) => s.remainingActions),
        rows.map((s) => s.departmentId),
        rows.map((s) => s.entryYear),
        rows.map((s) => s.gender),
      ],
    );
    noteReplaced(r, 'student', replaced);
  }
  if (sections.length > 0) {
    const r = await tx.query<ReplacedRow>(
      `INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity,
                            exam_time, class_time, sex_lock, notes, closed)
       SELECT c, g, d, n, l, u, cap, res, ex, ct, lock::sex, notes, closed
       FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[],
                   $9::timestamptz[], $10::bigint[], $11::text[], $12::text[], $13::boolean[])
            AS t(c, g, d, n, l, u, cap, res, ex, ct, lock, notes, closed)
       ON CONFLICT (course_id, group_id) DO UPDATE SET for_department = EXCLUDED.for_department, name = EXCLUDED.name,
         lecturer = EXCLUDED.lecturer, units = EXCLUDED.units, capacity = EXCLUDED.capacity,
         reserve_capacity = EXCLUDED.reserve_capacity, exam_time = EXCLUDED.exam_time, class_time = EXCLUDED.class_time,
         sex_lock = EXCLUDED.sex_lock, notes = EXCLUDED.notes, closed = EXCLUDED.closed
       RETURNING course_id || '/' || group_id AS id, (xmax <> 0) AS replaced`,
      [
        sections.map((s) => s.courseId),
        sections.map((s) => s.groupId),
        sections.map((s) => s.info.forDepartment),
        sections.map((s) => s.info.name),
        sections.map((s) => s.info.lecturer),
        sections.map((s) => s.info.units),
        sections.map((s) => s.capacity),
        sections.map((s) => s.reserveCapacity),
        sections.map((s) => toDate(s.info.examTime)),
        // The Go schema's class_time is NOT NULL; 0 (no weekday) is how it says "no class time".
        sections.map((s) => s.info.classTime ?? 0),
        sections.map((s) => s.sexLock),
        sections.map((s) => s.info.notes),
        sections.map((s) => s.closed),
      ],
    );
    noteReplaced(r, 'section', replaced);
  }
  const rows = [...enrollments.values()];
  const gone = rows.filter((r) => r.reserved === null);
  const kept = rows.filter((r) => r.reserved !== null);
  if (gone.length > 0) {
    await tx.query(
      `DELETE FROM enrolled_courses e USING unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(c, g, s)
       WHERE e.course_id = d.c AND e.group_id = d.g AND e.student_id = d.s`,
      [intArray(gone.map((r) => r.courseId)), intArray(gone.map((r) => r.groupId)), intArray(gone.map((r) => r.studentId))],
    );
  }
  if (kept.length > 0) {
    await tx.query(
      `INSERT INTO enrolled_courses (course_id, group_id, student_id, reserved, placed_seq)
       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[], $5::bigint[])
       ON CONFLICT (student_id, course_id) DO UPDATE
         SET group_id = EXCLUDED.group_id, reserved = EXCLUDED.reserved, placed_seq = EXCLUDED.placed_seq`,
      [
        intArray(kept.map((r) => r.courseId)),
        intArray(kept.map((r) => r.groupId)),
        intArray(kept.map((r) => r.studentId)),
        `{${kept.map((r) => (r.reserved ? 't' : 'f')).join(',')}}`,
        intArray(kept.map((r) => r.placedSeq)),
      ],
    );
  }
  if (staffPasswords.size > 0) {
    await tx.query(`UPDATE staff s SET password = u.pw FROM unnest($1::bigint[], $2::text[]) AS u(id, pw) WHERE s.id = u.id`, [
      [...staffPasswords.keys()],
      [...staffPasswords.values()],
    ]);
  }
  for (const [id, set] of studentPatches) {
    const entries = Object.entries(set);
    if (entries.length === 0) continue;
    await tx.query(`UPDATE students SET ${entries.map(([col], i) => `${col} = $${i + 2}`).join(', ')} WHERE id = $1`, [id, ...entries.map(([, v]) => v)]);
  }
  if (remaining.size > 0) {
    await tx.query(
      `UPDATE students s SET remaining_actions = u.r FROM unnest($1::bigint[], $2::int[]) AS u(id, r) WHERE s.id = u.id`,
      [intArray([...remaining.keys()]), intArray([...remaining.values()])],
    );
  }
  for (const p of patches.values()) {
    const entries = Object.entries(p.set);
    if (entries.length === 0) continue;
    const sets = entries.map(([col], i) => (col === 'sex_lock' ? `${col} = $${i + 3}::text::sex` : `${col} = $${i + 3}`)).join(', ');
    await tx.query(`UPDATE courses SET ${sets} WHERE course_id = $1 AND group_id = $2`, [p.courseId, p.groupId, ...entries.map(([, v]) => v)]);
  }
  await tx.query(
    `INSERT INTO stream_heads (stream, seq) SELECT * FROM unnest($1::text[], $2::bigint[])
     ON CONFLICT (stream) DO UPDATE SET seq = GREATEST(stream_heads.seq, EXCLUDED.seq)`,
    [[...heads.keys()], intArray([...heads.values()])],
  );
  return todo.length;
}

/**
 * A PostgreSQL array literal of whole numbers (`{1,2,NULL}`), built in one join: `pg` would escape
 * and quote each element of a JS array with two regular expressions. Ids, sequence numbers and
 * counts only: a value that is not a safe integer is a bug, and is refused rather than written.
 */
function intArray(xs: readonly (number | null)[]): string {
  for (const x of xs) if (x !== null && !Number.isSafeInteger(x)) throw new Error(`not a whole number: ${String(x)}`);
  return `{${xs.map((x) => (x === null ? 'NULL' : String(x))).join(',')}}`;
}

/** A unix-ms time for the JSON batch: whole milliseconds (a cause's time is `Date.now()`-like). */
function jsonTime(at: number): number {
  if (!Number.isFinite(at)) throw new Error(`not a time: ${String(at)}`);
  return Math.trunc(at);
}

function ms(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  return v instanceof Date ? v.getTime() : new Date(v as string).getTime();
}

/**
 * The latest and earliest instants a stored `infinity` / `-infinity` enrollment start is read as:
 * the window of a student starting at 9999-12-31 never opens, one starting at 0001-01-01 closed
 * long ago, as the rule `start <= now < start + window` says of the infinities themselves. Both are
 * within PostgreSQL's and JavaScript's ranges and print with four-digit years. (pg and PGlite give
 * the infinities as the numbers Infinity and -Infinity; `new Date(Infinity)` is an invalid date,
 * NaN, which passed every comparison of the window rule and broke every answer showing it.)
 */
export const LATEST_START = Date.parse('9999-12-31T23:59:59.000Z');
export const EARLIEST_START = Date.parse('0001-01-01T00:00:00.000Z');

function infinityOf(v: unknown): 'infinity' | '-infinity' | null {
  if (v === Infinity || v === 'infinity') return 'infinity';
  if (v === -Infinity || v === '-infinity') return '-infinity';
  return null;
}

/**
 * An exam time as the API shows and compares it: whole seconds (the Go service's unix seconds);
 * a stored `.5 s` and `.7 s` are the same exam time to a client, so they clash here too.
 */
function examSeconds(v: unknown): number | null {
  const t = ms(v);
  return t === null || !Number.isFinite(t) ? null : Math.floor(t / 1000) * 1000;
}

function num(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

/** Reads the whole state the engine hosts: every section with its seats and queue in order. */
/** Reads which of the API's optional fields this database's schema declares NOT NULL (the Go service's does). */
export async function readRequirements(db: SqlExecutor): Promise<StorageRequirements> {
  const r = await db.query<{ table_name: string; column_name: string }>(
    `SELECT table_name, column_name FROM information_schema.columns
     WHERE table_schema = current_schema() AND is_nullable = 'NO'
       AND table_name IN ('courses', 'students', 'staff') AND column_name IN ('for_department', 'department_id', 'entry_year')`,
  );
  const has = (t: string, c: string) => r.rows.some((x) => x.table_name === t && x.column_name === c);
  return {
    sectionDepartment: has('courses', 'for_department'),
    studentDepartment: has('students', 'department_id'),
    studentEntryYear: has('students', 'entry_year'),
    staffDepartment: has('staff', 'department_id'),
  };
}

export async function loadState(db: SqlExecutor): Promise<LoadedState> {
  const heads = new Map<string, number>();
  for (const r of (await db.query<{ stream: string; seq: number }>('SELECT stream, seq FROM stream_heads')).rows) {
    heads.set(r.stream, Number(r.seq));
  }
  const departments = (await db.query<{ id: number; name: string }>('SELECT id, name FROM departments ORDER BY id')).rows.map(
    (r) => ({ id: Number(r.id), name: r.name }),
  );
  const staff = (
    await db.query<{ id: number; password: string; department_id: number | null }>('SELECT id, password, department_id FROM staff ORDER BY id')
  ).rows.map((r) => ({ id: Number(r.id), passwordHash: r.password, departmentId: num(r.department_id), seq: heads.get(`staff:${Number(r.id)}`) ?? 1 }));
  const infinities: StoredInfinity[] = [];
  const students: LoadedStudent[] = (
    await db.query<Record<string, unknown>>(
      `SELECT id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender::text AS gender
       FROM students ORDER BY id`,
    )
  ).rows.map((r) => {
    const stored = infinityOf(r.enrollment_start_time);
    const start = stored === 'infinity' ? LATEST_START : stored === '-infinity' ? EARLIEST_START : (ms(r.enrollment_start_time) as number);
    if (stored !== null) infinities.push({ column: 'students.enrollment_start_time', studentId: Number(r.id), stored, readAs: new Date(start).toISOString() });
    return {
    id: Number(r.id),
    passwordHash: r.password as string,
    enrollmentStart: start,
    maxUnits: Number(r.max_units),
    remainingActions: Number(r.remaining_actions),
    departmentId: num(r.department_id),
    entryYear: num(r.entry_year),
    gender: r.gender as Sex,
    seq: heads.get(`student:${Number(r.id)}`) ?? 0,
    };
  });
  const sections = await loadSections(db, heads, infinities);
  return infinities.length > 0 ? { departments, staff, students, sections, infinities } : { departments, staff, students, sections };
}

/**
 * Every section's context as the tables hold it (seats and reserve queue in placement order);
 * `heads` are the streams' last sequence numbers (read when not given).
 */
export async function loadSections(db: SqlExecutor, heads?: Map<string, number>, infinities?: StoredInfinity[]): Promise<SectionContext[]> {
  if (!heads) {
    heads = new Map();
    for (const r of (await db.query<{ stream: string; seq: number }>("SELECT stream, seq FROM stream_heads WHERE stream LIKE 'section:%'")).rows) {
      heads.set(r.stream, Number(r.seq));
    }
  }
  const sections = new Map<string, SectionContext>();
  const courseRows = await db.query<Record<string, unknown>>(
    `SELECT course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity, exam_time, class_time,
            sex_lock::text AS sex_lock, notes, closed
     FROM courses ORDER BY course_id, group_id`,
  );
  for (const r of courseRows.rows) {
    const info: SectionInfo = {
      courseId: Number(r.course_id),
      groupId: Number(r.group_id),
      forDepartment: num(r.for_department),
      name: r.name as string,
      lecturer: (r.lecturer as string) ?? '',
      units: Number(r.units),
      // A stored infinity is no instant: read as no exam time (no clash), and told at start.
      examTime: examSeconds(r.exam_time),
      // 0 is no valid slot (no weekday): the Go schema's "no class time".
      classTime: r.class_time === null || Number(r.class_time) === 0 ? null : num(r.class_time),
      notes: (r.notes as string) ?? '',
    };
    const stored = infinityOf(r.exam_time);
    if (stored !== null) infinities?.push({ column: 'courses.exam_time', courseId: info.courseId, groupId: info.groupId, stored, readAs: null });
    const key = sectionKey(info.courseId, info.groupId);
    sections.set(key, {
      info,
      capacity: Number(r.capacity),
      reserveCapacity: Number(r.reserve_capacity),
      sexLock: (r.sex_lock as Sex | null) ?? null,
      closed: Boolean(r.closed),
      registered: [],
      queue: [],
      seq: heads.get(`section:${key}`) ?? 0,
    });
  }
  const enrolled = await db.query<{ course_id: number; group_id: number; student_id: number; reserved: boolean }>(
    `SELECT course_id, group_id, student_id, reserved FROM enrolled_courses
     ORDER BY course_id, group_id, placed_seq NULLS FIRST, id`,
  );
  for (const r of enrolled.rows) {
    const ctx = sections.get(sectionKey(Number(r.course_id), Number(r.group_id)));
    if (!ctx) continue;
    const id = Number(r.student_id);
    (r.reserved ? ctx.queue : ctx.registered).push(id);
  }
  return [...sections.values()];
}

export async function readTransitions(db: SqlExecutor, courseId: number, groupId: number, limit: number, beforeSeq?: number): Promise<TransitionRecord[]> {
  const r = await db.query<Record<string, unknown>>(
    `SELECT seq, type, student_id, request_id, actor, at, payload FROM transitions
     WHERE course_id = $1 AND group_id = $2 AND ($4::bigint IS NULL OR seq < $4) ORDER BY seq DESC LIMIT $3`,
    [courseId, groupId, limit, beforeSeq ?? null],
  );
  return r.rows.map((x) => ({
    seq: Number(x.seq),
    type: x.type as string,
    studentId: num(x.student_id),
    requestId: x.request_id as string,
    actor: x.actor as string,
    at: new Date(ms(x.at) as number).toISOString(),
    payload: (typeof x.payload === 'string' ? JSON.parse(x.payload) : x.payload) as Record<string, unknown>,
  }));
}

/** A student's transitions (seat, queue, drop and action events) across every section, newest first. */
export async function readStudentTransitions(db: SqlExecutor, studentId: number, limit: number): Promise<StudentTransitionRecord[]> {
  const r = await db.query<Record<string, unknown>>(
    `SELECT seq, type, course_id, group_id, student_id, request_id, actor, at, payload FROM transitions
     WHERE student_id = $1 AND type <> 'studentCreated' ORDER BY at DESC, id DESC LIMIT $2`,
    [studentId, limit],
  );
  return r.rows.map((x) => ({
    seq: Number(x.seq),
    type: x.type as string,
    courseId: num(x.course_id),
    groupId: num(x.group_id),
    studentId: num(x.student_id),
    requestId: x.request_id as string,
    actor: x.actor as string,
    at: new Date(ms(x.at) as number).toISOString(),
    payload: (typeof x.payload === 'string' ? JSON.parse(x.payload) : x.payload) as Record<string, unknown>,
  }));
}

/**
 * Seats taken and reserve-queue places held over time, from the transition log: the log is cut
 * into `buckets` equal spans between its first and last seat or queue event, each span's net change
 * is summed in the database, and the running totals are returned, one point per non-empty span.
 * One section when `section` is given, else every section (the whole term).
 */
export async function readFillHistory(
  db: SqlExecutor,
  opts: { buckets: number; section?: { courseId: number; groupId: number } },
): Promise<FillPoint[]> {
  const where = opts.section ? 'AND course_id = $2 AND group_id = $3' : '';
  const params: unknown[] = [opts.buckets];
  if (opts.section) params.push(opts.section.courseId, opts.section.groupId);
  const r = await db.query<Record<string, unknown>>(
    `WITH moves AS (
       SELECT at,
         CASE WHEN type IN ('studentEnrolled', 'studentPromoted') THEN 1
              WHEN type = 'studentDropped' AND payload->>'from' = 'registered' THEN -1 ELSE 0 END AS dr,
         CASE WHEN type = 'studentQueued' THEN 1
              WHEN type = 'studentPromoted' THEN -1
              WHEN type = 'studentDropped' AND payload->>'from' = 'queued' THEN -1 ELSE 0 END AS dq
       FROM transitions
       WHERE type IN ('studentEnrolled', 'studentQueued', 'studentPromoted', 'studentDropped') ${where}
     ), span AS (SELECT extract(epoch FROM min(at)) AS lo, extract(epoch FROM max(at)) AS hi FROM moves)
     SELECT width_bucket(extract(epoch FROM m.at), span.lo, span.hi + 0.001, $1) AS k,
            max(m.at) AS at, sum(m.dr) AS dr, sum(m.dq) AS dq
     FROM moves m, span GROUP BY k ORDER BY k`,
    params,
  );
  let registered = 0;
  let queued = 0;
  return r.rows.map((x) => {
    registered += Number(x.dr);
    queued += Number(x.dq);
    return { at: new Date(ms(x.at) as number).toISOString(), registered, queued };
  });
}
