-- Additive (issue 16): webhook deliveries derived from the ordered log. The batcher (full mode) or
-- the group commit (embedded mode) records a batch's deliveries in the same transaction as its
-- transitions, so a delivery exists exactly when its change is in the database, whatever crashes.
-- Full mode then hands each new delivery to RabbitMQ once: `queued` is set when an instance claims
-- it for publishing (FOR UPDATE SKIP LOCKED, so one instance does); a claim whose publish was lost
-- (crash) is found again by the overdue sweep.
ALTER TABLE webhook_deliveries ADD COLUMN IF NOT EXISTS queued boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS webhook_deliveries_unqueued ON webhook_deliveries (id) WHERE status = 'pending' AND NOT queued;
