//! Turning sqlx errors into dlock errors that say what to do, the same way
//! for every dialect. Each dialect only says which server codes mean what
//! ([`Refusal`]); the hints and the choice of variant live here.
//!
//! The sqlx error is always the `source`, never copied into the message.

use dlock_core::Error;

/// What a server error code means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Wrong user name or password, or an unknown user.
    Credentials,
    /// The user is known but lacks a privilege (on the database or the table).
    Privilege,
    /// The database named in the URL does not exist.
    NoDatabase,
    /// Anything else (or not a server error at all).
    Other,
}

/// The error for a failed first connection to `target`.
pub(crate) fn connect_error(
    kind: &'static str,
    server: &str,
    target: &str,
    refusal: Refusal,
    e: sqlx::Error,
) -> Error {
    let hint = match &e {
        _ if refusal == Refusal::NoDatabase => {
            "the database does not exist; create it or fix the URL path".to_string()
        }
        sqlx::Error::Database(_) => "the server refused the connection".to_string(),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused: is {server} running and listening on that host and port?")
        }
        sqlx::Error::Io(_) => "network error: is the host reachable?".to_string(),
        sqlx::Error::Tls(_) => {
            "TLS failed: check the ssl mode option and the certificates".to_string()
        }
        _ => String::new(),
    };
    let source = Some(Box::new(e) as dlock_core::BoxError);
    match refusal {
        Refusal::Credentials => Error::denied(
            kind,
            "connect",
            format!(
                "to {target}: check the user name and password in the URL (or the user= and \
                 password= options)"
            ),
            source,
        ),
        Refusal::Privilege => Error::denied(
            kind,
            "connect",
            format!("to {target}: the user may not use this database; GRANT it access"),
            source,
        ),
        Refusal::NoDatabase | Refusal::Other => Error::connect(kind, target, hint, source),
    }
}

/// The error for a failed statement during `op`: [`Error::Denied`] when the
/// user lacks a privilege on the lock table, [`Error::Backend`] otherwise.
pub(crate) fn op_error(
    kind: &'static str,
    op: &'static str,
    refusal: Refusal,
    e: sqlx::Error,
) -> Error {
    match refusal {
        Refusal::Privilege => Error::denied(
            kind,
            op,
            "the user lacks a privilege on the lock table: GRANT it SELECT, INSERT, UPDATE \
             and DELETE (and CREATE, for create_table=true)",
            Some(Box::new(e)),
        ),
        // A pool connection opened after the first one was refused: the
        // password was changed (or the user dropped or locked) since.
        Refusal::Credentials => Error::denied(
            kind,
            op,
            "the server refused the credentials of a new pool connection: were the password \
             or the user changed since connect?",
            Some(Box::new(e)),
        ),
        Refusal::NoDatabase | Refusal::Other => Error::backend(kind, op, e),
    }
}

/// The error for a failed `CREATE TABLE` of the lock table `table` in
/// `dialect` (the migrations folder), whose privileges live on `grant_on`
/// ("schema", "database").
pub(crate) fn create_table_error(
    kind: &'static str,
    dialect: &str,
    grant_on: &str,
    table: &str,
    refusal: Refusal,
    e: sqlx::Error,
) -> Error {
    let migration = format!("dlock-sql/migrations/{dialect}/0001_dlock_locks.sql");
    match refusal {
        Refusal::Privilege => Error::denied(
            kind,
            "create table",
            format!(
                "this user may not create table {table:?}: GRANT it CREATE on the {grant_on}, \
                 or create the table with {migration}"
            ),
            Some(Box::new(e)),
        ),
        _ => Error::Backend {
            backend: kind,
            operation: "create table",
            message: format!(
                "cannot create table {table:?}; does the {grant_on} exist? Or create it with \
                 {migration}"
            ),
            source: Some(Box::new(e)),
        },
    }
}

/// Removes anything that looks like a URL's userinfo from a driver message
/// (the driver's URL parser quotes the URL it rejects).
pub(crate) fn redact(msg: &str) -> String {
    match (msg.find("://"), msg.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***{}", &msg[..a], &msg[b..]),
        _ => msg.to_string(),
    }
}
