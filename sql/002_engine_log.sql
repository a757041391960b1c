-- Additive: what the engine needs beyond the Go schema.

-- Staff can close a section to new enrollments.
ALTER TABLE courses ADD COLUMN IF NOT EXISTS closed boolean NOT NULL DEFAULT false;

-- Order of seats and of the reserve queue: the section sequence number of the event that placed
-- the student (enrolled, queued or promoted). Rows from the Go service have NULL and sort first
-- by id, as that service ordered them.
ALTER TABLE enrolled_courses ADD COLUMN IF NOT EXISTS placed_seq bigint;

-- One group per course per student (SPEC invariant), and the arbiter for idempotent upserts.
CREATE UNIQUE INDEX IF NOT EXISTS enrolled_courses_student_course ON enrolled_courses (student_id, course_id);
CREATE INDEX IF NOT EXISTS enrolled_courses_section ON enrolled_courses (course_id, group_id, reserved);

-- The transition log: every change, with its per-stream sequence number and the request that
-- caused it. (stream, seq) is unique, which makes applying a redelivered event a no-op.
CREATE TABLE IF NOT EXISTS transitions (
  id         bigserial   PRIMARY KEY,
  stream     text        NOT NULL,
  seq        bigint      NOT NULL,
  type       text        NOT NULL,
  course_id  bigint,
  group_id   bigint,
  student_id bigint,
  request_id text        NOT NULL,
  actor      text        NOT NULL,
  at         timestamptz NOT NULL,
  payload    jsonb       NOT NULL,
  UNIQUE (stream, seq)
);
CREATE INDEX IF NOT EXISTS transitions_section ON transitions (course_id, group_id, seq DESC);

-- Last applied sequence number per stream, read at start so actors continue their numbering.
CREATE TABLE IF NOT EXISTS stream_heads (
  stream text   PRIMARY KEY,
  seq    bigint NOT NULL
);

-- Full mode: how far into the broker's log the database has applied (per log name).
CREATE TABLE IF NOT EXISTS log_offsets (
  log_name   text        PRIMARY KEY,
  next_offset bigint     NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
