-- 001: the first schema. One row per site name this API has served.
CREATE TABLE site (
    name        text PRIMARY KEY,
    first_seen  timestamptz NOT NULL DEFAULT now()
);
