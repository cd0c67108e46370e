//! Options shared by the SQL adapters, read from URL query parameters.

use dlock_core::url_options::{check_timeout, QueryOptions};
use dlock_core::{Error, Result};
use std::time::Duration;

/// The default table name.
pub const DEFAULT_TABLE: &str = "dlock_locks";

/// The longest timeout option accepted (`connect_timeout`,
/// `statement_timeout`, SQLite's `busy_timeout`): one hour (the same limit
/// in every adapter).
pub use dlock_core::url_options::MAX_TIMEOUT;

/// The URL options every SQL adapter understands.
pub const COMMON_OPTIONS: &[&str] = &[
    "table",
    "create_table",
    "pool_size",
    "connect_timeout",
    "statement_timeout",
];

/// The `acquire_timeout` given to every pool the adapters build: longer than
/// any statement can take, so it never fires first.
///
/// Every statement, pool checkout included, runs inside
/// [`dlock_core::with_deadline`] (`statement_timeout`), which tells a
/// process that was stopped (SIGSTOP, a VM pause) from a coordinator that did
/// not answer. sqlx's own acquire timer cannot: after a pause it fires at
/// once and fails an operation whose connection was on its way.
pub(crate) const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Options every SQL adapter understands (URL query parameters of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlOptions {
    /// Table holding the locks (`table=`). Validated as an identifier.
    pub table: String,
    /// Create the table when missing (`create_table=true|false`, default true).
    pub create_table: bool,
    /// Maximum pool connections (`pool_size=`).
    pub pool_size: u32,
    /// Deadline for the first connection (`connect_timeout=`, e.g. `5s`; at
    /// most [`MAX_TIMEOUT`]). A reconnect later happens inside a statement and
    /// counts against `statement_timeout`.
    pub connect_timeout: Duration,
    /// Deadline for every statement (`statement_timeout=`, e.g. `5s`; at most
    /// [`MAX_TIMEOUT`]).
    pub statement_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            table: DEFAULT_TABLE.to_string(),
            create_table: true,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

impl SqlOptions {
    /// Takes the [`COMMON_OPTIONS`] out of `q`, leaving the rest to the
    /// adapter. `allow_schema` permits `schema.table`.
    pub(crate) fn take_from(q: &mut QueryOptions, allow_schema: bool) -> Result<Self> {
        let mut opts = SqlOptions::default();
        if let Some(t) = q.take("table") {
            opts.table = t;
        }
        if let Some(b) = q.bool("create_table")? {
            opts.create_table = b;
        }
        if let Some(v) = q.take("pool_size") {
            opts.pool_size = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::InvalidConfig(format!("pool_size must be a whole number >= 1, got {v:?}"))
            })?;
        }
        if let Some(d) = q.duration("connect_timeout")? {
            opts.connect_timeout = d;
        }
        if let Some(d) = q.duration("statement_timeout")? {
            opts.statement_timeout = d;
        }
        validate_table(&opts.table, allow_schema)?;
        Ok(opts)
    }

    /// `InvalidConfig` unless both timeouts are in `(0, MAX_TIMEOUT]`: the
    /// fields are public, so options built in code (`from_pool`) are checked
    /// too.
    pub fn check_timeouts(&self) -> Result<()> {
        check_timeout("connect_timeout", self.connect_timeout)?;
        check_timeout("statement_timeout", self.statement_timeout)
    }
}

/// Checks a table name: an identifier of letters, digits and `_`, not
/// starting with a digit, at most 63 bytes; `schema.table` when allowed.
pub fn validate_table(table: &str, allow_schema: bool) -> Result<()> {
    let parts: Vec<&str> = table.split('.').collect();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    let shape_ok = match parts.len() {
        1 => true,
        2 => allow_schema,
        _ => false,
    };
    if !shape_ok || !parts.iter().all(|p| ok_part(p)) {
        return Err(Error::InvalidConfig(format!(
            "table name {table:?} is not a plain identifier (letters, digits, _; not starting with a digit; at most 63 bytes{})",
            if allow_schema { "; optionally schema-qualified as schema.table" } else { "" }
        )));
    }
    Ok(())
}

/// Quotes a validated table name with `q` (`"` or `` ` ``), part by part.
pub fn quote_table(table: &str, q: char) -> String {
    table
        .split('.')
        .map(|p| format!("{q}{p}{q}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The columns every dialect's table must have.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "name",
    "owner",
    "acquisition_id",
    "token",
    "locked_at",
    "lock_until",
];

/// Error for a table that exists with missing columns.
pub fn missing_columns_error(table: &str, present: &[String]) -> Option<Error> {
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .filter(|c| !present.iter().any(|p| p.eq_ignore_ascii_case(c)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(Error::InvalidConfig(format!(
        "table {table:?} exists but lacks column(s) {}: it was created by an older dlock or another tool; \
         migrate it with the SQL in dlock-sql/migrations or choose another table with ?table=",
        missing.join(", ")
    )))
}

/// What every SQL dialect declares: the database's clock decides in the
/// acquiring statement, to the microsecond; dialects adjust the rest.
pub(crate) fn sql_capabilities(
    expiry_slack: Duration,
    poll_interval: Duration,
) -> dlock_core::Capabilities {
    let mut c = dlock_core::Capabilities::new();
    // Below this the local safety margin (1% + 2 ms) and a round trip eat the lease.
    c.min_lease = Duration::from_millis(50);
    c.max_lease = Some(Duration::from_secs(100 * 365 * 86_400));
    c.lease_granularity = Duration::from_micros(1);
    c.expiry_slack = expiry_slack;
    c.at_least_slack = expiry_slack;
    c.release_notifies_waiters = false;
    c.at_least_survives_exit = true;
    c.networked = true;
    c.poll_interval = poll_interval;
    c.list = true;
    c
}

/// A token column's value as a fencing token; a negative one is a corrupt table.
pub(crate) fn token_of(backend: &'static str, v: i64) -> Result<dlock_core::FencingToken> {
    u64::try_from(v).map(dlock_core::FencingToken).map_err(|_| {
        Error::backend_msg(
            backend,
            "acquire",
            format!("negative token {v} in the lock table"),
        )
    })
}

/// A name read back from the table, validated like any other.
pub(crate) fn stored_name(backend: &'static str, name: String) -> Result<dlock_core::LockName> {
    dlock_core::LockName::new(name).map_err(|e| {
        Error::backend_msg(
            backend,
            "list",
            format!("the lock table holds an invalid name: {e}"),
        )
    })
}

/// Microseconds since the Unix epoch (a database time column) as a `SystemTime`.
pub(crate) fn system_time(us: Option<i64>) -> Option<std::time::SystemTime> {
    us.and_then(|us| u64::try_from(us).ok())
        .map(|u| std::time::UNIX_EPOCH + Duration::from_micros(u))
}

/// Microseconds of a duration as i64, or Unsupported.
pub fn micros(backend: &'static str, d: Duration) -> Result<i64> {
    i64::try_from(d.as_micros())
        .map_err(|_| Error::unsupported(backend, format!("a lease of {d:?} is too long")))
}

/// A network database URL split for a driver: dlock's own options taken out.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct NetUrl {
    /// The URL handed to the driver (may contain a password: never print it).
    pub driver_url: String,
    /// `host:port/database`, safe to show in errors.
    pub target: String,
    /// dlock's options.
    pub opts: SqlOptions,
    /// `user=` from the query, if given.
    pub user: Option<String>,
    /// `password=` from the query, if given.
    pub password: Option<secrecy::SecretString>,
    /// `tls_roots=` (default webpki).
    pub tls_roots: dlock_core::TlsRoots,
    /// The options kept for the driver (also in `driver_url`).
    pub driver_options: Vec<(String, String)>,
    /// The adapter's own extra options (`own_keys`), in order.
    pub extra: Vec<(String, String)>,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl std::fmt::Debug for NetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetUrl")
            .field("target", &self.target)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Splits `url` (one of `schemes`) into the driver's URL (scheme replaced by
/// `driver_scheme`, only the `driver_keys` query options kept) and dlock's
/// options (the common ones plus the adapter's `own_keys`). Unknown options
/// are an error listing the known ones.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn split_net_url(
    kind: &'static str,
    url: &str,
    schemes: &[&str],
    driver_scheme: &str,
    default_port: u16,
    allow_schema: bool,
    own_keys: &[&str],
    driver_keys: &[&str],
) -> Result<NetUrl> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        Error::InvalidConfig(format!(
            "a {kind} URL looks like {}://user:password@host:port/database, got something without \"://\"",
            schemes[0]
        ))
    })?;
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(Error::InvalidConfig(format!(
            "URL scheme {scheme:?} is not one of {} for the {kind} backend",
            schemes.join(", ")
        )));
    }
    let mut parsed = url::Url::parse(&format!("{driver_scheme}://{rest}")).map_err(|e| {
        // The url crate's message never contains the input.
        Error::InvalidConfig(format!("{kind} URL does not parse: {e}"))
    })?;
    let mut q = QueryOptions::parse(kind, parsed.query().unwrap_or(""));
    let opts = SqlOptions::take_from(&mut q, allow_schema)?;
    let user = q.take("user");
    let password = q.secret("password");
    let tls_roots = q
        .take(dlock_core::TlsRoots::URL_OPTION)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or_default();
    let own = q.take_all(own_keys);
    let kept = q.take_all(driver_keys);
    let mut known = COMMON_OPTIONS.to_vec();
    known.extend_from_slice(&["user", "password", dlock_core::TlsRoots::URL_OPTION]);
    known.extend_from_slice(own_keys);
    known.extend_from_slice(driver_keys);
    q.finish(&known)?;
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&kept);
    }
    let host = parsed.host_str().unwrap_or("localhost");
    let port = parsed.port().unwrap_or(default_port);
    let db = parsed.path().trim_start_matches('/');
    let target = format!("{host}:{port}/{db}");
    Ok(NetUrl {
        driver_url: parsed.to_string(),
        target,
        opts,
        user,
        password,
        tls_roots,
        driver_options: kept,
        extra: own,
    })
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl NetUrl {
    /// Applies `options` over what the URL said. SQL databases have no tokens.
    pub fn apply(
        &mut self,
        kind: &'static str,
        options: &dlock_core::ConnectOptions,
    ) -> Result<()> {
        options.refuse(
            kind,
            &["token"],
            "SQL databases authenticate with a user and password",
        )?;
        options.apply_credentials(&mut self.user, &mut self.password);
        if let Some(r) = options.tls_roots {
            self.tls_roots = r;
        }
        if self.tls_roots == dlock_core::TlsRoots::CaFileOnly {
            return Err(Error::unsupported(
                kind,
                "tls_roots=ca_file_only: sqlx always trusts its built-in roots besides the CA \
                 file; use tls_roots=webpki with the CA file, and sslmode=verify-full / \
                 ssl-mode=verify_identity",
            ));
        }
        Ok(())
    }

    /// The value of the first driver option among `keys`.
    pub fn driver_value(&self, keys: &[&str]) -> Option<&str> {
        self.driver_options
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(validate_table("dlock_locks", false).is_ok());
        assert!(validate_table("s.t", true).is_ok());
        for bad in [
            "s.t",
            "1x",
            "a-b",
            "x\"; drop table y; --",
            "",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(validate_table(bad, false).is_err(), "{bad}");
        }
        assert!(validate_table("a.b.c", true).is_err());
    }

    fn take(query: &str) -> Result<(SqlOptions, QueryOptions)> {
        let mut q = QueryOptions::parse("sqlite", query);
        SqlOptions::take_from(&mut q, false).map(|o| (o, q))
    }

    #[test]
    fn options() {
        let (o, mut rest) =
            take("table=t1&create_table=false&mode=rwc&connect_timeout=2s").unwrap();
        assert_eq!(o.table, "t1");
        assert!(!o.create_table);
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(rest.take("mode").as_deref(), Some("rwc"));
        assert!(take("pool_size=0").is_err());
        assert!(take("connect_timeout=soon").is_err());
        assert!(take("table=a;b").is_err());
    }
}
