-- dlock lock table for SQLite. dlock creates it itself unless the URL says
-- create_table=false; teams that manage schema apply this file instead
-- (replace dlock_locks with the name given in ?table= if any).
-- Times are microseconds since the Unix epoch by SQLite's own clock.
-- Rows are never deleted: the token counter survives release and expiry.
CREATE TABLE IF NOT EXISTS dlock_locks (
    name            TEXT    NOT NULL PRIMARY KEY, -- BINARY collation: byte-exact
    owner           TEXT    NOT NULL,
    acquisition_id  TEXT    NOT NULL,
    token           INTEGER NOT NULL,
    locked_at       INTEGER NOT NULL,
    lock_until      INTEGER NOT NULL
);
