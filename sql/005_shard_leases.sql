-- Several instances (issue 14, docs/scale-out.md): one fenced owner per shard.

-- One lease per shard of a log: who owns it, where it answers (for forwarding), its fencing token
-- (epoch, +1 on every change of owner) and when it expires by the database's clock.
CREATE TABLE IF NOT EXISTS shard_leases (
  log_name   text        NOT NULL,
  shard      integer     NOT NULL,
  owner      text,
  address    text,
  epoch      bigint      NOT NULL DEFAULT 0,
  expires_at timestamptz NOT NULL DEFAULT '-infinity',
  PRIMARY KEY (log_name, shard)
);

-- Live instances (heartbeat), for the fair share of shards.
CREATE TABLE IF NOT EXISTS engine_instances (
  log_name   text        NOT NULL,
  instance   text        NOT NULL,
  address    text        NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (log_name, instance)
);

-- Highest fence epoch per shard that the batcher has applied, written in the same transaction as
-- the events and log_offsets, so a batcher restarting after a fence still ignores a deposed
-- owner's later messages.
CREATE TABLE IF NOT EXISTS log_fences (
  log_name text    NOT NULL,
  shard    integer NOT NULL,
  epoch    bigint  NOT NULL,
  PRIMARY KEY (log_name, shard)
);
