-- The Go service's tables, kept as they are so its data and clients keep working.
-- Never edit a migration that has shipped: add a new numbered file instead.
DO $$ BEGIN
  CREATE TYPE sex AS ENUM ('male', 'female');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS departments (
  id   bigint PRIMARY KEY,
  name text   NOT NULL
);

CREATE TABLE IF NOT EXISTS staff (
  id            bigint PRIMARY KEY,
  password      text   NOT NULL,
  department_id bigint
);

CREATE TABLE IF NOT EXISTS students (
  id                    bigint      PRIMARY KEY,
  password              text        NOT NULL,
  enrollment_start_time timestamptz NOT NULL,
  max_units             integer     NOT NULL,
  remaining_actions     integer     NOT NULL,
  department_id         bigint,
  entry_year            integer,
  gender                sex         NOT NULL
);

CREATE TABLE IF NOT EXISTS courses (
  course_id        bigint  NOT NULL,
  group_id         bigint  NOT NULL,
  for_department   bigint,
  name             text    NOT NULL,
  lecturer         text    NOT NULL DEFAULT '',
  units            integer NOT NULL,
  capacity         integer NOT NULL,
  reserve_capacity integer NOT NULL DEFAULT 0,
  exam_time        timestamptz,
  class_time       bigint,
  sex_lock         sex,
  notes            text    NOT NULL DEFAULT '',
  PRIMARY KEY (course_id, group_id)
);

CREATE TABLE IF NOT EXISTS enrolled_courses (
  id         bigserial PRIMARY KEY,
  course_id  bigint  NOT NULL,
  group_id   bigint  NOT NULL,
  student_id bigint  NOT NULL REFERENCES students (id),
  reserved   boolean NOT NULL DEFAULT false,
  FOREIGN KEY (course_id, group_id) REFERENCES courses (course_id, group_id)
);
