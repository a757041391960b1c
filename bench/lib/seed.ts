import type { SqlClient, SqlExecutor } from '../../src/persistence/sql-client.js';

/**
 * Benchmark data, inserted straight into the database before the engine starts, as the Go
 * service's benchmark did (the engine reads such rows at start). The same statements run on
 * PostgreSQL (full mode) and on PGlite (embedded mode); rows are made with generate_series, so a
 * million enrollments cost one statement, not a million parameters.
 *
 * Students share one precomputed bcrypt hash; every student's enrollment window is open (it
 * started a minute before seeding, and the engine runs with a window of a week).
 */
export interface SeedSpec {
  students: number;
  sections: number;
  /** Sections are `sections / groupsPerCourse` courses of `groupsPerCourse` groups each. */
  groupsPerCourse: number;
  capacity: number;
  reserveCapacity: number;
  units: number;
  maxUnits: number;
  remainingActions: number;
  /** Enrollments inserted per student (the memory scenario's big data set); 0 for none. */
  enrollmentsPerStudent: number;
}

export const DEPARTMENT_ID = 1;
export const STAFF_ID = 1;
export const FIRST_STUDENT_ID = 10_000_000;
export const FIRST_COURSE_ID = 100_000;
export const BENCH_PASSWORD = 'bench-password';
/** A week: every seeded student stays inside their window for the whole run. */
export const WINDOW_MINUTES = 7 * 24 * 60;

export interface SectionRef {
  courseId: number;
  groupId: number;
}

export function sectionRef(spec: Pick<SeedSpec, 'groupsPerCourse'>, i: number): SectionRef {
  return { courseId: FIRST_COURSE_ID + Math.floor(i / spec.groupsPerCourse), groupId: 1 + (i % spec.groupsPerCourse) };
}

export function studentId(i: number): number {
  return FIRST_STUDENT_ID + i;
}

export interface SeedReport {
  students: number;
  sections: number;
  enrollments: number;
  ms: number;
}

/** Inserts the data set into a migrated, empty database (a fresh one per run). */
export async function seedDatabase(db: SqlClient, spec: SeedSpec, passwordHash: string): Promise<SeedReport> {
  const t0 = performance.now();
  const courses = spec.sections / spec.groupsPerCourse;
  if (spec.enrollmentsPerStudent > 0) {
    if (!Number.isInteger(courses)) throw new Error('sections must be a multiple of groupsPerCourse when enrollments are seeded');
    if (spec.enrollmentsPerStudent > courses) throw new Error('more enrollments per student than courses');
    if (spec.enrollmentsPerStudent * spec.units > spec.maxUnits) throw new Error('seeded enrollments exceed max_units');
  }
  await db.transaction(async (tx: SqlExecutor) => {
    await tx.query(`INSERT INTO departments (id, name) VALUES ($1::bigint, 'Benchmark department')`, [DEPARTMENT_ID]);
    await tx.query(`INSERT INTO staff (id, password, department_id) VALUES ($1::bigint, $2::text, $3::bigint)`, [STAFF_ID, passwordHash, DEPARTMENT_ID]);
    await tx.query(
      `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
       SELECT $1::bigint + g, $2::text, now() - interval '1 minute', $3::int, $4::int, $5::bigint, 1403,
              (CASE WHEN g % 2 = 0 THEN 'male' ELSE 'female' END)::sex
       FROM generate_series(0, $6::int - 1) AS g`,
      [FIRST_STUDENT_ID, passwordHash, spec.maxUnits, spec.remainingActions, DEPARTMENT_ID, spec.students],
    );
    await tx.query(
      `INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity,
                            exam_time, class_time, sex_lock, notes)
       SELECT $1::bigint + g / $2::int, 1 + g % $2::int, $3::bigint, 'Benchmark course ' || (g / $2::int), 'Lecturer ' || (g % 97),
              $4::int, $5::int, $6::int, NULL, NULL, NULL, ''
       FROM generate_series(0, $7::int - 1) AS g`,
      [FIRST_COURSE_ID, spec.groupsPerCourse, DEPARTMENT_ID, spec.units, spec.capacity, spec.reserveCapacity, spec.sections],
    );
    if (spec.enrollmentsPerStudent > 0) {
      // Enrollment n (0 .. students*E-1) belongs to student n / E and goes to course n mod C, in
      // group 1 + (n / C) mod G: consecutive enrollments of a student are distinct courses, and
      // each lap over the courses uses the next group, so sections fill evenly.
      await tx.query(
        `INSERT INTO enrolled_courses (course_id, group_id, student_id, reserved)
         SELECT $1::bigint + n % $2::bigint, 1 + (n / $2::bigint) % $3::int, $4::bigint + n / $5::int, false
         FROM generate_series(0::bigint, $6::bigint - 1) AS n`,
        [FIRST_COURSE_ID, courses, spec.groupsPerCourse, FIRST_STUDENT_ID, spec.enrollmentsPerStudent, spec.students * spec.enrollmentsPerStudent],
      );
      const r = await tx.query<{ m: number | string | null }>(
        `SELECT max(n) AS m FROM (SELECT count(*) AS n FROM enrolled_courses GROUP BY course_id, group_id) t`,
      );
      const most = Number(r.rows[0]?.m ?? 0);
      if (most > spec.capacity) throw new Error(`seeding put ${most} students in one section of capacity ${spec.capacity}`);
    }
  });
  await db.query('ANALYZE');
  return {
    students: spec.students,
    sections: spec.sections,
    enrollments: spec.students * spec.enrollmentsPerStudent,
    ms: Math.round(performance.now() - t0),
  };
}

/** What the database holds in enrolled_courses: counts, and a checksum of the (student, course, group) rows. */
export interface RowCounts {
  rows: number;
  registered: number;
  queued: number;
  /** sum(student_id * 100003 + course_id * 31 + group_id), as a decimal string (exceeds 2^53). */
  checksum: string;
}

export function rowChecksum(studentId: number, courseId: number, groupId: number): bigint {
  return BigInt(studentId) * 100003n + BigInt(courseId) * 31n + BigInt(groupId);
}

export async function countEnrollments(db: SqlExecutor): Promise<RowCounts> {
  const r = await db.query<{ registered: number | string; queued: number | string; checksum: string }>(
    `SELECT count(*) FILTER (WHERE NOT reserved) AS registered, count(*) FILTER (WHERE reserved) AS queued,
            COALESCE(sum(student_id::numeric * 100003 + course_id * 31 + group_id), 0)::text AS checksum
     FROM enrolled_courses`,
  );
  const registered = Number(r.rows[0]?.registered ?? 0);
  const queued = Number(r.rows[0]?.queued ?? 0);
  return { rows: registered + queued, registered, queued, checksum: String(r.rows[0]?.checksum ?? '0') };
}

/**
 * The rows the database must hold once every acknowledged change is applied, kept by the load
 * generator from its 204 replies: each student's requests go through one connection, in order,
 * so the client knows every student's holdings exactly (promotions move a row from queued to
 * registered but neither add nor remove one).
 */
export class Ledger {
  rows: number;
  checksum: bigint;

  constructor(base: { rows: number; checksum: string }) {
    this.rows = base.rows;
    this.checksum = BigInt(base.checksum);
  }

  add(studentId: number, courseId: number, groupId: number): void {
    this.rows += 1;
    this.checksum += rowChecksum(studentId, courseId, groupId);
  }

  remove(studentId: number, courseId: number, groupId: number): void {
    this.rows -= 1;
    this.checksum -= rowChecksum(studentId, courseId, groupId);
  }

  matches(c: RowCounts): boolean {
    return c.rows === this.rows && BigInt(c.checksum) === this.checksum;
  }
}
