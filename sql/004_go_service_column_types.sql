-- Back to the Go service's column types (its database.sql): INTEGER ids, SMALLINT units and
-- counters, SMALLSERIAL department ids, SERIAL enrolled_courses.id. 001 had widened them to
-- bigint/integer, so a Go-era client of the database read ids as strings (node-postgres returns
-- bigint as text) and comparisons across tables stopped matching. Extra columns and tables stay.
-- A value out of the Go range makes this migration fail, as the Go schema would have refused it.

ALTER TABLE departments ALTER COLUMN id TYPE smallint;
CREATE SEQUENCE IF NOT EXISTS departments_id_seq AS smallint OWNED BY departments.id;
SELECT setval('departments_id_seq', COALESCE((SELECT max(id) FROM departments), 0) + 1, false);
ALTER TABLE departments ALTER COLUMN id SET DEFAULT nextval('departments_id_seq');

ALTER TABLE staff
  ALTER COLUMN id TYPE integer,
  ALTER COLUMN department_id TYPE smallint;

ALTER TABLE students
  ALTER COLUMN id TYPE integer,
  ALTER COLUMN max_units TYPE smallint,
  ALTER COLUMN remaining_actions TYPE smallint,
  ALTER COLUMN department_id TYPE smallint,
  ALTER COLUMN entry_year TYPE smallint;

ALTER TABLE courses
  ALTER COLUMN course_id TYPE integer,
  ALTER COLUMN group_id TYPE integer,
  ALTER COLUMN for_department TYPE smallint,
  ALTER COLUMN units TYPE smallint,
  ALTER COLUMN capacity TYPE integer,
  ALTER COLUMN reserve_capacity TYPE integer,
  ALTER COLUMN class_time TYPE integer;

ALTER TABLE enrolled_courses
  ALTER COLUMN id TYPE integer,
  ALTER COLUMN course_id TYPE integer,
  ALTER COLUMN group_id TYPE integer,
  ALTER COLUMN student_id TYPE integer;
ALTER SEQUENCE enrolled_courses_id_seq AS integer;
