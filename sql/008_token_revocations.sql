-- Additive: token revocations that Redis could not take when they were made (REDIS_URL set, Redis
-- away). A logout is answered only once it is durable: in Redis, or else here. Every instance reads
-- this table at start (and while Redis is away) and writes what it finds to Redis once it is back,
-- so an acknowledged revocation survives a restart of the instance before Redis returns. Not on the
-- enroll path: written only during a Redis outage, rows expire with the tokens they revoke.
-- key: `j:<jti>`, `s:<sid>` or `u:<subject>`; until_s: unix seconds after which the row is
-- forgotten; at_ms: for `u:` keys, sessions that logged in at or before this unix ms are revoked.
CREATE TABLE IF NOT EXISTS token_revocations (
  key     text   PRIMARY KEY,
  until_s bigint NOT NULL,
  at_ms   bigint
);
CREATE INDEX IF NOT EXISTS token_revocations_until ON token_revocations (until_s);
