-- Full mode: the batcher never moves past a message it cannot read or apply by itself.

-- Where a reader of the log is stopped, and why (one row per log while it is stopped). The batcher
-- writes it; every engine's /ready reads it, so a separate batcher process is seen too.
CREATE TABLE IF NOT EXISTS log_stalls (
  log_name      text        PRIMARY KEY,
  stream_offset bigint      NOT NULL,
  reason        text        NOT NULL,
  since         timestamptz NOT NULL DEFAULT now()
);

-- Every message an operator moved past (`npm run batcher -- --skip <offset>`): who, when, why,
-- and the message itself (also copied to the dead-letter queue).
CREATE TABLE IF NOT EXISTS log_skips (
  id            bigserial   PRIMARY KEY,
  log_name      text        NOT NULL,
  stream_offset bigint      NOT NULL,
  skipped_by    text        NOT NULL,
  reason        text        NOT NULL,
  message       bytea       NOT NULL,
  skipped_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS log_skips_log ON log_skips (log_name, stream_offset);
