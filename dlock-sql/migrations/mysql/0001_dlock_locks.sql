-- dlock lock table for MySQL 8 and MariaDB 10.3+. dlock creates it itself
-- unless the URL says create_table=false; teams that manage schema apply this
-- file instead (replace dlock_locks with the name given in ?table= if any).
-- name is VARBINARY so lock names compare byte-exactly: the default
-- collations ignore case and trailing spaces, and `Email`, `email` and
-- `email ` must be three different locks.
-- Times are UTC by the server's UTC_TIMESTAMP(6), never the session time zone.
-- Rows are never deleted: the token counter survives release and expiry.
CREATE TABLE IF NOT EXISTS dlock_locks (
    name            VARBINARY(255) NOT NULL,
    owner           VARBINARY(255) NOT NULL, -- UTF-8 bytes
    acquisition_id  VARBINARY(64)  NOT NULL,
    token           BIGINT         NOT NULL,
    locked_at       DATETIME(6)    NOT NULL,
    lock_until      DATETIME(6)    NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB;
