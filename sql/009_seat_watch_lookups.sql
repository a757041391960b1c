-- Additive: seat watches are read from the database by every instance (no longer only from the
-- memory of the instance that took them): a section's active watchers in watch order, when an
-- opening is evaluated and for a student's places in `GET /me/watches`, and whether an opening
-- (section, seq) was already announced by another instance.
CREATE INDEX IF NOT EXISTS seat_watches_section_active ON seat_watches (course_id, group_id, id) WHERE fired_seq IS NULL;
CREATE INDEX IF NOT EXISTS seat_watches_section_fired ON seat_watches (course_id, group_id, fired_seq) WHERE fired_seq IS NOT NULL;
