-- Additive (issue 16): seat watches and webhooks. Student notices themselves are not stored: they are
-- derived from `transitions`, whose (stream, seq) gives every notice a durable id.

-- Seat watches, in the order they were started (id). A watch is active while fired_seq is NULL;
-- when a seat or reserve place opens, the section sequence number of the transition that opened it
-- is recorded (so a resumed event stream can replay the notice). Cancelled watches are deleted.
CREATE TABLE IF NOT EXISTS seat_watches (
  id         bigserial   PRIMARY KEY,
  student_id bigint      NOT NULL,
  course_id  bigint      NOT NULL,
  group_id   bigint      NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  fired_seq  bigint,
  fired_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS seat_watches_active ON seat_watches (student_id, course_id, group_id) WHERE fired_seq IS NULL;
CREATE INDEX IF NOT EXISTS seat_watches_student ON seat_watches (student_id, id);

-- Webhook endpoints registered by staff. The secret is kept (it signs every delivery) and never
-- returned by the API.
CREATE TABLE IF NOT EXISTS webhooks (
  id         bigserial   PRIMARY KEY,
  url        text        NOT NULL,
  secret     text        NOT NULL,
  kinds      text[],
  created_by bigint      NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  active     boolean     NOT NULL DEFAULT true
);

-- One row per (webhook, notice): the body sent, where it stands, and when to try next.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id              bigserial   PRIMARY KEY,
  webhook_id      bigint      NOT NULL REFERENCES webhooks (id),
  notice_key      text        NOT NULL,
  kind            text        NOT NULL,
  student_id      bigint      NOT NULL,
  body            text        NOT NULL,
  status          text        NOT NULL DEFAULT 'pending',
  attempts        int         NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  created_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  UNIQUE (webhook_id, notice_key)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying');

-- Every attempt of a delivery: when, the HTTP status (NULL if none came back) and the error.
CREATE TABLE IF NOT EXISTS webhook_attempts (
  id          bigserial   PRIMARY KEY,
  delivery_id bigint      NOT NULL REFERENCES webhook_deliveries (id),
  attempt     int         NOT NULL,
  at          timestamptz NOT NULL DEFAULT now(),
  status_code int,
  error       text,
  duration_ms int         NOT NULL,
  UNIQUE (delivery_id, attempt)
);

-- A student's own transitions, in log order: what a resumed event stream reads first.
CREATE INDEX IF NOT EXISTS transitions_student ON transitions (student_id, id);
