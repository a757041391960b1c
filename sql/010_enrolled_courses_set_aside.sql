-- Additive: where the migration to 002 puts the rows of enrolled_courses it could not keep. The Go
-- service's data can hold more than one row for one student and course (its group change inserted
-- the new row and never deleted the old one; the same group registered and reserved), which 002's
-- unique index on (student_id, course_id) refuses. Before 002 runs, one row per student and course
-- is kept (a registered row over a reserved one, then the highest id) and every other row is moved
-- here with its original id (src/persistence/migrations.ts; docs/operations.md, Migrations). This
-- file only makes sure every database has the table: the step before 002 creates it the same way.
CREATE TABLE IF NOT EXISTS enrolled_courses_set_aside (
  id           bigint      PRIMARY KEY,
  course_id    bigint      NOT NULL,
  group_id     bigint      NOT NULL,
  student_id   bigint      NOT NULL,
  reserved     boolean     NOT NULL,
  kept_id      bigint,
  set_aside_at timestamptz NOT NULL DEFAULT now(),
  reason       text        NOT NULL
);
