-- dlock lock table for PostgreSQL. dlock creates it itself unless the URL says
-- create_table=false; teams that manage schema apply this file instead
-- (replace dlock_locks with the name given in ?table= if any; it may be
-- schema-qualified, e.g. "locks"."dlock_locks").
-- Times are set by the database's clock_timestamp() in the statement that
-- writes them. Rows are never deleted: the token counter survives release
-- and expiry.
CREATE TABLE IF NOT EXISTS dlock_locks (
    name            TEXT COLLATE "C" NOT NULL PRIMARY KEY, -- compared byte-exactly
    owner           TEXT        NOT NULL,
    acquisition_id  TEXT        NOT NULL,
    token           BIGINT      NOT NULL,
    locked_at       TIMESTAMPTZ NOT NULL,
    lock_until      TIMESTAMPTZ NOT NULL
);
