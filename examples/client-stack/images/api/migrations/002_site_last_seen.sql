-- 002 (api 1.1): remember when a site was last served. Nullable, so api 1.0 keeps working
-- against this schema (rollback).
ALTER TABLE site ADD COLUMN last_seen timestamptz;
UPDATE site SET last_seen = first_seen;
